"""WB faults in TFLite: one conv, depthwise or fully-connected weight buffer rounded to float16, fake-quantised
to int8, or transposed. The tensor stays float32, as if a lower-precision copy had been dequantised back.
"""

from __future__ import annotations

import numpy as np

from .fault import Change, FaultNotApplicableError
from .numerics import change_summary, fake_quant_int8, round_fp16
from .tflite_model import FLOAT32, TfliteGraph

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
WHAT = {
    "fp16_weights": "rounded to float16",
    "int8_weights": "fake-quantised to int8 with one per-tensor scale",
    "transposed_kernel": "transposed (H<->W, or in<->out for a square matrix or 1x1 kernel)",
}


def _weights(graph: TfliteGraph) -> list[tuple[str, int, np.ndarray]]:
    """(op type, weight tensor index, value) for every float constant weight."""
    found = []
    for op in graph.ops(*WEIGHT_OPS):
        index = int(op.inputs[1])
        value = graph.constant(index) if graph.tensors[index].type == FLOAT32 else None
        if value is not None and value.size > 1:
            found.append((graph.op_type(op), index, value))
    return found


def transpose_axes(op_type: str, weight: np.ndarray) -> tuple[int, ...] | None:
    """CONV_2D weights are OHWI, DEPTHWISE 1HWC, FULLY_CONNECTED (out, in)."""
    if op_type in ("CONV_2D", "DEPTHWISE_CONV_2D") and weight.ndim == 4:
        out_ch, height, width, in_ch = weight.shape
        if height == width > 1:
            return (0, 2, 1, 3)
        if op_type == "CONV_2D" and height == width == 1 and out_ch == in_ch:
            return (3, 1, 2, 0)
        return None
    if weight.ndim == 2 and weight.shape[0] == weight.shape[1]:
        return (1, 0)
    return None


def _perturbed(kind: str, op_type: str, weight: np.ndarray) -> tuple[np.ndarray, dict]:
    if kind == "fp16_weights":
        return round_fp16(weight), {}
    if kind == "int8_weights":
        values, scale = fake_quant_int8(weight)
        return values, {"scale": scale}
    axes = transpose_axes(op_type, weight)
    if axes is None:
        raise FaultNotApplicableError("this weight cannot be transposed in place")
    return np.ascontiguousarray(weight.transpose(axes)), {"axes": list(axes)}


def weight_sites(graph: TfliteGraph, kind: str) -> list[str]:
    sites = []
    for op_type, index, weight in _weights(graph):
        if kind == "transposed_kernel" and transpose_axes(op_type, weight) is None:
            continue
        if not np.array_equal(_perturbed(kind, op_type, weight)[0], weight):
            sites.append(graph.tensor_name(index))
    return sites


def apply_weights(graph: TfliteGraph, site: str, kind: str, params: dict) -> Change:
    match = next(((t, i, w) for t, i, w in _weights(graph) if graph.tensor_name(i) == site), None)
    if match is None:
        raise FaultNotApplicableError(f"{site} is not a float conv/depthwise/dense weight tensor")
    op_type, index, weight = match
    new, extra = _perturbed(kind, op_type, weight)
    graph.set_constant(index, new)
    return Change(f"{op_type} weight {site} {WHAT[kind]}", {**change_summary(weight, new), **extra})
