"""The repair loop: localize -> repair -> validate, bounded, until verified.

Each repair is applied to a copy of the target (in the scratch directory) and kept only if validation
improves (fewer changed labels, or the same and a smaller output gap); otherwise it is rolled back. All
findings of one round are first tried together (the usual case: they are independent faults), then one
by one when that does not verify.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import SafeConvertError
from ..formats import Format
from ..localize.context import LocalizationInput
from ..localize.engine import Localization, localize
from ..localize.findings import Finding
from ..validators.validate import Validation
from .onnx_repair import NotApplicable, apply_to_onnx

MAX_ROUNDS = 3
# Repair what the static stages find before tracing activations in TVM (see localize.engine.localize).
STATIC_FIRST = True
TIME_BUDGET_SECONDS = 900.0


@dataclass
class RepairRecord:
    """One repair tried: what, how, and what it did to the agreement."""

    category: str
    finding: str
    action: str
    status: str  # applied | rolled back | not applicable
    detail: str = ""
    mismatches_before: int | None = None
    mismatches_after: int | None = None
    max_abs_diff_before: float | None = None
    max_abs_diff_after: float | None = None


@dataclass
class RepairResult:
    target: Path
    validation: Validation
    records: list[RepairRecord] = field(default_factory=list)
    localizations: list[Localization] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "records": [asdict(r) for r in self.records],
            "localizations": [loc.to_dict() for loc in self.localizations],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


@dataclass
class Candidate:
    """A repaired model file, plus the ONNX it was made from when the target is TorchScript."""

    target: Path
    onnx: Path | None
    edits: list[tuple[Finding, str]]  # each finding applied, with what was done


@dataclass
class RepairSession:
    """What the loop needs from its caller.

    validate: validation of a candidate target file against the source.
    make_input: LocalizationInput for a target file (and its ONNX intermediate, if any).
    reconvert: re-runs the route without numeric options (None when there is no route: `repair`).
    """

    target: Path
    target_format: Format
    onnx_intermediate: Path | None
    work: Path
    validate: Callable[[Path], Validation]
    make_input: Callable[[Path, Path | None, Validation], LocalizationInput]
    reconvert: Callable[[Path], Path] | None = None
    to_target: Callable[[Path, Path], None] | None = None  # ONNX -> target format (TorchScript targets)
    float_reference: Callable[[Path], Path] | None = None  # a float TFLite of the source, written into a folder
    quick_gap: Callable[[Path], float] | None = None  # output gap on a few images (sensitivity probes)
    requantise: Callable[[list[str], Path], Path] | None = None  # re-run int8 quantisation keeping layers float
    trace_first: bool = False  # trace activations in the first round (a report with a divergence plot)
    max_rounds: int = MAX_ROUNDS
    time_budget: float = TIME_BUDGET_SECONDS


def repair_until_verified(session: RepairSession, validation: Validation) -> RepairResult:
    """Localize, repair, validate; bounded by rounds and time. A round first localizes without tracing
    activations when the static stages find something to repair; when that repair does not help, the
    same target is localized again in full (its imported IR reused)."""
    started = time.perf_counter()
    result = RepairResult(session.target, validation)
    onnx_source = session.onnx_intermediate
    trace_always, reusable = session.trace_first or not STATIC_FIRST, None
    for round_index in range(session.max_rounds):
        if result.validation.verdict.verified or time.perf_counter() - started > session.time_budget:
            break
        loc_started = time.perf_counter()
        loc = localize(session.make_input(result.target, onnx_source, result.validation), ir_pair=reusable,
                       trace_always=trace_always)
        result.seconds["localize"] = result.seconds.get("localize", 0.0) + time.perf_counter() - loc_started
        _add_stage_seconds(result.seconds, loc.seconds)
        result.localizations.append(loc)
        if not loc.findings:
            break
        repair_started = time.perf_counter()
        improved, onnx_source = _repair_round(session, result, loc.findings, onnx_source, round_index)
        result.seconds["repair"] = result.seconds.get("repair", 0.0) + time.perf_counter() - repair_started
        if not loc.traced:
            _applied_first(loc, result.records)
        if not improved and loc.traced:
            break
        trace_always, reusable = not improved, (loc.ir_pair if not improved else None)
    result.seconds["total"] = time.perf_counter() - started
    return result


def _applied_first(loc: Localization, records: list[RepairRecord]) -> None:
    """Without traced activations nothing ranks the static findings but graph order; a repair that was
    validated and kept is the stronger evidence, so its finding leads."""
    applied = {r.finding for r in records if r.status == "applied"}
    loc.findings.sort(key=lambda f: f.summary not in applied)


def _add_stage_seconds(total: dict[str, float], stages: dict[str, float]) -> None:
    """Sum each localization stage over rounds; per-model IR figures ("side:step") are kept from the first."""
    for name, seconds in stages.items():
        key = f"localize:{name}"
        if ":" in name:
            total.setdefault(key, seconds)
        else:
            total[key] = total.get(key, 0.0) + seconds


def _repair_round(session: RepairSession, result: RepairResult, findings: list[Finding], onnx_source: Path | None,
                  round_index: int) -> tuple[bool, Path | None]:
    """Try all findings together, then one at a time; keep what improves agreement."""
    together = _build(session, findings, result.target, onnx_source, f"r{round_index}-all")
    if together is not None and len(findings) > 1:
        validation = _validated(session, together.target)
        if validation is not None and validation.verdict.verified:
            for finding, edit in together.edits:
                result.records.append(_record(finding, "applied", edit, result.validation, validation))
            result.target, result.validation = together.target, validation
            return True, together.onnx
    improved = False
    for index, finding in enumerate(findings):
        candidate = _build(session, [finding], result.target, onnx_source, f"r{round_index}-{index}")
        if candidate is None or not candidate.edits:
            result.records.append(_record(finding, "not applicable", _why_not(session, finding, result.target, onnx_source)))
            continue
        validation = _validated(session, candidate.target)
        if validation is None:
            result.records.append(_record(finding, "rolled back", candidate.edits[0][1] + " (the edited model does not run)"))
            continue
        if better(validation, result.validation):
            result.records.append(_record(finding, "applied", candidate.edits[0][1], result.validation, validation))
            result.target, result.validation, onnx_source = candidate.target, validation, candidate.onnx
            improved = True
        else:
            result.records.append(_record(finding, "rolled back", candidate.edits[0][1], result.validation, validation))
    return improved, onnx_source


def _validated(session: RepairSession, candidate: Path) -> Validation | None:
    """Validation of a candidate, or None when the edited model cannot be loaded or run."""
    try:
        return session.validate(candidate)
    except SafeConvertError:
        return None


def better(new: Validation, old: Validation) -> bool:
    """Fewer changed labels, or as many and a clearly smaller output gap (the worst output's, each on its
    own scale: a repair of a second head counts as much as one of the logits)."""
    a, b = new.metrics, old.metrics
    if a.top1_mismatches != b.top1_mismatches:
        return a.top1_mismatches < b.top1_mismatches
    return _worst_gap(a) < 0.9 * _worst_gap(b)


def _worst_gap(metrics) -> float:
    """The largest max |diff| / scale over the model's outputs (the first output's alone when not listed)."""
    return max((o.relative_max_diff for o in metrics.outputs), default=metrics.relative_max_diff)


def _build(session: RepairSession, findings: list[Finding], target: Path, onnx_source: Path | None,
           tag: str) -> Candidate | None:
    """Apply findings to a copy of the target; None when none of them applies."""
    try:
        if any(f.repair and f.repair.action == "rerun_converter" for f in findings):
            if session.reconvert is None:
                return None
            out = session.reconvert(session.work / f"repair-{tag}")
            tool = next(f for f in findings if f.repair and f.repair.action == "rerun_converter")
            return Candidate(out, None, [(tool, "re-ran the route without the options that change numerics")])
        quantisation = next((f for f in findings if f.repair and f.repair.action in ("keep_float", "dequantise")), None)
        if quantisation is not None:
            return _build_float_layers(session, quantisation, target, tag)
        return _build_onnx_edit(session, findings, target, onnx_source, tag)
    except (SafeConvertError, NotApplicable, OSError):
        return None


def _build_float_layers(session: RepairSession, finding: Finding, target: Path, tag: str) -> Candidate | None:
    """Quantised TFLite: keep the fewest layers float (wanted quantisation) or all of them (unwanted)."""
    from .mixed_precision import keep_fewest_float, restore_all_float

    if session.target_format is not Format.TFLITE or session.float_reference is None:
        return None
    reference = session.float_reference(session.work / f"float-{tag}")
    if finding.repair.action == "dequantise":
        path = restore_all_float(target, reference, session.work)
        return Candidate(path, None, [(finding, "restored every quantised layer to float32")]) if path else None
    search = keep_fewest_float(target, reference, session.work, session.validate, session.quick_gap, session.requantise)
    finding.evidence["float_layer_search"] = {"ranking": search.ranking, "tried": [vars(t) for t in search.tried],
                                              "summary": search.describe(), "hopeless": search.hopeless,
                                              "quantisation_undone": search.quantisation_undone}
    return Candidate(search.path, None, [(finding, search.describe())]) if search.path else None


def _build_onnx_edit(session: RepairSession, findings: list[Finding], target: Path, onnx_source: Path | None,
                     tag: str) -> Candidate | None:
    """Edit the target in its own format: ONNX or TFLite directly, TorchScript through its ONNX form."""
    editable = target if session.target_format in (Format.ONNX, Format.TFLITE) else onnx_source
    if editable is None:
        return None
    editor = _TFLITE if session.target_format is Format.TFLITE else _ONNX
    model = editor.load(editable)
    edits = []
    for finding in findings:
        trial = copy.deepcopy(model)
        try:
            edits.append((finding, editor.apply(finding, trial)))
        except Exception:  # not applicable, or an edit the checker rejects: leave this finding out
            continue
        model = trial
    if not edits:
        return None
    edited = session.work / f"repair-{tag}{editable.suffix}"
    editor.save(model, edited)
    if session.target_format in (Format.ONNX, Format.TFLITE):
        return Candidate(edited, None, edits)
    out = session.work / f"repair-{tag}{session.target_format.suffix}"
    session.to_target(edited, out)
    return Candidate(out, edited, edits)


@dataclass(frozen=True)
class _Editor:
    """How to load, edit and save one editable format."""

    load: Callable
    apply: Callable
    save: Callable


def _onnx_load(path: Path):
    import onnx

    return onnx.load(str(path))


def _onnx_save(model, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


def _tflite_save(model, path: Path) -> None:
    from . import tflite_edit

    tflite_edit.remove_dead_ops(model)
    path.write_bytes(tflite_edit.model_bytes(model))


def _tflite_load(path: Path):
    from . import tflite_edit

    return tflite_edit.load_model(path)


def _tflite_apply(finding: Finding, model) -> str:
    from .tflite_repair import apply_to_tflite

    return apply_to_tflite(finding, model)


_ONNX = _Editor(_onnx_load, apply_to_onnx, _onnx_save)
_TFLITE = _Editor(_tflite_load, _tflite_apply, _tflite_save)


def _why_not(session: RepairSession, finding: Finding, target: Path, onnx_source: Path | None) -> str:
    if finding.repair is None:
        return finding.evidence.get("no_repair_because", "no repair proposed")
    if finding.repair.action == "keep_float" and "float_layer_search" in finding.evidence:
        search = finding.evidence["float_layer_search"]
        tried = search["tried"]
        if search.get("hopeless") or search.get("quantisation_undone"):
            return search["summary"]
        return f"no set of float layers verified ({len(tried)} sets tried, up to all {max((t['layers'] for t in tried), default=0)})"
    if finding.repair.action == "rerun_converter" and session.reconvert is None:
        return "needs the conversion route (use `safeconvert convert`)"
    if session.target_format is Format.TORCHSCRIPT and onnx_source is None:
        return f"no editable ONNX form of the {session.target_format.value} target"
    return f"'{finding.repair.action}' could not be applied to this model"


def _record(finding: Finding, status: str, detail: str, before: Validation | None = None,
            after: Validation | None = None) -> RepairRecord:
    return RepairRecord(
        category=finding.category.value,
        finding=finding.summary,
        action=finding.repair.action if finding.repair else "",
        status=status,
        detail=detail,
        mismatches_before=before.metrics.top1_mismatches if before else None,
        mismatches_after=after.metrics.top1_mismatches if after else None,
        max_abs_diff_before=before.metrics.max_abs_diff if before else None,
        max_abs_diff_after=after.metrics.max_abs_diff if after else None,
    )
