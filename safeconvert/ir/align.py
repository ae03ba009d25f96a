"""Align the layer sequences of a source and a target model.

A converter may insert, drop, fuse or substitute ops, so layer i of one model is not layer i of the other.
A sequence alignment on (kind, weight shape) — difflib's longest-matching-blocks — pairs what corresponds
and leaves insertions/removals unmatched, which is exactly the CG evidence (a missing Relu, an extra Pad).
Inside a block the keys disagree on, layers of the same kind are still paired (flagged `exact=False`):
a transposed dense kernel changes the weight shape but is still "the same layer" with a WB fault.
Only layers whose role is in `roles` take part (by default "compute": layout-only transposes and unit
reshapes differ legitimately between NCHW and NHWC models).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from .layers import Layer


@dataclass(frozen=True)
class LayerPair:
    """A source layer and the target layer it corresponds to; exact=False when their keys differ."""

    source: Layer
    target: Layer
    exact: bool = True


@dataclass
class Alignment:
    """The result of aligning two layer lists.

    pairs: matched layers, in order. source_only/target_only: layers without a counterpart (CG evidence).
    """

    pairs: list[LayerPair] = field(default_factory=list)
    source_only: list[Layer] = field(default_factory=list)
    target_only: list[Layer] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when every layer found an exact counterpart."""
        return not self.source_only and not self.target_only and all(p.exact for p in self.pairs)

    def pair_of_source(self, layer_index: int) -> LayerPair | None:
        return next((p for p in self.pairs if p.source.index == layer_index), None)

    def pair_of_target(self, layer_index: int) -> LayerPair | None:
        return next((p for p in self.pairs if p.target.index == layer_index), None)

    def neighbours(self, layer: Layer, side: str = "source") -> tuple[LayerPair | None, LayerPair | None]:
        """The matched pairs just before and just after an unmatched layer (where to insert/remove)."""
        position = layer.index
        before = after = None
        for pair in self.pairs:
            own = pair.source if side == "source" else pair.target
            if own.index < position:
                before = pair
            elif own.index > position and after is None:
                after = pair
        return before, after


def align_layers(source: list[Layer], target: list[Layer], roles: tuple[str, ...] = ("compute",)) -> Alignment:
    """Align two layer lists (see the module docstring)."""
    src = [layer for layer in source if layer.role in roles]
    tgt = [layer for layer in target if layer.role in roles]
    result = Alignment()
    matcher = difflib.SequenceMatcher(None, [l.key for l in src], [l.key for l in tgt], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            result.pairs.extend(LayerPair(s, t, True) for s, t in zip(src[i1:i2], tgt[j1:j2]))
        elif tag == "delete":
            result.source_only.extend(src[i1:i2])
        elif tag == "insert":
            result.target_only.extend(tgt[j1:j2])
        else:
            _align_by_kind(src[i1:i2], tgt[j1:j2], result)
    result.pairs.sort(key=lambda p: p.source.index)
    result.source_only.sort(key=lambda l: l.index)
    result.target_only.sort(key=lambda l: l.index)
    return result


def _align_by_kind(src: list[Layer], tgt: list[Layer], result: Alignment) -> None:
    """Inside a mismatched block, pair layers of the same kind (weight shapes differ: not exact)."""
    matcher = difflib.SequenceMatcher(None, [l.kind for l in src], [l.kind for l in tgt], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            result.pairs.extend(LayerPair(s, t, False) for s, t in zip(src[i1:i2], tgt[j1:j2]))
        else:
            result.source_only.extend(src[i1:i2])
            result.target_only.extend(tgt[j1:j2])
