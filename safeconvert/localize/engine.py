"""Run the localization stages in order and rank what they find.

Order: TOOL (reads the route, free), PP/ID (a few runs of the target in its own runtime), then the
structural stages on both models in TVM Relax (WB, LH, CG — exact, no images), then the activation stage
(a handful of images through both models with every aligned layer exposed) which finds where divergence
starts, detects reordered tensors (TSS), and ranks the structural findings by distance from that layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import one_line
from ..timing import Stopwatch
from .context import DIVERGENCE_IMAGES, IrPair, LocalizationInput, build_ir_pair, divergence_indices
from .divergence import Divergence, measure_divergence, permutation_findings, trace
from .findings import Category, Finding
from .inputs import input_findings
from .runtime_spread import runtime_findings
from .static import static_findings
from .tool import tool_findings


# The input stage runs the target alone in its own runtime (milliseconds per image): a few more images.
INPUT_IMAGES = 4
# Up to this many compute layers (conv/dense) the activation stage costs about a second: always traced.
CHEAP_TRACE_LAYERS = 20


@dataclass
class Localization:
    findings: list[Finding] = field(default_factory=list)
    divergence: Divergence | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    ir_pair: IrPair | None = field(default=None, repr=False)
    traced: bool = True  # False when the activation stage was skipped (static findings are repaired first)

    def to_dict(self) -> dict:
        return {
            "findings": [f.to_dict() for f in self.findings],
            "divergence": self.divergence.to_dict() if self.divergence else None,
            "notes": self.notes,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def localize(inp: LocalizationInput, ir_pair: IrPair | None = None, use_ir: bool = True,
             trace_always: bool = True) -> Localization:
    """All stages in order. trace_always=False (the repair loop's first try) skips the activation stage when
    the static stages already found repairable differences: compiling and running both models in TVM costs
    more than validating a repair, and the loop traces when that repair does not verify."""
    result = Localization()
    clock = Stopwatch(result.seconds)
    with clock.stage("tool"):
        result.findings += tool_findings(inp.route, inp.target, inp.target_format, inp.quantisation_requested,
                                         inp.source, inp.source_format)
    if not result.findings:
        with clock.stage("runtime"):
            result.findings += _runtime_stage(inp)
        if result.findings:  # the runtimes' own rounding explains the disagreement: nothing to localize
            return result
    images = divergence_indices(inp.validation, inp.calib.names, limit=INPUT_IMAGES)
    batch = _canonical_batch(inp, images)
    with clock.stage("input"):
        result.findings += _input_stage(inp, batch, images)
    if use_ir and not any(_cheap_fix(f) for f in result.findings):
        traced = images[:DIVERGENCE_IMAGES]
        _structural_stages(inp, result, clock, batch[:len(traced)], traced, ir_pair, trace_always)
    result.findings = rank(result.findings, result.divergence)
    return result


def _cheap_fix(finding: Finding) -> bool:
    """Findings that explain the whole disagreement and are repaired without the structural stages: an
    input read differently, or quantisation (dropped, or kept with some layers in float). The loop
    localizes again if they do not verify."""
    return finding.category in (Category.PP, Category.ID) or (
        finding.repair is not None and finding.repair.action in ("rerun_converter", "keep_float", "dequantise"))


def _runtime_stage(inp: LocalizationInput) -> list[Finding]:
    """Quantised sources: is the target within the spread of the source's own runtime kernels?"""
    every = list(range(len(inp.calib)))
    return runtime_findings(inp.source, inp.source_format, inp.target, inp.target_format,
                            lambda: _canonical_batch(inp, every), inp.validation.source_outputs,
                            inp.validation.target_outputs)


def _input_stage(inp: LocalizationInput, batch: np.ndarray, images: list[int]) -> list[Finding]:
    from ..runners import load_runner

    runner = load_runner(inp.target, inp.target_format)
    tolerance = 1e-3
    return input_findings(runner, batch, inp.validation.source_outputs[images], inp.preprocessing.preset, tolerance)


def _structural_stages(inp: LocalizationInput, result: Localization, clock, batch: np.ndarray, images: list[int],
                       ir_pair: IrPair | None, trace_always: bool = True) -> None:
    try:
        with clock.stage("import_and_align"):
            ir_pair = ir_pair or build_ir_pair(inp.source, inp.source_format, inp.target_ir_path or inp.target,
                                               _target_ir_format(inp))
    except Exception as exc:  # a frontend gap must not hide what the other stages found
        result.notes.append(f"structural stages skipped: TVM could not import the models ({one_line(exc, 200)})")
        return
    result.ir_pair = ir_pair
    with clock.stage("static"):
        result.findings += static_findings(ir_pair.alignment, ir_pair.target.layers)
    if not trace_always and _tracing_is_costly(ir_pair) and any(f.repair is not None for f in result.findings):
        result.traced = False
        _record_ir_timings(result, ir_pair)
        return
    with clock.stage("activations"):
        source_acts, target_acts = trace(ir_pair, batch)
        result.divergence = measure_divergence(ir_pair, source_acts, target_acts, [inp.calib.names[i] for i in images])
        result.findings += permutation_findings(ir_pair, result.divergence, source_acts, target_acts)
    _record_ir_timings(result, ir_pair)
    if result.divergence.first is not None and not _explained(result):
        first = result.divergence.first_layer
        result.notes.append(f"divergence starts at {first.kind} {first.target_layer} (relative error {first.error:.2g}) "
                            "with no structural difference found there")


def _tracing_is_costly(ir_pair: IrPair) -> bool:
    """Compiling both models with every layer exposed grows with their size (2 x ~7 s for MobileNetV2 on 2
    cores, ~1 s in all for a CNN of a few layers): a small pair is traced anyway, for the report's per-layer
    divergence."""
    return len(ir_pair.source.compute_layers()) > CHEAP_TRACE_LAYERS


def _record_ir_timings(result: Localization, ir_pair: IrPair) -> None:
    """Where the structural and activation stages spent their time (import, normalise, compile, VM init, run),
    per side; a source reused from the cache keeps the figures of when it was built."""
    for side, model in (("source", ir_pair.source), ("target", ir_pair.target)):
        for name, seconds in model.timings.items():
            result.seconds[f"{side}:{name}"] = seconds


def _target_ir_format(inp: LocalizationInput):
    """The format of what is imported for the target (an ONNX intermediate for TorchScript targets)."""
    from ..formats import detect_format

    return detect_format(inp.target_ir_path) if inp.target_ir_path else inp.target_format


def _explained(result: Localization) -> bool:
    """A finding at the first diverging layer, or between it and the aligned layer before it (a missing or
    extra op), on either side."""
    layers, first = result.divergence.layers, result.divergence.first
    for side in ("source_index", "target_index"):
        low = getattr(layers[first - 1], side) if first > 0 else -1
        high = getattr(layers[first], side)
        if any(f.evidence.get(side) is not None and low < f.evidence[side] <= high for f in result.findings):
            return True
    return False


def rank(findings: list[Finding], divergence: Divergence | None) -> list[Finding]:
    """Highest score first: the finding at the first diverging layer leads; then by position in the model."""
    if divergence is not None and divergence.first is not None:
        first = divergence.first_layer
        for finding in findings:
            index = finding.evidence.get("source_index")
            if index is None:
                continue
            distance = abs(index - first.source_index)
            finding.score = max(finding.score, 1.0 / (1.0 + distance))
            finding.evidence["divergence_error"] = next((l.error for l in divergence.layers if l.source_index == index), None)
    return sorted(findings, key=lambda f: -f.score)


def _canonical_batch(inp: LocalizationInput, images: list[int]) -> np.ndarray:
    """Preprocessed NHWC inputs for the chosen images, exactly as validation fed them."""
    from ..validators.validate import iter_inputs

    return np.concatenate(list(iter_inputs(inp.calib.subset(images), inp.preprocessing)), axis=0)
