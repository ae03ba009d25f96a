"""Fused-activation faults in TFLite (CG, and LH for clip_bounds).

TFLite fuses activations into the producing op, so a removed activation is a fused activation set to NONE,
an extra ReLU is NONE set to RELU, and a ReLU6 substituted by a ReLU is RELU6 set to RELU. They are filed as
CG, like their ONNX counterparts, because they change which ops the graph computes, although the field lives
in the producer's options. clip_bounds reads a fused RELU6 as RELU_N1_TO_1: the op stays an activation with
other bounds ([0, 6] -> [-1, 1]), a hyperparameter change, so it is LH like the ONNX Clip bounds.
"""

from __future__ import annotations

from .fault import Change
from .tflite_model import TfliteGraph, site_op

NONE, RELU, RELU_N1_TO_1, RELU6 = 0, 1, 2, 3
ACTIVATION_NAMES = {NONE: "NONE", RELU: "RELU", RELU_N1_TO_1: "RELU_N1_TO_1", RELU6: "RELU6"}
FUSING_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD")

def _fused(graph: TfliteGraph, activations: tuple[int, ...]) -> list[str]:
    ops = [op for op in graph.ops(*FUSING_OPS) if op.builtinOptions is not None
           and getattr(op.builtinOptions, "fusedActivationFunction", None) in activations]
    return [graph.op_name(op) for op in ops]


def _set_fused(graph: TfliteGraph, site: str, sites, new: int, what: str) -> Change:
    op = site_op(graph, site, sites)
    old = op.builtinOptions.fusedActivationFunction
    op.builtinOptions.fusedActivationFunction = new
    description = f"{graph.op_type(op)} {site}: {what} (fused {ACTIVATION_NAMES[old]} -> {ACTIVATION_NAMES[new]})"
    return Change(description, {"old_activation": old, "new_activation": new})


def clip_bounds_sites(graph: TfliteGraph) -> list[str]:
    return _fused(graph, (RELU6,))


def apply_clip_bounds(graph: TfliteGraph, site: str, params: dict) -> Change:
    return _set_fused(graph, site, clip_bounds_sites, RELU_N1_TO_1, "ReLU6 bounds [0, 6] read as [-1, 1]")


def removed_activation_sites(graph: TfliteGraph) -> list[str]:
    return _fused(graph, (RELU, RELU_N1_TO_1, RELU6))


def apply_removed_activation(graph: TfliteGraph, site: str, params: dict) -> Change:
    return _set_fused(graph, site, removed_activation_sites, NONE, "activation removed")


def extra_op_sites(graph: TfliteGraph) -> list[str]:
    return _fused(graph, (NONE,))


def apply_extra_op(graph: TfliteGraph, site: str, params: dict) -> Change:
    return _set_fused(graph, site, extra_op_sites, RELU, "extra ReLU after a linear layer")


def relu6_to_relu_sites(graph: TfliteGraph) -> list[str]:
    return _fused(graph, (RELU6,))


def apply_relu6_to_relu(graph: TfliteGraph, site: str, params: dict) -> Change:
    return _set_fused(graph, site, relu6_to_relu_sites, RELU, "ReLU6 replaced by ReLU")
