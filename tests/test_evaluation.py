"""The evaluation: its bookkeeping (pure) and its fast subset, run for real on the small seeded CNN."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from safeconvert.evaluation.cases import Case, evaluation_cases
from safeconvert.evaluation.results import CaseResult, case_result, totals
from safeconvert.evaluation.tables import markdown, routes_markdown, totals_sentence

ROOT = Path(__file__).resolve().parent.parent


def _raw(case: Case, before: dict | None, after: dict, findings=(), repairs=(), holdout_verified=True) -> dict:
    return {
        "case": case.to_dict(), "expected_category": case.expected_category,
        "report": {"metrics_before_repair": before, "metrics": after, "verdict": {"verified": after["top1_mismatches"] == 0},
                   "findings": [{"category": c} for c in findings],
                   "repairs": [{"category": c, "status": "applied"} for c in repairs], "timings": {"total": 1.0}},
        "holdout_after": {"metrics": {"top1_mismatches": 0 if holdout_verified else 2, "images": 10},
                          "verdict": {"verified": holdout_verified}},
    }


def _metrics(mismatches: int) -> dict:
    return {"images": 32, "top1_mismatches": mismatches, "max_abs_diff": 0.5 if mismatches else 1e-7}


def test_case_ids_are_unique_and_name_the_fault():
    cases = evaluation_cases(["mobilenet_v2", "resnet101"])
    ids = [c.case_id for c in cases]
    assert len(ids) == len(set(ids))
    assert "mobilenet_v2__keras-to-onnx__injected__dilation__seed1" in ids
    assert {c.expected_category for c in cases if c.fault_kind} == {"WB", "LH", "CG", "TSS", "ID", "PP"}
    assert not any(c.source == "pt2" for c in cases if c.model == "resnet101")


def test_totals_count_detected_repaired_held_out_and_false_repairs():
    clean = Case("m", "keras", "onnx", "clean")
    results = [
        case_result(_raw(clean, None, _metrics(0)), 1, 100),
        case_result(_raw(clean, None, _metrics(0), repairs=["WB"]), 1, 100),  # a repair on a clean conversion
        case_result(_raw(Case("m", "keras", "onnx", "injected", "stride"), _metrics(5), _metrics(0), ["LH"], ["LH"]), 1, 1),
        case_result(_raw(Case("m", "keras", "onnx", "injected", "hw_swap"), _metrics(3), _metrics(0), ["WB"], ["WB"],
                         holdout_verified=False), 1, 1),
        case_result(_raw(Case("m", "keras", "onnx", "injected", "dilation"), _metrics(4), _metrics(4)), 1, 1),  # missed
        case_result({"case": Case("m", "keras", "tflite", "clean").to_dict(), "error": "boom", "status": "timeout"}, 9, 1),
    ]
    summary = totals(results)
    assert (summary.faulty_cases, summary.faults_detected, summary.faults_repaired) == (3, 2, 2)
    assert summary.cases_fully_repaired == 1 and summary.false_repairs == 1 and summary.errors == 1
    assert (summary.localized_right, summary.injected_faulty) == (1, 3)
    assert "faults repaired / faults detected: 2/2" in totals_sentence(summary)
    table = markdown(results, summary, "today")
    assert "| m | keras -> onnx | injected | hw_swap | 3/32 (9%) | WB (first is WB, planted ID)" in table
    assert "timeout: boom" in table


@pytest.mark.slow
def test_fast_subset_runs_and_repairs_every_fault(tmp_path: Path):
    """The evaluation's fast subset on the small CNN: every fault found, repaired, held out, nothing false."""
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "evaluate.py"), "--quick", "--models", "small",
                           "--out", str(out), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads((out / "results.json").read_text())
    summary = document["totals"]
    assert summary["errors"] == 0 and summary["faulty_cases"] >= 7
    assert summary["faults_detected"] == summary["faulty_cases"]
    assert summary["faults_repaired"] == summary["faults_detected"] == summary["cases_fully_repaired"]
    assert summary["localized_right"] == summary["injected_faulty"] == 6
    assert summary["false_repairs"] == 0
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "faults repaired / faults detected" in (out / "results.md").read_text()
    assert "faults repaired / faults detected" in done.stdout


def test_resume_keeps_finished_cases_and_retries_failed_ones(tmp_path: Path, monkeypatch):
    """--resume reuses a finished case's figures without preparing the model again; a crashed case runs again."""
    from dataclasses import asdict

    from safeconvert.evaluation import runner

    done_case, crashed_case = Case("m", "keras", "onnx", "clean"), Case("m", "keras", "tflite", "clean")
    finished = case_result(_raw(done_case, None, _metrics(0)), 12.0, 300)
    crashed = case_result({"case": crashed_case.to_dict(), "error": "boom", "status": "error"}, 3, 1)
    for case, result in ((done_case, finished), (crashed_case, crashed)):
        folder = tmp_path / "m" / case.case_id
        folder.mkdir(parents=True)
        (folder / runner.MEASURED).write_text(json.dumps(asdict(result)))
    ran = []
    monkeypatch.setattr(runner, "prepare", lambda model, work: f"prepared {model}")
    monkeypatch.setattr(runner, "run_case", lambda case, prepared, folder, timeout, env=None: ran.append((case, prepared)) or finished)
    results = runner.run_cases([done_case, crashed_case], tmp_path, resume=True)
    assert results[0] == finished and ran == [(crashed_case, "prepared m")]


def test_cases_share_a_cache_in_the_scratch_folder_unless_told_otherwise(tmp_path: Path, monkeypatch):
    from safeconvert.evaluation import runner
    from safeconvert.user_cache import ENV_VAR

    caches = []
    finished = case_result(_raw(Case("m", "keras", "onnx", "clean"), None, _metrics(0)), 1.0, 1)
    monkeypatch.setattr(runner, "prepare", lambda model, work: "prepared")

    def run_case(case, prepared, folder, timeout, env=None):
        folder.mkdir(parents=True, exist_ok=True)
        caches.append(env[ENV_VAR])
        return finished

    monkeypatch.setattr(runner, "run_case", run_case)
    monkeypatch.delenv(ENV_VAR)
    runner.run_cases([Case("m", "keras", "onnx", "clean")], tmp_path)
    monkeypatch.setenv(ENV_VAR, "off")
    runner.run_cases([Case("m", "keras", "onnx", "clean")], tmp_path)
    assert caches == [str(tmp_path / "cache"), "off"]


def test_routes_table_has_one_row_per_clean_route_and_model():
    raw = _raw(Case("m", "keras", "onnx", "clean"), None, _metrics(0))
    raw["report"]["route"] = [{"converter": "tf2onnx"}]
    faulty = _raw(Case("m", "onnx", "tflite", "clean"), _metrics(3), _metrics(0), ["TOOL"], ["TOOL"])
    faulty["report"]["route"] = [{"converter": "onnx2tf-tflite"}]
    injected = _raw(Case("m", "keras", "onnx", "injected", "stride"), _metrics(5), _metrics(0), ["LH"], ["LH"])
    table = routes_markdown([case_result(r, 30, 1) for r in (raw, faulty, injected)], "today")
    assert "| keras -> onnx | m | tf2onnx | 32/32 | 32/32 | 10/10 | 1e-07 | 30 |" in table
    assert "| onnx -> tflite | m | onnx2tf-tflite | 29/32 | 32/32 | 10/10 |" in table
    assert "stride" not in table and table.count("\n| ") == 3  # header + two clean routes


def test_tables_only_lists_what_an_unfinished_run_has_not_run(tmp_path: Path):
    """--tables-only: recorded cases (errors too) make the table, the others are named as not run."""
    from dataclasses import asdict

    from safeconvert.evaluation import runner
    from safeconvert.evaluation.tables import write_outputs

    done, crashed, pending = (Case("m", "keras", "onnx", "clean"), Case("m", "keras", "tflite", "clean"),
                              Case("m", "keras", "onnx", "injected", "stride"))
    for case, result in ((done, case_result(_raw(done, None, _metrics(0)), 12.0, 300)),
                         (crashed, case_result({"case": crashed.to_dict(), "error": "boom", "status": "error"}, 3, 1))):
        folder = tmp_path / "m" / case.case_id
        folder.mkdir(parents=True)
        (folder / runner.MEASURED).write_text(json.dumps(asdict(result)))
    results, missing = runner.finished_cases([done, crashed, pending], tmp_path)
    assert [r.case_id for r in results] == [done.case_id, crashed.case_id] and missing == [pending]
    assert results[1].status == "error"
    write_outputs(results, tmp_path / "out", quick=False, not_run=[c.case_id for c in missing])
    text = (tmp_path / "out" / "results.md").read_text()
    assert "Not run yet (1 of 3 cases" in text and f"`{pending.case_id}`" in text
    assert json.loads((tmp_path / "out" / "results.json").read_text())["not_run"] == [pending.case_id]
