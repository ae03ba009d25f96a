"""Compare source and target outputs on the same images: label agreement and numeric closeness.

Every output of the model is compared (`compare_all`): a detector's box head counts as much as its logits.
Outputs are matched between source and target by name, else by position, else by a unique shape
(`match_outputs`); each gets its own metrics and its own robust scale (`robust_scale`).

Non-finite values (NaN, +inf, -inf) are compared by pattern, not by arithmetic: `inf - inf` is NaN and every
comparison with NaN is false, so a difference taken through them would let anything pass. The target must be
non-finite exactly where the source is (NaN for NaN, the same sign of inf, finite where the source is finite:
`nonfinite_mismatches`); the numbers are compared where both are finite, on a scale taken from the source's
finite values. An output the source gives no finite value for cannot be checked numerically at all
(`source_finite_values` 0): the verdict then fails and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import warnings

import numpy as np

# Below this source top-1/top-2 logit margin a label flip can come from float noise alone.
NEAR_TIE_MARGIN = 1e-3

# When the calibration images do not vary (identical images), an output's scale falls back to a robust range
# within each image: twice this percentile of |x - median(x)|. A percentile, not max - min: a class masked
# with -1e9 is one value out of many and must not set the scale (up to a quarter of the values may be such).
FALLBACK_SPREAD_PERCENTILE = 75

# Per-position check: each value's move is judged against its own spread across images, floored at this share
# of its output's scale (a value that hardly varies is then held to a tenth of the output-level tolerance,
# not to zero: float noise on it stays acceptable). It catches one output holding values of very different
# sizes, where the output's scale is set by the largest part.
POSITION_SCALE_FLOOR = 0.1


@dataclass
class Disagreement:
    """One image whose top-1 label differs between source and target."""

    image: str
    source_label: int
    target_label: int
    source_top5: list[int]
    target_top5: list[int]
    source_margin: float  # source top-1 minus top-2 score: small means the source itself hesitates
    image_index: int = -1  # position in the calibration set (a .npy row when there is no file)
    image_path: str | None = None  # absolute path of the photo, so a report can show it later
    image_max_abs_diff: float = 0.0  # max |target - source| over this image's values: how far the target moved


@dataclass
class OutputMetrics:
    """One output of the model compared on its own: its numbers judged against its own scale."""

    name: str  # the source's name for it
    target_name: str  # the target's name for it (converters rename outputs)
    values: int  # values per image
    max_abs_diff: float
    mean_abs_diff: float
    scale: float  # robust scale of the source's values (see robust_scale)
    relative_max_diff: float  # max_abs_diff / scale
    min_cosine: float  # the worst image's cosine similarity, on values centred as robust_scale centres them
    top1_mismatches: int
    shape_matches: bool = True
    source_finite_values: int = -1  # source values that are finite (0: nothing can be compared numerically)
    nonfinite_mismatches: int = 0  # values where the target's NaN/inf pattern differs from the source's
    position_relative_diff: float = 0.0  # worst value's |diff| over its own spread across images (see position_spread)
    worst_position: int = -1  # that value's index within an image (flattened)
    single_image_relative_diff: float | None = None  # target run one image at a time vs batched, over the scale


@dataclass
class Metrics:
    """How far the target's outputs are from the source's over a calibration set."""

    images: int
    top1_agreement: float
    top1_mismatches: int
    top5_agreement: float  # share of images whose top-5 label sets are identical
    max_abs_diff: float
    mean_abs_diff: float
    cosine_similarity: float  # mean over images
    source_output_range: float
    output_shape_matches: bool = True
    output_size: int | None = None  # values per image (1000 for ImageNet classifiers): whether labels have names
    disagreements: list[Disagreement] = field(default_factory=list)
    source_scale: float = 0.0  # robust scale of the first output (see robust_scale); rtol is relative to it
    min_cosine: float = 1.0  # the first output's worst image (centred values, see robust_scale)
    outputs: list[OutputMetrics] = field(default_factory=list)  # every output, the first (these fields) included
    output_matching: str = "position"  # how target outputs were paired with the source's: name | position | shape
    unmatched_outputs: str | None = None  # why the outputs could not be paired (then nothing is verified)
    source_finite_values: int = -1  # of the first output (see OutputMetrics)
    nonfinite_mismatches: int = 0  # of the first output (see OutputMetrics)
    position_relative_diff: float = 0.0  # of the first output (see OutputMetrics)
    worst_position: int = -1
    worst_image: int = -1  # the image where the target moved most relative to each output's scale
    worst_image_relative: float = 0.0  # that move, as a share of the scale (inf: a NaN/inf pattern differs)
    single_images: list[int] = field(default_factory=list)  # images also run through the target one at a time

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def relative_max_diff(self) -> float:
        return relative(self.max_abs_diff, self.source_scale)


def relative(diff: float, scale: float) -> float:
    """A difference as a share of a scale (a scale of zero allows no difference at all)."""
    return diff / scale if scale > 0 else float(diff > 0)


def robust_scale(source: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre, scale) of one output's source values, (images, values): what "relative" means for it.

    The scale is the median over images of each image's largest deviation from the centre, where the
    centre of each value is its median over the calibration images. Why not the range (max - min) of the
    outputs: a head that masks a class with `logits + (-1e9)` has a range of 1e9, so any tolerance relative
    to it allows everything. Centring each value on its own median across images removes such constants
    (and any fixed offset) because they do not vary; what remains is how much the outputs move from image
    to image, the size a fault has to be compared with. The largest deviation per image keeps sparse
    outputs (a softmax, whose mass sits in one value per image) at their real size, where a percentile
    over all values would see only the near-zero rest; the median over images keeps one odd image from
    setting the scale.

    Only distinct images count: identical rows (one photo repeated) would otherwise make the median
    deviation zero. Only finite values count (NaN/inf are compared by pattern, see the module docstring).
    With fewer than two distinct images, or outputs that do not vary, nothing tells a constant from a
    value: the scale is then a robust range within each image, twice the FALLBACK_SPREAD_PERCENTILE-th
    percentile of |x - median(x)| (median over images), so a masking constant still does not set it.
    """
    values = source.reshape(len(source), -1).astype(np.float64)
    if values.size == 0:
        return np.zeros((1, values.shape[1] if values.ndim == 2 else 0)), 0.0
    values = np.where(np.isfinite(values), values, np.nan)
    if np.isnan(values).all():
        return np.full((1, values.shape[1]), np.nan), 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: values the source never gives finite
        distinct = distinct_rows(values)
        if len(distinct) >= 2:
            centre = np.nanmedian(distinct, axis=0, keepdims=True)
            scale = float(np.nanmedian(np.nanmax(np.abs(distinct - centre), axis=1)))
            if scale > 0:
                return centre, scale
        centre = np.nanmedian(values, axis=1, keepdims=True)
        spread = np.nanpercentile(np.abs(distinct - np.nanmedian(distinct, axis=1, keepdims=True)),
                                  FALLBACK_SPREAD_PERCENTILE, axis=1, method="lower")
        scale = 2.0 * float(np.nanmedian(spread))
    return centre, scale if np.isfinite(scale) else 0.0


def distinct_rows(values: np.ndarray) -> np.ndarray:
    """The rows of (images, values) with repeats removed (NaN rows compare equal to each other here)."""
    if len(values) < 2:
        return values
    key = np.where(np.isnan(values), np.inf, values)
    _, first = np.unique(key, axis=0, return_index=True)
    return values[np.sort(first)]


def position_spread(source: np.ndarray) -> np.ndarray | None:
    """Each value's own spread across the distinct images, (values,): the median of |x - its median|.

    None with fewer than two distinct images (no spread can be seen)."""
    values = source.reshape(len(source), -1).astype(np.float64)
    values = distinct_rows(np.where(np.isfinite(values), values, np.nan))
    if len(values) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanmedian(np.abs(values - np.nanmedian(values, axis=0, keepdims=True)), axis=0)
    return np.nan_to_num(spread, nan=0.0)


def nonfinite_mismatch(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Where the target's NaN/inf pattern differs from the source's: NaN must meet NaN, inf the same inf, and
    a finite source value a finite target value."""
    same = (src == tgt) | (np.isnan(src) & np.isnan(tgt))
    return (~np.isfinite(src) | ~np.isfinite(tgt)) & ~same


def compare_outputs(source: np.ndarray, target: np.ndarray, names: list[str], paths: list | None = None) -> Metrics:
    """Metrics of target vs source outputs (one row per image, any trailing shape).

    paths (one per image, when the images are files) are recorded with each disagreement, so a report
    written later can show the photos whose label changed.
    """
    src = source.reshape(len(source), -1).astype(np.float64)
    tgt = target.reshape(len(target), -1).astype(np.float64)
    if src.shape != tgt.shape:
        return _shape_mismatch(src, tgt)
    if src.shape[1] == 0:
        return _empty(src)
    src_ranked, tgt_ranked = _for_ranking(src), _for_ranking(tgt)
    src_order, tgt_order = np.argsort(-src_ranked, axis=1, kind="stable"), np.argsort(-tgt_ranked, axis=1, kind="stable")
    src_top1, tgt_top1 = src_order[:, 0], tgt_order[:, 0]
    k = min(5, src.shape[1])
    same_top5 = [set(a[:k]) == set(b[:k]) for a, b in zip(src_order, tgt_order)]
    both_finite = np.isfinite(src) & np.isfinite(tgt)
    with np.errstate(invalid="ignore"):  # inf - inf where both are non-finite: masked out
        diff = np.where(both_finite, np.abs(src - tgt), 0.0)
    pattern = nonfinite_mismatch(src, tgt)
    mismatched = np.flatnonzero(src_top1 != tgt_top1)
    centre, scale = robust_scale(src)
    image_diff = diff.max(axis=1)
    centred = np.where(both_finite, src - centre, 0.0), np.where(both_finite, tgt - centre, 0.0)
    image_relative = np.where(pattern.any(axis=1), np.inf, [relative(d, scale) for d in image_diff])
    position, worst_position = _position_relative(src, diff, scale)
    return Metrics(
        images=len(src),
        top1_agreement=float(np.mean(src_top1 == tgt_top1)),
        top1_mismatches=int(len(mismatched)),
        top5_agreement=float(np.mean(same_top5)),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        cosine_similarity=float(np.mean(_cosine(np.where(both_finite, src, 0.0), np.where(both_finite, tgt, 0.0)))),
        source_output_range=_finite_range(src),
        output_size=int(src.shape[1]),
        disagreements=[_disagreement(i, names, src_ranked, src_order, tgt_order, paths, float(image_diff[i]))
                       for i in mismatched],
        source_scale=scale,
        min_cosine=float(np.min(_cosine(*centred))),
        source_finite_values=int(np.isfinite(src).sum()),
        nonfinite_mismatches=int(pattern.sum()),
        position_relative_diff=position,
        worst_position=worst_position,
        worst_image=int(np.argmax(image_relative)),
        worst_image_relative=float(np.max(image_relative)),
    )


def _for_ranking(values: np.ndarray) -> np.ndarray:
    """Values to rank labels by: NaN ranks below everything (argsort would otherwise put it first)."""
    return np.where(np.isnan(values), -np.inf, values)


def _finite_range(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max() - finite.min()) if finite.size else 0.0


def _position_relative(src: np.ndarray, diff: np.ndarray, scale: float) -> tuple[float, int]:
    """The worst value's |diff| over its own spread across images (floored at POSITION_SCALE_FLOOR x scale),
    and its position; (0, -1) when no spread can be seen (fewer than two distinct images, or a zero scale)."""
    spread = position_spread(src)
    if spread is None or not scale > 0:
        return 0.0, -1
    ratio = (diff / np.maximum(spread, POSITION_SCALE_FLOOR * scale)).max(axis=0)
    worst = int(np.argmax(ratio))
    return float(ratio[worst]), worst


def source_margins(source: np.ndarray) -> np.ndarray:
    """Per-image top-1 minus top-2 score of the source model."""
    flat = source.reshape(len(source), -1)
    if flat.shape[1] < 2:
        return np.full(len(flat), np.inf)
    top2 = np.sort(flat, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _disagreement(i: int, names: list[str], src: np.ndarray, src_order: np.ndarray, tgt_order: np.ndarray,
                  paths: list | None = None, image_diff: float = 0.0) -> Disagreement:
    margin = float(src[i, src_order[i, 0]] - src[i, src_order[i, 1]]) if src.shape[1] > 1 else float("inf")
    return Disagreement(
        image=names[i],
        source_label=int(src_order[i, 0]),
        target_label=int(tgt_order[i, 0]),
        source_top5=[int(v) for v in src_order[i, :5]],
        target_top5=[int(v) for v in tgt_order[i, :5]],
        source_margin=margin,
        image_index=int(i),
        image_path=str(Path(paths[i]).resolve()) if paths else None,
        image_max_abs_diff=image_diff,
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)


def _shape_mismatch(src: np.ndarray, tgt: np.ndarray) -> Metrics:
    return Metrics(
        images=len(src),
        top1_agreement=0.0,
        top1_mismatches=len(src),
        top5_agreement=0.0,
        max_abs_diff=float("inf"),
        mean_abs_diff=float("inf"),
        cosine_similarity=0.0,
        source_output_range=_finite_range(src),
        output_shape_matches=False,
        source_scale=robust_scale(src)[1] if src.size else 0.0,
        min_cosine=0.0,
    )


def _empty(src: np.ndarray) -> Metrics:
    """Metrics of an output that holds no values per image on either side (shape [N, 0]): nothing to compare,
    which the verdict says (no label, no difference can be read from it)."""
    return Metrics(images=len(src), top1_agreement=1.0, top1_mismatches=0, top5_agreement=1.0, max_abs_diff=0.0,
                   mean_abs_diff=0.0, cosine_similarity=1.0, source_output_range=0.0, output_size=0,
                   source_finite_values=0)


def compare_all(source: list, target: list, names: list[str], paths: list | None = None) -> Metrics:
    """Metrics of every output (lists of runners.base.NamedOutput): the first source output's in the top-level
    fields (labels are read from it), every output's in `outputs`.

    When the outputs cannot be paired, nothing is compared: `unmatched_outputs` says why."""
    pairs, how, problem = match_outputs(source, target)
    if problem is not None:
        first = _shape_mismatch(_rows(source[0].values), _rows(target[0].values) if target else None)
        first.unmatched_outputs, first.output_matching = problem, how
        first.outputs = [_unpaired(out) for out in source]
        return first
    per_output = [compare_outputs(source[i].values, target[j].values, names, paths) for i, j in pairs]
    metrics = per_output[0]
    metrics.outputs = [_summary(source[i].name, target[j].name, m) for (i, j), m in zip(pairs, per_output)]
    metrics.output_matching = how
    worst = max(per_output, key=lambda m: m.worst_image_relative)
    metrics.worst_image, metrics.worst_image_relative = worst.worst_image, worst.worst_image_relative
    return metrics


def compare_single_runs(metrics: Metrics, batched: list, single: dict[int, list]) -> None:
    """Record how far the target's outputs on some images run alone (batch of one; `single` by image index)
    are from its batched outputs on them, per output, as a share of that output's scale.

    A target whose numbers depend on the batch (batch statistics left in, a batch-size branch) can agree
    with the source in batches and not one image at a time, which is how most deploy it."""
    by_name = {o.name: o for o in batched}
    metrics.single_images = sorted(single)
    for output in metrics.outputs:
        if output.target_name not in by_name or not output.shape_matches or output.values == 0:
            continue
        worst = 0.0
        for index, outputs in single.items():
            alone = next((o for o in outputs if o.name == output.target_name), None)
            together = _rows(by_name[output.target_name].values[index:index + 1])
            if alone is None or _rows(alone.values).shape != together.shape:
                worst = float("inf")
                continue
            alone_rows = _rows(alone.values)
            if nonfinite_mismatch(together, alone_rows).any():
                worst = float("inf")
                continue
            both = np.isfinite(together) & np.isfinite(alone_rows)
            with np.errstate(invalid="ignore"):
                moved = float(np.where(both, np.abs(together - alone_rows), 0.0).max())
            worst = max(worst, relative(moved, output.scale))
        output.single_image_relative_diff = worst


def match_outputs(source: list, target: list) -> tuple[list[tuple[int, int]], str, str | None]:
    """Pair each source output with a target output: (pairs of indices, how, why not).

    By name when both sides use the same names; else by position when every position agrees in values per
    image (or there is a single output: its shape is then judged like any other); else by shape when each
    source output has exactly one target output of its size (TFLite may reorder outputs and converters
    rename them). Anything else is not guessed: the verdict fails and says why."""
    if len(source) != len(target):
        return [], "none", (f"the target has {len(target)} output(s), the source {len(source)}: "
                            f"{_describe(source)} vs {_describe(target)}")
    src_names, tgt_names = [o.name for o in source], [o.name for o in target]
    if len(set(src_names)) == len(src_names) and set(src_names) == set(tgt_names):
        return [(i, tgt_names.index(name)) for i, name in enumerate(src_names)], "name", None
    sizes = [_size(o) for o in source], [_size(o) for o in target]
    if len(source) == 1 or sizes[0] == sizes[1]:
        return [(i, i) for i in range(len(source))], "position", None
    candidates = [[j for j, size in enumerate(sizes[1]) if size == wanted] for wanted in sizes[0]]
    if all(len(c) == 1 for c in candidates) and len({c[0] for c in candidates}) == len(candidates):
        return [(i, c[0]) for i, c in enumerate(candidates)], "shape", None
    return [], "none", (f"the target's outputs cannot be paired with the source's (names differ, positions disagree "
                        f"in shape, and shapes do not pair uniquely): {_describe(source)} vs {_describe(target)}")


def _size(output) -> int:
    return int(np.prod(np.shape(output.values)[1:], dtype=np.int64))


def _describe(outputs: list) -> str:
    return ", ".join(f"{o.name}{list(np.shape(o.values)[1:])}" for o in outputs) or "none"


def _rows(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(len(values), -1)


def _summary(name: str, target_name: str, m: Metrics) -> OutputMetrics:
    return OutputMetrics(name=name, target_name=target_name, values=int(m.output_size or 0),
                         max_abs_diff=m.max_abs_diff, mean_abs_diff=m.mean_abs_diff, scale=m.source_scale,
                         relative_max_diff=m.relative_max_diff if m.output_shape_matches else float("inf"),
                         min_cosine=m.min_cosine, top1_mismatches=m.top1_mismatches,
                         shape_matches=m.output_shape_matches, source_finite_values=m.source_finite_values,
                         nonfinite_mismatches=m.nonfinite_mismatches, position_relative_diff=m.position_relative_diff,
                         worst_position=m.worst_position)


def _unpaired(output) -> OutputMetrics:
    return OutputMetrics(name=output.name, target_name="", values=_size(output), max_abs_diff=float("inf"),
                         mean_abs_diff=float("inf"), scale=robust_scale(_rows(output.values))[1],
                         relative_max_diff=float("inf"), min_cosine=0.0, top1_mismatches=len(output.values),
                         shape_matches=False)
