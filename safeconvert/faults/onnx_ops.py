"""CG faults in ONNX: an activation removed, an extra ReLU inserted, a ReLU6 substituted by a ReLU.

These are the graph-level mistakes converters make when they fuse or unfuse activations: the op is
missing, duplicated where it does not belong, or replaced by a look-alike.
"""

from __future__ import annotations

from .fault import Change
from .onnx_graph import OnnxGraph, site_node
from .onnx_hyper import clip_bounds

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")
ANY_ACTIVATION = set(ACTIVATIONS) | {"Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "PRelu", "Softplus"}
LINEAR_PRODUCERS = ("Conv", "Gemm", "MatMul", "Add", "BatchNormalization")


def removed_activation_sites(graph: OnnxGraph) -> list[str]:
    return [OnnxGraph.node_id(n) for n in graph.nodes(*ACTIVATIONS)]


def apply_removed_activation(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, removed_activation_sites)
    producer = graph.producer(node.input[0])
    before = OnnxGraph.node_id(producer) if producer is not None else node.input[0]
    graph.remove(node)
    return Change(f"{node.op_type} {site} after {before} removed", {})


def extra_op_sites(graph: OnnxGraph) -> list[str]:
    """Linear layers (conv, dense, add, BN) whose output no activation reads: their output goes negative."""
    def unactivated(node) -> bool:
        return not any(c.op_type in ANY_ACTIVATION for c in graph.consumers(node.output[0]))

    return [OnnxGraph.node_id(n) for n in graph.nodes(*LINEAR_PRODUCERS) if unactivated(n)]


def apply_extra_op(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, extra_op_sites)
    chain = graph.insert_after(node.output[0], lambda src, dst: [graph.make_node("Relu", [src], dst, site)])
    return Change(f"extra Relu {chain[0].name} inserted after {node.op_type} {site}", {})


def relu6_to_relu_sites(graph: OnnxGraph) -> list[str]:
    """Clips that are ReLU-N (min 0, finite max), the activation converters substitute with a plain ReLU."""
    return [OnnxGraph.node_id(n) for n in graph.nodes("Clip") if _is_relu_n(graph, n)]


def _is_relu_n(graph: OnnxGraph, node) -> bool:
    low, high = clip_bounds(graph, node)
    return low == 0 and high is not None


def apply_relu6_to_relu(graph: OnnxGraph, site: str, params: dict) -> Change:
    node = site_node(graph, site, relu6_to_relu_sites)
    low, high = clip_bounds(graph, node)
    node.op_type = "Relu"
    del node.input[1:]
    del node.attribute[:]
    return Change(f"Clip {site} (ReLU{high:g}) replaced by Relu", {"old_max": high})
