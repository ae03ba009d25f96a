"""TSS faults in ONNX: a feature map's elements read in the wrong order after a layout change.

flatten_order: a Flatten/Reshape of a spatial feature map into a dense layer reads the map in the other
layout's order. tf2onnx puts a Transpose to NHWC before a Keras Flatten (Keras flattens NHWC); the fault
flattens in NCHW order instead, and for a model that flattens NCHW (PyTorch) it flattens NHWC. Element
counts match, so the graph runs and only the dense layer's inputs are scrambled.

layout_reinterpret: an inner NCHW feature map reshaped as if it were NHWC and transposed back, the
converter bug of reshaping where a transpose was needed.
"""

from __future__ import annotations

import numpy as np

from .fault import Change
from .onnx_graph import OnnxGraph, site_node

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _spatial_map(shape) -> bool:
    """A 4-D map with more than one position and known sizes."""
    return shape is not None and len(shape) == 4 and None not in shape[1:] and shape[2] * shape[3] > 1 and shape[1] > 1


def order_changes(shape: tuple, perm: list[int]) -> bool:
    """Whether reading a map of this shape through `perm` visits its elements in another order."""
    if len(shape) != len(perm) or None in shape[1:]:
        return False
    positions = np.arange(int(np.prod(shape[1:]))).reshape((1, *shape[1:]))
    return not np.array_equal(positions.transpose(perm).ravel(), positions.ravel())


def _flatten_perm(graph: OnnxGraph, node) -> list[int]:
    """NCHW order for a flatten fed by a Transpose to NHWC (tf2onnx's Keras Flatten), NHWC order otherwise."""
    producer = graph.producer(node.input[0])
    made_nhwc = producer is not None and producer.op_type == "Transpose" and list(graph.attr(producer, "perm", [])) == TO_NHWC
    return TO_NCHW if made_nhwc else TO_NHWC


def flatten_order_sites(graph: OnnxGraph) -> list[str]:
    """Flatten/Reshape nodes that turn a 4-D map into a matrix, where the other order reads it differently."""
    shapes = graph.static_shapes()

    def flattens_map(node) -> bool:
        out, source = shapes.get(node.output[0]), shapes.get(node.input[0])
        return out is not None and len(out) == 2 and source is not None and order_changes(source, _flatten_perm(graph, node))

    return [OnnxGraph.node_id(n) for n in graph.nodes("Flatten", "Reshape") if flattens_map(n)]


def apply_flatten_order(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, flatten_order_sites)
    perm = _flatten_perm(graph, node)
    chain = graph.insert_before(node, 0, lambda src, dst: [graph.make_node("Transpose", [src], dst, site, perm=perm)])
    order = "NCHW" if perm == TO_NCHW else "NHWC"
    return Change(f"Transpose {chain[0].name} (perm {perm}) before {node.op_type} {site}: flattens in {order} order", {"perm": perm})


def layout_reinterpret_sites(graph: OnnxGraph) -> list[str]:
    shapes = graph.static_shapes()
    return [OnnxGraph.node_id(n) for n in graph.nodes("Conv") if _spatial_map(shapes.get(n.output[0]))]


def apply_layout_reinterpret(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, layout_reinterpret_sites)
    _, channels, height, width = graph.static_shapes()[node.output[0]]
    shape = graph.add_constant(f"{site}/reinterpret_shape", np.array([-1, height, width, channels], dtype=np.int64))

    def build(src: str, dst: str) -> list:
        middle = graph.unique(f"{src}_nhwc")
        return [graph.make_node("Reshape", [src, shape], middle, site),
                graph.make_node("Transpose", [middle], dst, site, perm=TO_NCHW)]

    graph.insert_after(node.output[0], build)
    details = {"channels": channels, "height": height, "width": width}
    return Change(f"output of Conv {site} (NCHW) reshaped as NHWC and transposed back", details)
