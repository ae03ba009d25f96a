"""LH faults in ONNX: one layer's hyperparameter attribute changed (pads, stride, dilation, epsilon, pooling
flags, clip bounds).

Padding lives in a Conv's or pool's pads attribute, or in a separate constant Pad op (tf2onnx keeps Keras'
ZeroPadding2D as one); pads_dropped and pads_shifted edit either.

pads_dropped, stride and ceil_mode change the layer's output size; their sites are the layers where the rest of
the graph still runs with the new size (a global pool absorbs it, a residual Add or a Flatten into a fixed Dense
does not), found by trial in the dispatcher. dilation keeps the size by widening (or narrowing) the
padding with it, so every conv with a kernel larger than 1 is a site; the details record both attributes.
"""

from __future__ import annotations

import numpy as np

from .fault import Change
from .onnx_graph import OnnxGraph, site_node

POOLS = ("MaxPool", "AveragePool")
TF_EPSILON, TORCH_EPSILON = 1e-3, 1e-5  # the two frameworks' BatchNorm defaults, the usual mix-up


def _explicit(node) -> bool:
    return OnnxGraph.attr(node, "auto_pad", "NOTSET") in ("NOTSET", "")


def _pads(node) -> list[int]:
    rank = len(_kernel(node))
    return list(OnnxGraph.attr(node, "pads", [0] * 2 * rank))


def _kernel(node, graph: OnnxGraph | None = None) -> list[int]:
    shape = OnnxGraph.attr(node, "kernel_shape")
    if shape is None and graph is not None:
        weight = graph.constant(node.input[1])
        shape = [] if weight is None else list(weight.shape[2:])
    return list(shape or [])


def _node_name(node) -> str:
    return OnnxGraph.node_id(node)


# --- pads ----------------------------------------------------------------------------------------------

def _pad_op_pads(graph: OnnxGraph, node) -> list[int] | None:
    """A constant-mode Pad node's pads (begins then ends), None when computed or another mode."""
    if node.op_type != "Pad" or graph.attr(node, "mode", "constant") != "constant":
        return None
    if graph.opset() < 11:
        return list(graph.attr(node, "pads", []))
    value = graph.constant(node.input[1]) if len(node.input) > 1 else None
    return None if value is None else [int(v) for v in value]


def _any_pads(graph: OnnxGraph, node) -> list[int]:
    return (_pad_op_pads(graph, node) or []) if node.op_type == "Pad" else (_pads(node) if _explicit(node) else [])


def _set_pads(graph: OnnxGraph, node, pads: list[int]) -> None:
    if node.op_type != "Pad":
        graph.set_attr(node, "pads", pads)
    elif graph.opset() < 11:
        graph.set_attr(node, "pads", pads)
    else:
        graph.set_input_constant(node, 1, np.array(pads, dtype=np.int64))


def pads_dropped_sites(graph: OnnxGraph) -> list[str]:
    """Convs, pools and constant Pad ops with some padding (the dispatcher keeps those where the model runs)."""
    return [_node_name(n) for n in graph.nodes("Conv", "Pad", *POOLS) if any(_any_pads(graph, n))]


def apply_pads_dropped(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, pads_dropped_sites)
    old = _any_pads(graph, node)
    _set_pads(graph, node, [0] * len(old))
    return Change(f"{node.op_type} {site}: pads {old} dropped", {"old_pads": old, "new_pads": [0] * len(old)})


def _symmetric(pads: list[int]) -> bool:
    half = len(pads) // 2
    return any(pads) and pads[:half] == pads[half:]


def pads_shifted_sites(graph: OnnxGraph) -> list[str]:
    return [_node_name(n) for n in graph.nodes("Conv", "Pad") if _symmetric(_any_pads(graph, n))]


def apply_pads_shifted(graph: OnnxGraph, site: str, params: dict) -> Change:
    """All padding moved to the end of each axis: the output keeps its size and shifts by the begin pad."""
    node = site_node(graph, site, pads_shifted_sites)
    old = _any_pads(graph, node)
    half = len(old) // 2
    new = [0] * half + [old[i] + old[i + half] for i in range(half)]
    _set_pads(graph, node, new)
    return Change(f"{node.op_type} {site}: pads {old} -> {new} (padding moved to bottom/right)", {"old_pads": old, "new_pads": new})


# --- stride and dilation -------------------------------------------------------------------------------

def stride_sites(graph: OnnxGraph) -> list[str]:
    return [_node_name(n) for n in graph.nodes("Conv") if _kernel(n, graph)]


def apply_stride(graph: OnnxGraph, site: str, params: dict) -> Change:
    """A stride above 1 is lost (-> 1); a stride of 1 becomes 2 (or params['stride'])."""
    node = site_node(graph, site, stride_sites)
    old = list(graph.attr(node, "strides", [1] * len(_kernel(node, graph))))
    wanted = int(params.get("stride", 2))
    new = [1 if s > 1 else wanted for s in old]
    graph.set_attr(node, "strides", new)
    return Change(f"Conv {site}: strides {old} -> {new}", {"old_strides": old, "new_strides": new})


def _dilation_plan(node, graph: OnnxGraph) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """(old dilations, new dilations, old pads, new pads) keeping the output size, None if impossible."""
    kernel = _kernel(node, graph)
    if not kernel or min(kernel) < 2 or not _explicit(node):
        return None
    old = list(OnnxGraph.attr(node, "dilations", [1] * len(kernel)))
    new = [1 if d > 1 else 2 for d in old]
    pads = _pads(node)
    half = len(pads) // 2
    new_pads = list(pads)
    for axis, k in enumerate(kernel):
        extra = (new[axis] - old[axis]) * (k - 1)
        new_pads[axis] += extra // 2
        new_pads[axis + half] += extra - extra // 2
    return (old, new, pads, new_pads) if min(new_pads) >= 0 else None


def dilation_sites(graph: OnnxGraph) -> list[str]:
    return [_node_name(n) for n in graph.nodes("Conv") if _dilation_plan(n, graph) is not None]


def apply_dilation(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, dilation_sites)
    old, new, pads, new_pads = _dilation_plan(node, graph)
    graph.set_attr(node, "dilations", new)
    graph.set_attr(node, "pads", new_pads)
    details = {"old_dilations": old, "new_dilations": new, "old_pads": pads, "new_pads": new_pads}
    return Change(f"Conv {site}: dilations {old} -> {new} (pads {pads} -> {new_pads} keep the size)", details)


# --- BatchNormalization epsilon ------------------------------------------------------------------------

def bn_epsilon_sites(graph: OnnxGraph) -> list[str]:
    """Only BatchNormalization nodes: exporters that fold BN into the conv (torch.onnx's dynamo exporter,
    tf2onnx) leave no epsilon to change, and the folded scale alone does not say what the variance was."""
    return [_node_name(n) for n in graph.nodes("BatchNormalization")]


def apply_bn_epsilon(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, bn_epsilon_sites)
    old = float(graph.attr(node, "epsilon", 1e-5))
    new = float(params.get("epsilon", TF_EPSILON if old < TF_EPSILON else TORCH_EPSILON))
    graph.set_attr(node, "epsilon", new)
    variance = graph.constant(node.input[4])
    details = {"old_epsilon": old, "new_epsilon": new}
    if variance is not None:
        details["min_running_var"] = float(np.min(variance))
    return Change(f"BatchNormalization {site}: epsilon {old:g} -> {new:g}", details)


# --- pooling flags -------------------------------------------------------------------------------------

def _pool_size(size: int, kernel: int, stride: int, dilation: int, pad: int, ceil: bool) -> int:
    span = size + pad - ((kernel - 1) * dilation + 1)
    return (-(-span // stride) if ceil else span // stride) + 1


def _ceil_matters(node, shapes: dict) -> bool:
    """Whether flipping ceil_mode changes this pool's output size (only then is the flag observable)."""
    shape = shapes.get(node.input[0])
    kernel = _kernel(node)
    if not _explicit(node) or shape is None or len(shape) != 2 + len(kernel) or None in shape[2:]:
        return False
    strides = OnnxGraph.attr(node, "strides", [1] * len(kernel))
    dilations = OnnxGraph.attr(node, "dilations", [1] * len(kernel))
    pads, half = _pads(node), len(kernel)
    for axis, k in enumerate(kernel):
        args = (shape[2 + axis], k, strides[axis], dilations[axis], pads[axis] + pads[axis + half])
        if _pool_size(*args, ceil=False) != _pool_size(*args, ceil=True):
            return True
    return False


def ceil_mode_sites(graph: OnnxGraph) -> list[str]:
    shapes = graph.static_shapes()
    return [_node_name(n) for n in graph.nodes(*POOLS) if _ceil_matters(n, shapes)]


def apply_ceil_mode(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, ceil_mode_sites)
    old = int(graph.attr(node, "ceil_mode", 0))
    graph.set_attr(node, "ceil_mode", 1 - old)
    return Change(f"{node.op_type} {site}: ceil_mode {old} -> {1 - old}", {"old_ceil_mode": old, "new_ceil_mode": 1 - old})


def count_include_pad_sites(graph: OnnxGraph) -> list[str]:
    def pads(node) -> bool:
        return any(_pads(node)) if _explicit(node) else graph.attr(node, "auto_pad", "").startswith("SAME")

    return [_node_name(n) for n in graph.nodes("AveragePool") if pads(n)]


def apply_count_include_pad(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, count_include_pad_sites)
    old = int(graph.attr(node, "count_include_pad", 0))
    graph.set_attr(node, "count_include_pad", 1 - old)
    details = {"old_count_include_pad": old, "new_count_include_pad": 1 - old}
    return Change(f"AveragePool {site}: count_include_pad {old} -> {1 - old}", details)


# --- Clip bounds ---------------------------------------------------------------------------------------

def clip_bounds(graph: OnnxGraph, node) -> tuple[float | None, float | None]:
    """(min, max) of a Clip, from its inputs (opset >= 11) or attributes; None where unbounded or computed."""
    if graph.opset() < 11:
        return graph.attr(node, "min"), graph.attr(node, "max")
    bounds = []
    for index in (1, 2):
        value = graph.constant(node.input[index]) if len(node.input) > index and node.input[index] else None
        bounds.append(None if value is None else float(value))
    return bounds[0], bounds[1]


def clip_bounds_sites(graph: OnnxGraph) -> list[str]:
    return [_node_name(n) for n in graph.nodes("Clip") if clip_bounds(graph, n)[1] is not None]


def apply_clip_bounds(graph: OnnxGraph, site: str, params: dict) -> Change:
    """The upper bound scaled (halved unless params['max_factor'] says otherwise): ReLU6 becomes ReLU3."""
    node = site_node(graph, site, clip_bounds_sites)
    low, high = clip_bounds(graph, node)
    new_high = float(high * params.get("max_factor", 0.5))
    if graph.opset() < 11:
        graph.set_attr(node, "max", new_high)
    else:
        graph.set_input_constant(node, 2, np.array(new_high, dtype=np.float32))
    details = {"old_min": low, "old_max": high, "new_min": low, "new_max": new_high}
    return Change(f"Clip {site}: bounds [{low}, {high}] -> [{low}, {new_high}]", details)
