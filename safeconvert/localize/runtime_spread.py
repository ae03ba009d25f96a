"""TOOL stage for quantised sources: is the disagreement the runtimes' integer rounding, not the conversion?

An int8 model's outputs depend on the kernels that run it: requantisation rounds ties and fixed-point
products differently from one kernel set to the next, and in a deep network a one-step difference in an
early layer can grow into different labels. Measured on MobileNetV2 (int8 TFLite, 42 photos): LiteRT's own
default (XNNPACK) and built-in kernels disagree on 8 labels; its tf2onnx conversion run by ONNX Runtime
disagrees with either by as much, at every graph optimisation level. No edit of the converted file can make
one runtime reproduce another's rounding, so this is reported (with the numbers) instead of repaired:
the converted model is as faithful as the source's own runtime is to itself.

The check runs the source with a second kernel set of its own runtime (the spread) and, for ONNX targets,
the target with ONNX Runtime's basic graph optimisations (no fused int8 kernels): both cheap, no TVM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..formats import Format
from .findings import Category, Finding

# The target counts as within the source's own spread when it is at most this much further away.
SPREAD_MARGIN = 1.5


@dataclass
class Agreement:
    """How far one set of outputs is from the source's (as validation ran it) on the same images."""

    label_changes: int
    relative_gap: float  # max |diff| / source output range


def agreement(reference: np.ndarray, other: np.ndarray) -> Agreement:
    """Counted as validation counts (same tie-breaking of the quantised outputs' equal scores)."""
    from ..validators.metrics import compare_outputs

    metrics = compare_outputs(reference, other, [str(i) for i in range(len(reference))])
    return Agreement(metrics.top1_mismatches, metrics.relative_max_diff)


def runtime_findings(source: Path, source_format: Format, target: Path, target_format: Format,
                     inputs: Callable[[], np.ndarray], source_outputs: np.ndarray,
                     target_outputs: np.ndarray) -> list[Finding]:
    """A TOOL finding when the target is no further from the source than the source's runtime is from itself.

    inputs: the canonical NHWC inputs validation used (built only for quantised sources);
    source_outputs / target_outputs: validation's outputs on them.
    """
    if not quantised_activations(source, source_format):
        return []
    batch = inputs()
    alternative = _other_kernels(source, source_format, batch)
    if alternative is None:
        return []
    spread = agreement(source_outputs, alternative[1])
    found = agreement(source_outputs, target_outputs)
    basic = _onnx_basic(target, batch) if target_format is Format.ONNX else None
    evidence = {"source_runtime_spread": asdict(spread), "source_kernels_compared": alternative[0],
                "target": asdict(found), "images": len(batch)}
    if basic is not None:
        evidence["target_onnxruntime_basic"] = asdict(agreement(source_outputs, basic))
        evidence["target_onnxruntime_all"] = asdict(found)
    if basic is not None and _clearly_closer(agreement(source_outputs, basic), found):
        return [_basic_finding(evidence)]
    if found.relative_gap <= SPREAD_MARGIN * spread.relative_gap:
        return [_spread_finding(evidence, spread, found)]
    return []


def _clearly_closer(basic: Agreement, default: Agreement) -> bool:
    """ONNX Runtime without its fused int8 kernels reproduces the source where the default does not."""
    return basic.label_changes == 0 and basic.relative_gap < 0.1 * default.relative_gap


def _basic_finding(evidence: dict) -> Finding:
    basic, default = evidence["target_onnxruntime_basic"], evidence["target_onnxruntime_all"]
    return Finding(
        category=Category.TOOL,
        summary=("ONNX Runtime's graph optimisations change this quantised model's numerics (its fused int8 kernels "
                 f"round differently): {default['label_changes']} label changes at ORT_ENABLE_ALL, "
                 f"{basic['label_changes']} at ORT_ENABLE_BASIC; run it with "
                 "SessionOptions.graph_optimization_level = ORT_ENABLE_BASIC"),
        evidence={**evidence, "no_repair_because": "the model file is faithful; the difference is the runtime's "
                                                   "fused kernels, set at load time"},
        score=2.0,
    )


def _spread_finding(evidence: dict, spread: Agreement, found: Agreement) -> Finding:
    kernels = evidence["source_kernels_compared"]
    orts = ""
    if "target_onnxruntime_basic" in evidence:
        basic = evidence["target_onnxruntime_basic"]
        orts = (f" (ONNX Runtime ORT_ENABLE_ALL: {found.label_changes} labels, {found.relative_gap:.3g} of the range; "
                f"ORT_ENABLE_BASIC: {basic['label_changes']} labels, {basic['relative_gap']:.3g})")
    return Finding(
        category=Category.TOOL,
        summary=(f"the quantised source's outputs depend on the kernels that run it: {kernels} disagree with each "
                 f"other on {spread.label_changes} of {evidence['images']} labels ({spread.relative_gap:.3g} of the "
                 f"output range); the target is as close as that{orts}. The conversion is faithful; the "
                 "disagreement is integer rounding, which no edit of the model can make two runtimes share"),
        evidence={**evidence, "no_repair_because": "the difference is the runtimes' integer rounding, not the conversion"},
        score=2.0,
    )


def quantised_activations(path: Path, fmt: Format) -> bool:
    """Does the model compute on integer activations (full-integer quantisation), not just store int8 weights?"""
    if fmt is Format.TFLITE:
        return _tflite_integer_activations(path)
    if fmt is Format.ONNX:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return any(n.op_type in ("QuantizeLinear", "QLinearConv", "QLinearMatMul") for n in model.graph.node)
    return False


def _tflite_integer_activations(path: Path) -> bool:
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    integer = (tflite.TensorType.INT8, tflite.TensorType.UINT8, tflite.TensorType.INT16)
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        buffer = model.Buffers(tensor.Buffer())
        if tensor.Type() in integer and (buffer is None or buffer.DataLength() == 0):
            return True
    return False


def _other_kernels(source: Path, fmt: Format, batch: np.ndarray) -> tuple[str, np.ndarray] | None:
    """The source run by a second kernel set of its own runtime, named."""
    if fmt is Format.TFLITE:
        return "LiteRT's default (XNNPACK) and built-in kernels", _litert_builtin(source, batch)
    if fmt is Format.ONNX:
        return "ONNX Runtime's ORT_ENABLE_ALL and ORT_ENABLE_BASIC kernels", _onnx_basic(source, batch)
    return None


def _litert_builtin(path: Path, batch: np.ndarray) -> np.ndarray:
    """LiteRT without its default delegate (XNNPACK): the built-in optimised integer kernels, image by image."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from ..formats import InputSpec, guess_layout
    from ..quiet import native_stderr_silenced
    from ..validators.preprocess import to_model_layout

    with native_stderr_silenced():
        interpreter = Interpreter(model_path=str(path), num_threads=2,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    first = interpreter.get_input_details()[0]
    shape = tuple(int(d) for d in first["shape"])
    model_input = to_model_layout(batch, InputSpec(first["name"], shape, guess_layout(shape), "float32"))
    try:  # one invocation for the whole batch is ~8x faster than image by image
        return _invoke(interpreter, first, model_input)
    except (RuntimeError, ValueError):  # a model whose batch cannot be resized
        return np.concatenate([_invoke(interpreter, first, image[None]) for image in model_input], axis=0)


def _invoke(interpreter, first: dict, model_input: np.ndarray) -> np.ndarray:
    from ..runners.tflite_runner import _dequantize, _quantize

    interpreter.resize_tensor_input(first["index"], list(model_input.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(first["index"], _quantize(model_input, first))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    return _dequantize(interpreter.get_tensor(out["index"]), out).copy()


def _onnx_basic(path: Path, batch: np.ndarray) -> np.ndarray:
    """The ONNX model run by ONNX Runtime with basic graph optimisations only (no fused int8 kernels)."""
    from ..runners.onnx_runner import OnnxRunner
    from ..validators.preprocess import to_model_layout

    runner = OnnxRunner(path, optimization="basic")
    return runner.run(to_model_layout(batch, runner.spec))
