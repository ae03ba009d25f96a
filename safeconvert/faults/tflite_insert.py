"""TSS, ID and PP faults in TFLite: builtin operators inserted into the graph, stored shapes kept consistent.

TSS flatten_order: a TRANSPOSE to NCHW before the RESHAPE that flattens a feature map into a dense layer
(TFLite flattens NHWC; the fault flattens in PyTorch's order). TSS layout_reinterpret: a conv's NHWC output
reshaped as if it were NCHW and transposed back. At the input (site: the input tensor's name) the ID faults
reinterpret the buffer in the other layout or swap height and width, and the PP faults scale the input or
reverse its channels; the declared input shape stays as it was.
"""

from __future__ import annotations

import numpy as np

from ..formats import guess_layout
from .fault import Change, FaultNotApplicableError
from .tflite_model import OpSpec, TfliteGraph, site_op

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _transpose(graph: TfliteGraph, shape: tuple[int, ...], perm: list[int]) -> OpSpec:
    return OpSpec("TRANSPOSE", tuple(shape[p] for p in perm), [np.array(perm, dtype=np.int32)],
                  graph.schema.TransposeOptionsT(), "TransposeOptions")


def _reshape(graph: TfliteGraph, shape: tuple[int, ...]) -> OpSpec:
    options = graph.schema.ReshapeOptionsT()
    options.newShape = [-1, *shape[1:]]
    return OpSpec("RESHAPE", tuple(shape), [np.array([-1, *shape[1:]], dtype=np.int32)], options, "ReshapeOptions")


def _order_changes(shape: tuple[int, ...], perm: list[int]) -> bool:
    positions = np.arange(int(np.prod(shape[1:]))).reshape((1, *shape[1:]))
    return not np.array_equal(positions.transpose(perm).ravel(), positions.ravel())


def _map_4d(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and min(shape[1:]) > 0 and _order_changes(shape, TO_NCHW)


# --- TSS -----------------------------------------------------------------------------------------------

def flatten_order_sites(graph: TfliteGraph) -> list[str]:
    def flattens(op) -> bool:
        return _map_4d(graph.shape(int(op.inputs[0]))) and len(graph.shape(int(op.outputs[0]))) == 2

    return [graph.op_name(op) for op in graph.ops("RESHAPE") if flattens(op)]


def apply_flatten_order(graph: TfliteGraph, site: str, params: dict) -> Change:
    op = site_op(graph, site, flatten_order_sites)
    source = int(op.inputs[0])
    graph.insert_chain(source, [_transpose(graph, graph.shape(source), TO_NCHW)], only=op, anchor=site)
    return Change(f"TRANSPOSE {TO_NCHW} before RESHAPE {site}: flattens in NCHW order", {"perm": TO_NCHW})


def layout_reinterpret_sites(graph: TfliteGraph) -> list[str]:
    outputs = set(int(i) for i in graph.subgraph.outputs)
    return [graph.op_name(op) for op in graph.ops("CONV_2D", "DEPTHWISE_CONV_2D")
            if _map_4d(graph.shape(int(op.outputs[0]))) and int(op.outputs[0]) not in outputs]


def apply_layout_reinterpret(graph: TfliteGraph, site: str, params: dict) -> Change:
    op = site_op(graph, site, layout_reinterpret_sites)
    tensor = int(op.outputs[0])
    batch, height, width, channels = graph.shape(tensor)
    chain = [_reshape(graph, (batch, channels, height, width)), _transpose(graph, (batch, channels, height, width), TO_NHWC)]
    graph.insert_chain(tensor, chain, anchor=site)
    details = {"channels": channels, "height": height, "width": width}
    return Change(f"output of {graph.op_type(op)} {site} (NHWC) reshaped as NCHW and transposed back", details)


# --- ID and PP at the input ----------------------------------------------------------------------------

def _image_input(graph: TfliteGraph) -> tuple[int, tuple[int, ...], str]:
    inputs = [int(i) for i in graph.subgraph.inputs]
    shape = graph.shape(inputs[0]) if len(inputs) == 1 else ()
    if len(shape) != 4:
        raise FaultNotApplicableError("input faults need one 4-D image input")
    return inputs[0], shape, guess_layout(shape)


def input_sites(graph: TfliteGraph) -> list[str]:
    try:
        return [graph.tensor_name(_image_input(graph)[0])]
    except FaultNotApplicableError:
        return []


def hw_swap_sites(graph: TfliteGraph) -> list[str]:
    if not input_sites(graph):
        return []
    _, shape, layout = _image_input(graph)
    spatial = shape[1:3] if layout == "NHWC" else shape[2:4]
    return input_sites(graph) if spatial[0] == spatial[1] else []


def _checked_input(graph: TfliteGraph, site: str, sites) -> tuple[int, tuple[int, ...], str]:
    if site not in sites(graph):
        raise FaultNotApplicableError(f"{site} is not a site for this fault (sites: {', '.join(sites(graph)) or 'none'})")
    return _image_input(graph)


def apply_input_scale(graph: TfliteGraph, site: str, params: dict) -> Change:
    tensor, shape, _ = _checked_input(graph, site, input_sites)
    factor = float(params.get("factor", 255.0))
    options = graph.schema.MulOptionsT()
    graph.insert_chain(tensor, [OpSpec("MUL", shape, [np.array(factor, dtype=np.float32)], options, "MulOptions")])
    return Change(f"input {site} multiplied by {factor:g}", {"factor": factor})


def apply_channel_order(graph: TfliteGraph, site: str, params: dict) -> Change:
    tensor, shape, layout = _checked_input(graph, site, input_sites)
    axis = 3 if layout == "NHWC" else 1
    order = np.arange(shape[axis])[::-1].astype(np.int32)
    options = graph.schema.GatherOptionsT()
    options.axis, options.batchDims = axis, 0
    graph.insert_chain(tensor, [OpSpec("GATHER", shape, [order], options, "GatherOptions")])
    return Change(f"input {site}: channels reversed on axis {axis} (RGB <-> BGR)", {"axis": axis, "order": order.tolist()})


def apply_hw_swap(graph: TfliteGraph, site: str, params: dict) -> Change:
    tensor, shape, layout = _checked_input(graph, site, hw_swap_sites)
    perm = [0, 2, 1, 3] if layout == "NHWC" else [0, 1, 3, 2]
    graph.insert_chain(tensor, [_transpose(graph, shape, perm)])
    return Change(f"input {site} ({layout}): height and width swapped", {"perm": perm})


def apply_nchw_reinterpret(graph: TfliteGraph, site: str, params: dict) -> Change:
    tensor, shape, layout = _checked_input(graph, site, input_sites)
    perm_in, perm_back = (TO_NCHW, TO_NHWC) if layout == "NHWC" else (TO_NHWC, TO_NCHW)
    other = tuple(shape[p] for p in perm_in)
    graph.insert_chain(tensor, [_reshape(graph, other), _transpose(graph, other, perm_back)])
    return Change(f"input {site} ({layout}) buffer read as {list(other[1:])} and transposed back", {"reinterpreted_shape": list(other[1:])})
