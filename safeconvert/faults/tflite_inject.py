"""Plant one fault kind into a TFLite model: the registry of TFLite injectors, site listing and the checked write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_bytes_atomically
from . import tflite_activations as activations
from . import tflite_hyper as hyper
from . import tflite_insert as insert
from .fault import Change
from .tflite_check import refresh_shapes, run_once, still_runs, verify
from .tflite_model import TfliteGraph
from .tflite_weights import apply_weights, weight_sites


@dataclass(frozen=True)
class TfliteInjector:
    """Where a kind can be planted and how; resizes: sites found by trial, stored shapes recomputed after."""

    sites: Callable[[TfliteGraph], list[str]]
    apply: Callable[[TfliteGraph, str, dict], Change]
    resizes: bool = False


def _weights(kind: str) -> TfliteInjector:
    return TfliteInjector(lambda g: weight_sites(g, kind), lambda g, s, p: apply_weights(g, s, kind, p))


INJECTORS: dict[str, TfliteInjector] = {
    "fp16_weights": _weights("fp16_weights"),
    "int8_weights": _weights("int8_weights"),
    "transposed_kernel": _weights("transposed_kernel"),
    "pads_dropped": TfliteInjector(hyper.pads_dropped_sites, hyper.apply_pads_dropped, resizes=True),
    "pads_shifted": TfliteInjector(hyper.pads_shifted_sites, hyper.apply_pads_shifted),
    "stride": TfliteInjector(hyper.stride_sites, hyper.apply_stride, resizes=True),
    "dilation": TfliteInjector(hyper.dilation_sites, hyper.apply_dilation, resizes=True),
    "clip_bounds": TfliteInjector(activations.clip_bounds_sites, activations.apply_clip_bounds),
    "removed_activation": TfliteInjector(activations.removed_activation_sites, activations.apply_removed_activation),
    "extra_op": TfliteInjector(activations.extra_op_sites, activations.apply_extra_op),
    "relu6_to_relu": TfliteInjector(activations.relu6_to_relu_sites, activations.apply_relu6_to_relu),
    "flatten_order": TfliteInjector(insert.flatten_order_sites, insert.apply_flatten_order),
    "layout_reinterpret": TfliteInjector(insert.layout_reinterpret_sites, insert.apply_layout_reinterpret),
    "nchw_reinterpret": TfliteInjector(insert.input_sites, insert.apply_nchw_reinterpret),
    "hw_swap": TfliteInjector(insert.hw_swap_sites, insert.apply_hw_swap),
    "input_scale": TfliteInjector(insert.input_sites, insert.apply_input_scale),
    "channel_order": TfliteInjector(insert.input_sites, insert.apply_channel_order),
}


def tflite_sites(path: Path, kind: str) -> list[str]:
    """Candidate layers in operator order; for resizing kinds, only those where the model still runs."""
    graph = TfliteGraph.load(path)
    injector = INJECTORS[kind]
    candidates = injector.sites(graph)
    if not injector.resizes or not candidates:
        return candidates
    expected = run_once(graph)
    return [site for site in candidates if _runs_with(graph, injector, site, expected)]


def _runs_with(graph: TfliteGraph, injector: TfliteInjector, site: str, expected: list) -> bool:
    probe = graph.copy()
    injector.apply(probe, site, {})
    return still_runs(probe, expected)


def tflite_inject(path: Path, out: Path, kind: str, site: str, params: dict) -> Change:
    """Plant `kind` at `site`, make stored shapes consistent, check LiteRT runs it, write it."""
    graph = TfliteGraph.load(path)
    expected = run_once(graph)
    injector = INJECTORS[kind]
    change = injector.apply(graph, site, params)
    if injector.resizes:
        _refresh(graph)
    verify(graph, expected)
    write_bytes_atomically(Path(out), graph.serialize())
    return change


def _refresh(graph: TfliteGraph) -> None:
    from ..errors import one_line
    from .fault import FaultNotApplicableError

    try:
        refresh_shapes(graph)
    except Exception as exc:
        raise FaultNotApplicableError(f"the injected TFLite model does not run: {one_line(exc)}") from None
