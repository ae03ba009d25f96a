"""Plant one fault kind into an ONNX model: the registry of ONNX injectors, site listing and the checked write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_bytes_atomically
from . import onnx_hyper as hyper
from . import onnx_input as inputs
from . import onnx_ops as ops
from . import onnx_structure as structure
from .fault import Change
from .onnx_check import run_once, still_runs, verify
from .onnx_graph import OnnxGraph
from .onnx_weights import apply_weights, weight_sites


@dataclass(frozen=True)
class OnnxInjector:
    """Where a kind can be planted and how.

    resizes: the edit changes a feature map's size, so candidate sites are kept only where the whole model
    still runs with the clean model's output shapes, and recorded intermediate shapes are dropped.
    """

    sites: Callable[[OnnxGraph], list[str]]
    apply: Callable[[OnnxGraph, str, dict], Change]
    resizes: bool = False


def _weights(kind: str) -> OnnxInjector:
    return OnnxInjector(lambda g: weight_sites(g, kind), lambda g, s, p: apply_weights(g, s, kind, p))


INJECTORS: dict[str, OnnxInjector] = {
    "fp16_weights": _weights("fp16_weights"),
    "int8_weights": _weights("int8_weights"),
    "transposed_kernel": _weights("transposed_kernel"),
    "pads_dropped": OnnxInjector(hyper.pads_dropped_sites, hyper.apply_pads_dropped, resizes=True),
    "pads_shifted": OnnxInjector(hyper.pads_shifted_sites, hyper.apply_pads_shifted),
    "stride": OnnxInjector(hyper.stride_sites, hyper.apply_stride, resizes=True),
    "dilation": OnnxInjector(hyper.dilation_sites, hyper.apply_dilation),
    "bn_epsilon": OnnxInjector(hyper.bn_epsilon_sites, hyper.apply_bn_epsilon),
    "ceil_mode": OnnxInjector(hyper.ceil_mode_sites, hyper.apply_ceil_mode, resizes=True),
    "count_include_pad": OnnxInjector(hyper.count_include_pad_sites, hyper.apply_count_include_pad),
    "clip_bounds": OnnxInjector(hyper.clip_bounds_sites, hyper.apply_clip_bounds),
    "removed_activation": OnnxInjector(ops.removed_activation_sites, ops.apply_removed_activation),
    "extra_op": OnnxInjector(ops.extra_op_sites, ops.apply_extra_op),
    "relu6_to_relu": OnnxInjector(ops.relu6_to_relu_sites, ops.apply_relu6_to_relu),
    "flatten_order": OnnxInjector(structure.flatten_order_sites, structure.apply_flatten_order),
    "layout_reinterpret": OnnxInjector(structure.layout_reinterpret_sites, structure.apply_layout_reinterpret),
    "nchw_reinterpret": OnnxInjector(inputs.input_sites, inputs.apply_nchw_reinterpret),
    "hw_swap": OnnxInjector(inputs.hw_swap_sites, inputs.apply_hw_swap),
    "input_scale": OnnxInjector(inputs.input_sites, inputs.apply_input_scale),
    "channel_order": OnnxInjector(inputs.input_sites, inputs.apply_channel_order),
}


def onnx_sites(path: Path, kind: str) -> list[str]:
    """Candidate layers in graph order; for resizing kinds, only those where the model still runs."""
    graph = OnnxGraph.load(path)
    injector = INJECTORS[kind]
    candidates = injector.sites(graph)
    if not injector.resizes or not candidates:
        return candidates
    expected = run_once(graph)
    return [site for site in candidates if _runs_with(graph, injector, site, expected)]


def _runs_with(graph: OnnxGraph, injector: OnnxInjector, site: str, expected: list) -> bool:
    probe = graph.copy()
    injector.apply(probe, site, {})
    probe.drop_value_info()
    return still_runs(probe, expected)


def onnx_inject(path: Path, out: Path, kind: str, site: str, params: dict) -> Change:
    """Plant `kind` at `site`, check the result with the ONNX checker and ONNX Runtime, write it."""
    graph = OnnxGraph.load(path)
    expected = run_once(graph)
    injector = INJECTORS[kind]
    change = injector.apply(graph, site, params)
    if injector.resizes:
        graph.drop_value_info()
    verify(graph, expected)
    write_bytes_atomically(Path(out), graph.serialize())
    return change
