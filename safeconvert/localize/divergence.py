"""Activation stage: run both models on a few images with every aligned layer's output exposed, and find
where the target starts to diverge from the source. Also recognises a flatten/reshape that reads the
right values in the wrong order (TSS): the target's activation is then a permutation of the source's."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .findings import Category, Finding, RepairProposal
from .static import target_nodes


@dataclass
class LayerError:
    """Relative error of the target's activation vs the source's at one aligned pair."""

    source_layer: str
    target_layer: str
    kind: str
    error: float
    source_index: int
    target_index: int


@dataclass
class Divergence:
    """Per aligned layer errors in execution order, and the first layer where the error jumps."""

    layers: list[LayerError] = field(default_factory=list)
    first: int | None = None  # index into `layers`
    images: list[str] = field(default_factory=list)

    @property
    def first_layer(self) -> LayerError | None:
        return self.layers[self.first] if self.first is not None else None

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "first_divergent": self.first,
            "layers": [vars(layer) for layer in self.layers],
        }


def in_layout(batch_nhwc: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(batch_nhwc if layout == "NHWC" else batch_nhwc.transpose(0, 3, 1, 2), dtype=np.float32)


def trace(ir_pair, batch_nhwc: np.ndarray) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Every aligned layer's activations in both models for one canonical NHWC batch."""
    pairs = ir_pair.alignment.pairs
    src = ir_pair.source.run_taps(in_layout(batch_nhwc, ir_pair.source.input_layout), [p.source.index for p in pairs])
    tgt = ir_pair.target.run_taps(in_layout(batch_nhwc, ir_pair.target.input_layout), [p.target.index for p in pairs])
    return src, tgt


def measure_divergence(ir_pair, source_acts: dict, target_acts: dict, images: list[str]) -> Divergence:
    from ..ir import first_divergence, relative_error

    layers = []
    for pair in ir_pair.alignment.pairs:
        error = relative_error(source_acts[pair.source.index], target_acts[pair.target.index])
        layers.append(LayerError(pair.source.name, pair.target.name, pair.source.kind, float(error),
                                 pair.source.index, pair.target.index))
    return Divergence(layers, first_divergence([layer.error for layer in layers]), images)


def permutation_findings(ir_pair, divergence: Divergence, source_acts: dict, target_acts: dict) -> list[Finding]:
    """TSS: at the first diverging layer, is the target's tensor the source's, reordered?"""
    first = divergence.first_layer
    if first is None:
        return []
    pair = ir_pair.alignment.pair_of_source(first.source_index)
    for candidate in _layer_and_inputs(ir_pair, pair):
        found = _permutation(source_acts.get(candidate.source.index), target_acts.get(candidate.target.index))
        if found is not None:
            return [_reorder_finding(ir_pair, candidate, found)]
    return []


def _layer_and_inputs(ir_pair, pair) -> list:
    """The diverging pair and the aligned pairs feeding it (a reshape absorbed elsewhere shows one layer later)."""
    feeding = [ir_pair.alignment.pair_of_target(i) for i in pair.target.inputs if i >= 0]
    return [pair] + [p for p in feeding if p is not None]


def _permutation(source: np.ndarray | None, target: np.ndarray | None) -> np.ndarray | None:
    """Indices p with target.reshape(n, -1)[:, p] == source (per image), or None when not a reordering."""
    if source is None or target is None or source.size != target.size or source.ndim < 2:
        return None
    src = source.reshape(len(source), -1)
    tgt = target.reshape(len(target), -1)
    if np.allclose(src, tgt, rtol=1e-4, atol=1e-6 * (np.abs(src).max() or 1.0)):
        return None
    scale = np.abs(src).max() or 1.0
    if not np.allclose(np.sort(src, axis=1), np.sort(tgt, axis=1), rtol=1e-4, atol=1e-5 * scale):
        return None
    # Map each source position to the target position holding the same value (ties broken by the first image
    # whose values are distinct enough), then check the mapping on every image.
    order = np.empty(src.shape[1], dtype=np.int64)
    order[np.argsort(src[0], kind="stable")] = np.argsort(tgt[0], kind="stable")
    if np.allclose(tgt[:, order], src, rtol=1e-4, atol=1e-5 * scale):
        return order
    return None


def _reorder_finding(ir_pair, pair, order: np.ndarray) -> Finding:
    consumers = [layer for layer in ir_pair.target.layers if pair.target.index in layer.inputs and layer.role == "compute"]
    consumer = consumers[0] if consumers else None
    return Finding(
        category=Category.TSS,
        summary=f"{pair.target.kind} output holds the source's values in another order "
                f"(e.g. flattened channels-last vs channels-first); the next layer reads them wrongly",
        source_layer=pair.source.name,
        target_layer=pair.target.name,
        evidence={"source_index": pair.source.index, "target_index": pair.target.index,
                  "elements": int(order.size), "moved": int(np.sum(order != np.arange(order.size)))},
        repair=RepairProposal("permute_features", {
            "indices": order,
            "consumer": target_nodes(consumer) if consumer is not None else None,
            "producer": target_nodes(pair.target),
        }),
    )
