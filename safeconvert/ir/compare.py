"""Numeric comparison primitives shared by the localisation stages.

Kept small and exact: the stages (WB, LH, CG/TSS, divergence) decide what a difference means; this module
only measures. Relative errors are max|a - b| / max|a| — strict, and scale-free across layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .align import Alignment, LayerPair

WEIGHT_TOLERANCE = 1e-5  # effective parameters of two correct conversions agree far better than this
DIVERGENCE_FLOOR = 1e-4  # float32 noise on clean MobileNetV2 stays below 1.9e-5 at every layer
DIVERGENCE_JUMP = 10.0  # a fault multiplies the error; noise only creeps up with depth


def relative_error(reference: np.ndarray, other: np.ndarray, scale: float | None = None) -> float:
    """max|reference - other| / max|reference| (inf when shapes cannot be matched).

    `scale` replaces max|reference| as the denominator (e.g. a bias measured against its weights).
    """
    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        other = match_layout(other, reference.shape)
        if other is None:
            return math.inf
    if scale is None:
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    diff = float(np.max(np.abs(reference - other))) if reference.size else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def match_layout(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """`array` brought to `shape` by an NHWC<->NCHW transpose or a unit-dimension reshape, else None."""
    shape = tuple(shape)
    if array.ndim == 4 and len(shape) == 4:
        for axes in ((0, 3, 1, 2), (0, 2, 3, 1)):
            if tuple(array.shape[a] for a in axes) == shape:
                return array.transpose(axes)
    if [d for d in array.shape if d != 1] == [d for d in shape if d != 1]:
        return array.reshape(shape)
    return None


@dataclass
class PairDiff:
    """How two aligned layers differ statically.

    params: relative error of each effective parameter present on both sides (inf on shape mismatch).
    missing_params: parameters only one side has. attrs: attribute -> (source value, target value).
    """

    pair: LayerPair
    params: dict[str, float] = field(default_factory=dict)
    missing_params: tuple[str, ...] = ()
    attrs: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def weight_differs(self, tolerance: float = WEIGHT_TOLERANCE) -> bool:
        return bool(self.missing_params) or any(err > tolerance for err in self.params.values())

    def attrs_differ(self) -> bool:
        return bool(self.attrs)

    def differs(self, tolerance: float = WEIGHT_TOLERANCE) -> bool:
        return self.weight_differs(tolerance) or self.attrs_differ()


def diff_pair(pair: LayerPair) -> PairDiff:
    """Compare the effective parameters and attributes of one aligned pair."""
    src, tgt = pair.source, pair.target
    result = PairDiff(pair)
    for name in sorted(set(src.params) | set(tgt.params)):
        if name not in src.params or name not in tgt.params:
            result.missing_params += (name,)
            continue
        a, b = src.params[name], tgt.params[name]
        scale = None
        if name in ("bias", "shift") and not np.any(a):  # a zero bias: measure against the weights
            companion = src.params.get("weight", src.params.get("scale"))
            scale = float(np.max(np.abs(companion))) if companion is not None else None
        result.params[name] = relative_error(a, b, scale=scale) if a.shape == b.shape else math.inf
    for name in sorted(set(src.attrs) | set(tgt.attrs)):
        a, b = src.attrs.get(name), tgt.attrs.get(name)
        if name == "pad_width" and a is not None:
            a = _pads_in_target_order(a, src.in_shape, tgt.in_shape)
        if not _same_value(a, b):
            result.attrs[name] = (a, b)
    return result


def _pads_in_target_order(pads, source_shape, target_shape):
    """A standalone pad that layout conversion left channels-last (before a pool, say) lists its per-axis
    pads in NHWC order while the other side's are NCHW: reorder them by matching the input shapes' axes
    (equal extents keep their order, so H stays before W)."""
    if source_shape is None or target_shape is None or len(pads) != 2 * len(source_shape) \
            or sorted(source_shape) != sorted(target_shape) or tuple(source_shape) == tuple(target_shape):
        return pads
    unused = list(range(len(source_shape)))
    order = []
    for extent in target_shape:
        axis = next(j for j in unused if source_shape[j] == extent)
        unused.remove(axis)
        order.append(axis)
    return type(pads)(v for axis in order for v in pads[2 * axis:2 * axis + 2])


def diff_alignment(alignment: Alignment, tolerance: float = WEIGHT_TOLERANCE) -> list[PairDiff]:
    """The aligned pairs that differ in parameters (beyond tolerance) or attributes, in order."""
    diffs = [diff_pair(pair) for pair in alignment.pairs]
    return [d for d in diffs if d.differs(tolerance)]


def _same_value(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9) or (math.isinf(float(a)) and a == b)
        except (TypeError, ValueError):
            return False
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b


def first_divergence(errors: Sequence[float], floor: float = DIVERGENCE_FLOOR, jump: float = DIVERGENCE_JUMP) -> int | None:
    """Index of the first error above `floor` AND at least `jump` x the largest error before it.

    float32 noise grows slowly with depth, so a fixed threshold alone fires late in deep clean models;
    a fault shows as a step. Returns None when nothing diverges.
    """
    largest = 0.0
    for index, error in enumerate(errors):
        if error > floor and error >= jump * largest:
            return index
        if not math.isnan(error):
            largest = max(largest, error)
    return None
