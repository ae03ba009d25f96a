"""LH faults in TFLite: padding, stride or dilation fields of one operator changed.

pads_dropped: padding SAME -> VALID on a conv or pool, or a PAD op's paddings zeroed; pads_shifted: a PAD
op's symmetric padding moved to the bottom/right; stride and dilation of a conv. Padding and stride change
the layer's output size, so their sites are found by trial in the dispatcher.
"""

from __future__ import annotations

import numpy as np

from .fault import Change
from .tflite_model import TfliteGraph, site_op

CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")
POOLS = ("AVERAGE_POOL_2D", "MAX_POOL_2D")
SAME, VALID = 0, 1


def _kernel(graph: TfliteGraph, op) -> tuple[int, int]:
    if graph.op_type(op) in POOLS:
        return op.builtinOptions.filterHeight, op.builtinOptions.filterWidth
    shape = graph.shape(int(op.inputs[1]))
    return shape[1], shape[2]


def _named(graph: TfliteGraph, ops: list) -> list[str]:
    return [graph.op_name(op) for op in ops]



# --- padding -------------------------------------------------------------------------------------------

def _pad_value(graph: TfliteGraph, op) -> np.ndarray | None:
    return graph.constant(int(op.inputs[1])) if graph.op_type(op) == "PAD" else None


def pads_dropped_sites(graph: TfliteGraph) -> list[str]:
    same = [op for op in graph.ops(*CONVS, *POOLS) if op.builtinOptions.padding == SAME and max(_kernel(graph, op)) > 1]
    pads = [op for op in graph.ops("PAD") if _pad_value(graph, op) is not None and _pad_value(graph, op).any()]
    return _named(graph, sorted(same + pads, key=graph.operators.index))


def apply_pads_dropped(graph: TfliteGraph, site: str, params: dict) -> Change:
    op = site_op(graph, site, pads_dropped_sites)
    if graph.op_type(op) == "PAD":
        old = _pad_value(graph, op)
        graph.set_constant(int(op.inputs[1]), np.zeros_like(old))
        return Change(f"PAD {site}: paddings {old.tolist()} dropped", {"old_pads": old.ravel().tolist(), "new_pads": [0] * old.size})
    op.builtinOptions.padding = VALID
    return Change(f"{graph.op_type(op)} {site}: padding SAME -> VALID", {"old_padding": SAME, "new_padding": VALID})


def _symmetric_pad(graph: TfliteGraph, op) -> bool:
    value = _pad_value(graph, op)
    return value is not None and value.shape == (4, 2) and value[1:3].any() and bool(np.all(value[1:3, 0] == value[1:3, 1]))


def pads_shifted_sites(graph: TfliteGraph) -> list[str]:
    return _named(graph, [op for op in graph.ops("PAD") if _symmetric_pad(graph, op)])


def apply_pads_shifted(graph: TfliteGraph, site: str, params: dict) -> Change:
    op = site_op(graph, site, pads_shifted_sites)
    old = _pad_value(graph, op)
    new = old.copy()
    new[1:3, 1] = old[1:3].sum(axis=1)
    new[1:3, 0] = 0
    graph.set_constant(int(op.inputs[1]), new)
    details = {"old_pads": old.ravel().tolist(), "new_pads": new.ravel().tolist()}
    return Change(f"PAD {site}: paddings {old.tolist()} -> {new.tolist()} (moved to bottom/right)", details)


# --- stride and dilation -------------------------------------------------------------------------------

def stride_sites(graph: TfliteGraph) -> list[str]:
    return _named(graph, graph.ops(*CONVS))


def apply_stride(graph: TfliteGraph, site: str, params: dict) -> Change:
    op = site_op(graph, site, stride_sites)
    options = op.builtinOptions
    old = [options.strideH, options.strideW]
    wanted = int(params.get("stride", 2))
    new = [1 if s > 1 else wanted for s in old]
    options.strideH, options.strideW = new
    return Change(f"{graph.op_type(op)} {site}: strides {old} -> {new}", {"old_strides": old, "new_strides": new})


def dilation_sites(graph: TfliteGraph) -> list[str]:
    return _named(graph, [op for op in graph.ops(*CONVS) if min(_kernel(graph, op)) > 1])


def apply_dilation(graph: TfliteGraph, site: str, params: dict) -> Change:
    """SAME padding keeps the output size under any dilation; VALID shrinks it (the dispatcher checks it runs)."""
    op = site_op(graph, site, dilation_sites)
    options = op.builtinOptions
    old = [options.dilationHFactor, options.dilationWFactor]
    new = [1 if d > 1 else 2 for d in old]
    options.dilationHFactor, options.dilationWFactor = new
    return Change(f"{graph.op_type(op)} {site}: dilations {old} -> {new}", {"old_dilations": old, "new_dilations": new})
