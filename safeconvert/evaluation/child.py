"""One case, in its own process (so its peak memory is its own): run safeconvert, then check on the hold-out.

    python -m safeconvert.evaluation.child CASE.json RESULT.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .cases import CLEAN_ROUTE_OPTIONS, Case
from .prepare import Prepared

TARGET_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "torchscript": ".pt", "pt2": ".pt2", "savedmodel": ""}
QUANTISATION_OPTIONS = {
    "tflite-dynamic-range": {"tflite_optimizations": ["DEFAULT"]},
    "tflite-float16": {"tflite_optimizations": ["DEFAULT"], "tflite_supported_types": ["float16"]},
    "tflite-int8": {"tflite_optimizations": ["DEFAULT"], "tflite_int8": True},
}
INPUT_LEVEL_CATEGORIES = ("PP", "ID", "TOOL")  # faults of the input or the converter: no layer to name


def run(case: Case, prepared: Prepared, folder: Path) -> dict:
    """The case's safeconvert report, the injected fault, and the hold-out checks before and after."""
    from ..errors import SafeConvertError, one_line
    from ..faults import FaultNotApplicableError

    folder.mkdir(parents=True, exist_ok=True)
    output = folder / f"out{TARGET_SUFFIX[case.target]}"
    result: dict = {"case": case.to_dict(), "expected_category": case.expected_category}
    missing = _missing_source(case, prepared)
    if missing:
        return {**result, "error": missing, "status": "not applicable"}
    try:
        with _first_localization() as emitted:
            report, faulty, fault = _safeconvert(case, prepared, folder, output)
    except FaultNotApplicableError as exc:
        return {**result, "error": one_line(exc), "status": "not applicable"}
    except SafeConvertError as exc:
        return {**result, "error": one_line(exc), "exit_code": exc.exit_code}
    result.update(report=report.to_dict(), fault=fault, findings_emitted=_emitted(emitted, fault))
    if faulty is not None:
        result["holdout_before"] = _holdout(case, prepared, faulty)
    if output.exists():
        result["holdout_after"] = _holdout(case, prepared, output)
        if case.keep_quantisation:
            result["quantisation"] = _quantisation(case, prepared, output, report, folder)
    return result


@contextmanager
def _first_localization() -> Iterator[list[dict]]:
    """Collects the findings of the run's first localization as it emitted them. The repair loop puts the
    finding whose repair was kept first in the report (repair/loop._applied_first), so the report's order
    says which repair worked; localization is scored on the order it gave before any repair ran."""
    from ..repair import loop

    emitted: list[dict] = []
    localize, calls = loop.localize, []

    def recording(*args, **kwargs):
        found = localize(*args, **kwargs)
        if not calls:
            emitted.extend(f.to_dict() for f in found.findings)
        calls.append(True)
        return found

    loop.localize = recording
    try:
        yield emitted
    finally:
        loop.localize = localize


def _emitted(emitted: list[dict], fault: dict | None) -> list[dict]:
    """Category of each finding in emitted order, and whether it names the planted layer (None when the
    planted fault has no layer: input-level faults and the converter's own options)."""
    return [{"category": f["category"], "at_planted_layer": at_planted_layer(f, fault)} for f in emitted]


def at_planted_layer(finding: dict, fault: dict | None) -> bool | None:
    """Whether a finding names the layer the fault was planted in (its node or tensor name appears among the
    finding's layers, evidence or repair arguments); None when the fault has no layer to name."""
    if not fault or fault.get("category") in INPUT_LEVEL_CATEGORIES:
        return None
    sites = [part for part in str(fault.get("target_node") or "").split(";") if part]
    if not sites:
        return None
    named = json.dumps({k: finding.get(k) for k in ("source_layer", "target_layer", "evidence", "repair")}, default=str)
    return any(site in named for site in sites)


def _quantisation(case: Case, prepared: Prepared, output: Path, report, folder: Path) -> dict:
    """Whether a --keep-quantisation output is still quantised (its stored quantised tensors, beside those of
    the quantised conversion as made) and its size beside the same route's float conversion."""
    from ..formats import Format
    from ..localize.tool import quantised_tensors

    fmt = Format(case.target)
    edited = any(r.get("status") == "applied" for r in report.to_dict().get("repairs", []))
    converted = _as_converted(case, prepared, folder) if edited else output
    float_model = prepared.sources.get(case.target)
    return {"quantised_tensors": quantised_tensors(output, fmt), "output_bytes": output.stat().st_size,
            "float_bytes": Path(float_model).stat().st_size if float_model else None,
            "converted_quantised_tensors": quantised_tensors(converted, fmt) if converted else None,
            "converted_bytes": converted.stat().st_size if converted else None}


def _as_converted(case: Case, prepared: Prepared, folder: Path) -> Path | None:
    """The quantised conversion as the converter made it, before any repair (written unverified, for counting)."""
    from ..errors import SafeConvertError
    from ..pipeline import ConvertRequest, run_convert
    from ..wrappers.base import ConversionOptions

    out = folder / f"as-converted{TARGET_SUFFIX[case.target]}"
    request = ConvertRequest(Path(prepared.sources[case.source]), out, target_format=case.target,
                             calib=prepared.repair_photos, preprocess=prepared.preset,
                             options=ConversionOptions(**QUANTISATION_OPTIONS.get(case.scenario, {})), force=True,
                             allow_unverified=True, repair=False)
    try:
        run_convert(request)
    except SafeConvertError:
        return None
    return out if out.exists() else None


def _missing_source(case: Case, prepared: Prepared) -> str | None:
    """Why the model this case starts from does not exist (its clean conversion failed), or None."""
    needed = {case.source, "onnx" if case.target == "torchscript" and case.fault_kind else case.source}
    if case.scenario == "injected" and case.target != "torchscript":
        needed.add(case.target)
    for key in sorted(needed):
        if key not in prepared.sources:
            return f"no {key} model to start from: {prepared.problems.get(key, 'not made for this model')}"
    return None


def _safeconvert(case: Case, prepared: Prepared, folder: Path, output: Path):
    if case.scenario == "injected":
        faulty, fault = _plant(case, prepared, folder)
        return _repair(case, prepared, faulty, output), faulty, fault
    return _convert(case, prepared, output), None, None


def _convert(case: Case, prepared: Prepared, output: Path):
    from ..pipeline import ConvertRequest, run_convert
    from ..wrappers.base import ConversionOptions

    chosen = {**QUANTISATION_OPTIONS.get(case.scenario, {}), **CLEAN_ROUTE_OPTIONS.get(case.options or "", {})}
    options = ConversionOptions(**chosen, keep_quantisation=case.keep_quantisation)
    request = ConvertRequest(Path(prepared.sources[case.source]), output, target_format=case.target,
                             calib=prepared.repair_photos, preprocess=prepared.preset, options=options, force=True,
                             trust_model_code=case.target == "torchscript")
    return run_convert(request).report


def _plant(case: Case, prepared: Prepared, folder: Path) -> tuple[Path, dict]:
    """The clean target of this route with one seeded fault planted."""
    from dataclasses import asdict

    from ..faults import inject, inject_torch

    faulty = folder / f"faulty{TARGET_SUFFIX[case.target]}"
    if case.target == "torchscript":
        fault = inject_torch(Path(prepared.sources["onnx"]), faulty, case.fault_kind, seed=case.seed)
    else:
        fault = inject(Path(prepared.sources[case.target]), faulty, case.fault_kind, seed=case.seed)
    described = asdict(fault)
    described["category"] = fault.category.value
    return faulty, described


def _repair(case: Case, prepared: Prepared, faulty: Path, output: Path):
    from ..pipeline import RepairRequest, run_repair

    request = RepairRequest(Path(prepared.sources[case.source]), faulty, calib=prepared.repair_photos,
                            preprocess=prepared.preset, trust_model_code=case.target == "torchscript",
                            output=output, force=True)
    return run_repair(request).report


def _holdout(case: Case, prepared: Prepared, target: Path) -> dict:
    """Validation of `target` against the case's own source on the photos repair never saw, judged as the
    run was (labels alone for a wanted quantisation)."""
    from ..errors import SafeConvertError, one_line
    from ..pipeline import CheckRequest, run_check
    from ..validators.verdict import Thresholds

    request = CheckRequest(Path(prepared.sources[case.source]), target, calib=prepared.holdout_photos,
                           preprocess=prepared.preset, thresholds=Thresholds(labels_only=case.keep_quantisation),
                           trust_model_code=case.target == "torchscript")
    try:
        report = run_check(request).report
    except SafeConvertError as exc:
        return {"error": one_line(exc)}
    return {"metrics": report.metrics, "verdict": report.verdict}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    case, prepared = Case(**spec["case"]), Prepared.from_dict(spec["prepared"])
    result = run(case, prepared, Path(spec["folder"]))
    Path(argv[1]).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
