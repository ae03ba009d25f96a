"""Run each case in a child process with a time limit, and measure its wall time and peak memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from .cases import Case
from .prepare import Prepared
from .provenance import current_provenance, provenance_key
from .results import CaseResult, case_result

DEFAULT_CASE_TIMEOUT = 1200.0  # seconds


def run_cases(cases: list[Case], work: Path, timeout: float = DEFAULT_CASE_TIMEOUT,
              on_result: Callable[[CaseResult], None] | None = None, resume: bool = False,
              keep_other_versions: bool = False) -> list[CaseResult]:
    """Every case, model by model (each model's sources are prepared once). With `resume`, a case that
    finished in an earlier run over the same scratch folder keeps its figures (a full run takes hours), but
    only when the same code and library versions measured it (provenance.py); a case measured by other
    versions runs again, unless `keep_other_versions` (then the tables say "mixed versions").

    The cases share a cache in `work/cache` (user_cache.py), as runs of one user on the same models would,
    unless SAFECONVERT_CACHE_DIR says otherwise (`off`: every case starts cold)."""
    from ..user_cache import ENV_VAR

    env = {**os.environ, ENV_VAR: os.environ.get(ENV_VAR, str(work / "cache"))}
    results = []
    for model, model_cases in _by_model(cases):
        prepared = None
        for case in model_cases:
            folder = work / model / case.case_id
            now = current_provenance()
            result = _finished(folder, None if keep_other_versions else now) if resume else None
            if result is None:
                prepared = prepared or prepare(model, work)
                result = run_case(case, prepared, folder, timeout, env=env)
                result.provenance = now
                (folder / MEASURED).write_text(json.dumps(asdict(result)))
            results.append(result)
            if on_result:
                on_result(result)
    return results


MEASURED = "measured.json"  # a finished case's figures, for --resume


def finished_cases(cases: list[Case], work: Path) -> tuple[list[CaseResult], list[Case]]:
    """The figures of the cases an earlier run recorded in `work` (errors and time-outs included), and the
    cases it has not reached (yet)."""
    results, missing = [], []
    for case in cases:
        result = _measured(work / case.model / case.case_id)
        if result is None:
            missing.append(case)
        else:
            results.append(result)
    return results, missing


def recorded_results(path: Path) -> tuple[list[CaseResult], list[str]]:
    """The cases of an earlier run's results.json (and the cases it had not run), for tables recomputed with
    today's definitions: a figure an old record cannot give is unknown, not guessed."""
    document = json.loads(Path(path).read_text())
    return [CaseResult.from_dict(case) for case in document["cases"]], list(document.get("not_run") or [])


def _finished(folder: Path, provenance: dict | None) -> CaseResult | None:
    """The figures of a case an earlier run finished (not one that timed out or crashed: that is retried),
    measured by the code and libraries of `provenance` (None: by any)."""
    result = _measured(folder)
    if result is None or result.status not in ("ok", "not applicable"):
        return None
    if provenance is not None and provenance_key(result.provenance) != provenance_key(provenance):
        return None
    return result


def _measured(folder: Path) -> CaseResult | None:
    """The figures an earlier run recorded for a case, whatever its outcome."""
    path = folder / MEASURED
    return CaseResult.from_dict(json.loads(path.read_text())) if path.is_file() else None


def prepare(model: str, work: Path) -> Prepared:
    """The model's sources, built in a child process (see prepare.main: it keeps the runner small)."""
    out = work / f"{model}-prepared.json"
    done = subprocess.run([sys.executable, "-m", "safeconvert.evaluation.prepare", model, str(work), str(out)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"preparing {model} failed: {_last_line_of(done.stderr)}")
    return Prepared.from_dict(json.loads(out.read_text()))


def _by_model(cases: list[Case]) -> Iterator[tuple[str, list[Case]]]:
    models = list(dict.fromkeys(case.model for case in cases))
    for model in models:
        yield model, [case for case in cases if case.model == model]


def run_case(case: Case, prepared: Prepared, folder: Path, timeout: float, env: dict[str, str] | None = None) -> CaseResult:
    """One case in its own process; a crash or a time-out is a result too, not an exception."""
    folder.mkdir(parents=True, exist_ok=True)
    spec, result_path, log = folder / "case.json", folder / "result.json", folder / "stderr.log"
    fields = {k: v for k, v in case.to_dict().items() if k != "case_id"}
    spec.write_text(json.dumps({"case": fields, "prepared": prepared.to_dict(), "folder": str(folder / "run")}))
    result_path.unlink(missing_ok=True)
    started = time.perf_counter()
    with open(log, "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "safeconvert.evaluation.child", str(spec), str(result_path)],
                                 stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, env=env)
        status, peak_mib = _wait(child, timeout)
    seconds = time.perf_counter() - started
    if status == "timeout" or not result_path.exists():
        why = f"timed out after {timeout:.0f} s" if status == "timeout" else f"crashed: {_last_line(log)}"
        raw = {"case": case.to_dict(), "error": why, "status": "timeout" if status == "timeout" else "error",
               "expected_category": case.expected_category}
    else:
        raw = json.loads(result_path.read_text())
    return case_result(raw, seconds, peak_mib)


def _wait(child: subprocess.Popen, timeout: float) -> tuple[str, float]:
    """Reap the child with wait4 (its rusage holds the peak RSS of it and its descendants); kill it at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        pid, _, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = 0
            return "exited", usage.ru_maxrss / 1024
        if time.monotonic() > deadline:
            os.killpg(child.pid, signal.SIGKILL)
            _, _, usage = os.wait4(child.pid, 0)
            child.returncode = -9
            return "timeout", usage.ru_maxrss / 1024
        time.sleep(0.2)


def _last_line(log: Path) -> str:
    return _last_line_of(log.read_text(errors="replace"))


def _last_line_of(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
