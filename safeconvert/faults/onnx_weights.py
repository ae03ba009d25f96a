"""WB faults in ONNX: one layer's weight initializer rounded to float16, fake-quantised to int8, or transposed.

The weight stays float32 (a converter that stored it in a lower precision and dequantised it at load time
leaves exactly these values), so the graph and its types are unchanged and only the numbers differ.
"""

from __future__ import annotations

import numpy as np

from .fault import Change, FaultNotApplicableError
from .numerics import change_summary, fake_quant_int8, round_fp16
from .onnx_graph import OnnxGraph

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
WHAT = {
    "fp16_weights": "rounded to float16",
    "int8_weights": "fake-quantised to int8 with one per-tensor scale",
    "transposed_kernel": "transposed (H<->W, or in<->out for a square matrix or 1x1 kernel)",
}


def _weight(graph: OnnxGraph, node) -> np.ndarray | None:
    """The node's float weight initializer (input 1), None when it is computed or not float."""
    if len(node.input) < 2 or graph.initializer(node.input[1]) is None:
        return None
    weight = graph.constant(node.input[1])
    if weight is None or weight.dtype != np.float32 or weight.ndim < 2 or weight.size < 2:
        return None
    return weight


def _weighted(graph: OnnxGraph) -> list[tuple[object, np.ndarray]]:
    pairs = [(node, _weight(graph, node)) for node in graph.nodes(*WEIGHTED_OPS)]
    return [(node, weight) for node, weight in pairs if weight is not None]


def transpose_axes(node, weight: np.ndarray) -> tuple[int, ...] | None:
    """The axes swap a converter gets wrong for this weight, None when it would not change the shape-valid result.

    Conv: H<->W of a square kernel larger than 1x1; a 1x1 conv with as many inputs as outputs: in<->out.
    Gemm/MatMul: a square matrix transposed.
    """
    if node.op_type == "Conv" and weight.ndim == 4:
        out_ch, in_ch, kh, kw = weight.shape
        if kh == kw > 1:
            return (0, 1, 3, 2)
        if kh == kw == 1 and out_ch == in_ch and OnnxGraph.attr(node, "group", 1) == 1:
            return (1, 0, 2, 3)
        return None
    if weight.ndim == 2 and weight.shape[0] == weight.shape[1]:
        return (1, 0)
    return None


def _perturbed(kind: str, node, weight: np.ndarray) -> tuple[np.ndarray, dict]:
    if kind == "fp16_weights":
        return round_fp16(weight), {}
    if kind == "int8_weights":
        values, scale = fake_quant_int8(weight)
        return values, {"scale": scale}
    axes = transpose_axes(node, weight)
    if axes is None:
        raise FaultNotApplicableError(f"the weight of {OnnxGraph.node_id(node)} cannot be transposed in place")
    return np.ascontiguousarray(weight.transpose(axes)), {"axes": list(axes)}


def weight_sites(graph: OnnxGraph, kind: str) -> list[str]:
    """Layers whose weight actually changes under this kind."""
    sites = []
    for node, weight in _weighted(graph):
        if kind == "transposed_kernel" and transpose_axes(node, weight) is None:
            continue
        if not np.array_equal(_perturbed(kind, node, weight)[0], weight):
            sites.append(OnnxGraph.node_id(node))
    return sites


def apply_weights(graph: OnnxGraph, site: str, kind: str, params: dict) -> Change:
    node = graph.find(site)
    weight = _weight(graph, node)
    if weight is None:
        raise FaultNotApplicableError(f"{site} has no float weight initializer")
    new, extra = _perturbed(kind, node, weight)
    name = graph.set_input_constant(node, 1, new)
    details = {**change_summary(weight, new), **extra}
    return Change(f"{node.op_type} {site}: weight {name} {WHAT[kind]}", details)
