"""PP and ID faults in ONNX: ops inserted at the model input, the declared input shape kept.

The model still accepts the same tensor, but reads it differently: scaled (PP input_scale), with its channels
reversed (PP channel_order), with height and width swapped (ID hw_swap), or with its buffer reinterpreted in the
other layout (ID nchw_reinterpret). The site of each is the graph input's name.
"""

from __future__ import annotations

import numpy as np

from ..formats import guess_layout
from .fault import Change, FaultNotApplicableError
from .onnx_graph import OnnxGraph

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _image_input(graph: OnnxGraph) -> tuple[str, tuple, str]:
    """The single 4-D image input: name, shape, layout."""
    names = graph.input_names()
    shape = graph.input_shape(names[0]) if len(names) == 1 else ()
    if len(shape) != 4 or None in shape[1:]:
        raise FaultNotApplicableError("input faults need one 4-D image input with fixed height, width and channels")
    return names[0], shape, guess_layout(shape)


def input_sites(graph: OnnxGraph) -> list[str]:
    try:
        return [_image_input(graph)[0]]
    except FaultNotApplicableError:
        return []


def hw_swap_sites(graph: OnnxGraph) -> list[str]:
    """Only square inputs: swapping height and width of a non-square input would change its shape."""
    sites = input_sites(graph)
    if not sites:
        return []
    _, shape, layout = _image_input(graph)
    height, width = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    return sites if height == width else []


def _checked_input(graph: OnnxGraph, site: str, sites) -> tuple[str, tuple, str]:
    if site not in sites(graph):
        raise FaultNotApplicableError(f"{site} is not a site for this fault (sites: {', '.join(sites(graph)) or 'none'})")
    return _image_input(graph)


def apply_input_scale(graph: OnnxGraph, site: str, params: dict) -> Change:
    name, _, _ = _checked_input(graph, site, input_sites)
    factor = float(params.get("factor", 255.0))
    constant = graph.add_constant(f"{name}/scale", np.array(factor, dtype=np.float32))
    graph.insert_after(name, lambda src, dst: [graph.make_node("Mul", [src, constant], dst, name)])
    return Change(f"input {name} multiplied by {factor:g}", {"factor": factor})


def apply_channel_order(graph: OnnxGraph, site: str, params: dict) -> Change:
    name, shape, layout = _checked_input(graph, site, input_sites)
    axis = 3 if layout == "NHWC" else 1
    order = np.arange(shape[axis])[::-1].astype(np.int64)
    indices = graph.add_constant(f"{name}/channel_order", order)
    graph.insert_after(name, lambda src, dst: [graph.make_node("Gather", [src, indices], dst, name, axis=axis)])
    return Change(f"input {name}: channels reversed on axis {axis} (RGB <-> BGR)", {"axis": axis, "order": order.tolist()})


def apply_hw_swap(graph: OnnxGraph, site: str, params: dict) -> Change:
    name, _, layout = _checked_input(graph, site, hw_swap_sites)
    perm = [0, 2, 1, 3] if layout == "NHWC" else [0, 1, 3, 2]
    graph.insert_after(name, lambda src, dst: [graph.make_node("Transpose", [src], dst, name, perm=perm)])
    return Change(f"input {name} ({layout}): height and width swapped", {"perm": perm})


def apply_nchw_reinterpret(graph: OnnxGraph, site: str, params: dict) -> Change:
    """NHWC input whose only reader is the NHWC->NCHW Transpose (tf2onnx's): that Transpose becomes a Reshape.
    Otherwise the buffer is reshaped as the other layout and transposed back to the declared one."""
    name, shape, layout = _checked_input(graph, site, input_sites)
    readers = graph.consumers(name)
    if layout == "NHWC" and len(readers) == 1 and readers[0].op_type == "Transpose" and list(graph.attr(readers[0], "perm", [])) == TO_NCHW:
        return _transpose_to_reshape(graph, readers[0], shape)
    if layout == "NHWC":
        other, perm = [-1, shape[3], shape[1], shape[2]], TO_NHWC
    else:
        other, perm = [-1, shape[2], shape[3], shape[1]], TO_NCHW
    target = graph.add_constant(f"{name}/reinterpret_shape", np.array(other, dtype=np.int64))

    def build(src: str, dst: str) -> list:
        middle = graph.unique(f"{name}_reinterpreted")
        return [graph.make_node("Reshape", [src, target], middle, name),
                graph.make_node("Transpose", [middle], dst, name, perm=perm)]

    graph.insert_after(name, build)
    return Change(f"input {name} ({layout}) buffer read as {other[1:]} and transposed back", {"reinterpreted_shape": other[1:]})


def _transpose_to_reshape(graph: OnnxGraph, transpose, shape: tuple) -> Change:
    _, height, width, channels = shape
    target = graph.add_constant(f"{transpose.input[0]}/reinterpret_shape", np.array([-1, channels, height, width], dtype=np.int64))
    transpose.op_type = "Reshape"
    del transpose.attribute[:]
    transpose.input.append(target)
    graph.drop_value_info([transpose.output[0]])
    description = f"input {transpose.input[0]}: Transpose {OnnxGraph.node_id(transpose)} to NCHW replaced by a Reshape"
    return Change(description, {"reinterpreted_shape": [channels, height, width]})
