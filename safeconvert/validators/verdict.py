"""The verdict: is a conversion faithful enough to be written out?

What a verified verdict guarantees, over the calibration images:
- every output of the model was compared (paired by name, position or unique shape; see metrics.match_outputs);
- top-1 labels of the first output change on at most max_mismatch images, besides at most max_near_ties
  excused near-ties (see `near_ties`);
- default mode: every output's max |diff| is at most rtol x that output's robust scale (metrics.robust_scale);
- default mode, per value: each value's |diff| is at most rtol x its own spread across images, that spread
  floored at a tenth of its output's scale (metrics.POSITION_SCALE_FLOOR). An output is otherwise judged on
  one scale: when it holds values of very different sizes (boxes in pixels next to class scores), the large
  part sets the scale, and a fault in the small part is caught by this check only when it exceeds rtol x
  the larger of that value's own spread and a tenth of the output's scale (finer needs metrics per task -
  boxes, scores, masks each judged on its own - which safeconvert does not have);
- NaN/inf: the target is non-finite exactly where the source is (NaN for NaN, inf of the same sign) and the
  numbers are compared where both are finite; an output whose source values are all non-finite on the
  calibration images (inputs that overflow the model, say) cannot be compared and is not verified, and one
  that holds no values at all (shape [N, 0]) is not verified either: nothing was checked;
- the target run one image at a time (the first image and the one where it moved most) gives its batched
  outputs within the same tolerance: a target whose numbers depend on the batch is not verified;
- --keep-quantisation: every output's max |diff| is at most quantised_rtol x its scale and every image's
  cosine similarity is at least min_cosine (the numeric floor a wanted quantisation must keep), and the
  target is still quantised: its graph reads quantised weight tensors (int8/uint8 through a dequantising or
  integer op, float16 read by any op; a stored tensor nothing reads does not count) and at least
  MIN_QUANTISED_SHARE of its conv/dense weight values are stored that way (a model whose quantisation was
  undone, or mostly undone, is not verified).
"""

from __future__ import annotations

from dataclasses import InitVar, asdict, dataclass, field

from .metrics import Disagreement, Metrics, OutputMetrics

DEFAULT_MAX_MISMATCH = 0
DEFAULT_RTOL = 1e-3
DEFAULT_NEAR_TIE = 0.01
DEFAULT_MAX_NEAR_TIES = 2
DEFAULT_QUANTISED_RTOL = 0.5
DEFAULT_MIN_COSINE = 0.9
MIN_QUANTISED_SHARE = 0.5  # --keep-quantisation: share of conv/dense weight values that must stay quantised


@dataclass
class Thresholds:
    """The limits a verified verdict holds to (see the module docstring).

    near_tie: a label change is *excused* as a near-tie when (1) the source's own top-1/top-2 margin is below
    near_tie x the first output's robust scale, (2) the target picks the source's runner-up, and (3) the
    target moved little at that image: its max |diff| there is at most near_tie x the scale too (a tie is
    broken by noise, not by a fault that moves the outputs; under keep_quantisation, at most quantised_rtol x
    the scale, the move a wanted quantisation is allowed anyway). At most max_near_ties images are excused (the
    most tied first); the rest count against max_mismatch like any label change.

    keep_quantisation: a wanted quantisation (--keep-quantisation). rtol, sized for float conversions, is then
    replaced by the floor quantised_rtol / min_cosine, and the target must still be quantised.
    labels_only: the older name of keep_quantisation, still accepted.
    """

    max_mismatch: int = DEFAULT_MAX_MISMATCH
    rtol: float = DEFAULT_RTOL
    keep_quantisation: bool = False
    near_tie: float = DEFAULT_NEAR_TIE
    max_near_ties: int = DEFAULT_MAX_NEAR_TIES
    quantised_rtol: float = DEFAULT_QUANTISED_RTOL
    min_cosine: float = DEFAULT_MIN_COSINE
    labels_only: InitVar[bool] = False

    def __post_init__(self, labels_only: bool) -> None:
        self.keep_quantisation = bool(self.keep_quantisation or labels_only)


@dataclass
class Verdict:
    verified: bool
    reasons: list[str] = field(default_factory=list)  # why not verified; empty when verified
    ambiguous_images: list[str] = field(default_factory=list)  # label changes excused as near-ties (not counted)
    near_ties_excused: int = 0
    near_ties_over_cap: int = 0  # near-tied label changes counted because the cap was reached
    failed_outputs: list[str] = field(default_factory=list)  # names of the outputs that broke a limit
    quantised_tensors: dict | None = None  # --keep-quantisation: the target's stored quantised tensors by type
    quantised_share: float | None = None  # --keep-quantisation: share of conv/dense weight values stored quantised
    quantisation_undone: bool = False  # --keep-quantisation and the target is not quantised (any more)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QuantisationCheck:
    """What the target stores, for --keep-quantisation: quantised weight tensors by type, or why unknown."""

    tensors: dict[str, int] | None
    unknown_because: str | None = None
    share: float | None = None  # of the conv/dense weight values stored quantised (None: no such layer)


def judge(metrics: Metrics, thresholds: Thresholds, quantisation: QuantisationCheck | None = None) -> Verdict:
    """The verdict on one comparison; `quantisation` (given by validate under --keep-quantisation) is the
    target's stored quantisation."""
    verdict = Verdict(verified=False)
    if metrics.unmatched_outputs:
        verdict.reasons.append(metrics.unmatched_outputs)
    else:
        _judge_labels(metrics, thresholds, verdict)
        for output in _outputs(metrics):
            _judge_output(output, thresholds, verdict, several=len(metrics.outputs) > 1)
    if thresholds.keep_quantisation and quantisation is not None:
        _judge_quantisation(quantisation, verdict)
    verdict.verified = not verdict.reasons
    return verdict


def _outputs(metrics: Metrics) -> list[OutputMetrics]:
    """Every output's metrics (a Metrics built by compare_outputs alone describes one output)."""
    if metrics.outputs:
        return metrics.outputs
    return [OutputMetrics("output_0", "output_0", int(metrics.output_size or 0), metrics.max_abs_diff,
                          metrics.mean_abs_diff, metrics.source_scale,
                          metrics.relative_max_diff if metrics.output_shape_matches else float("inf"),
                          metrics.min_cosine, metrics.top1_mismatches, metrics.output_shape_matches,
                          source_finite_values=metrics.source_finite_values,
                          nonfinite_mismatches=metrics.nonfinite_mismatches,
                          position_relative_diff=metrics.position_relative_diff,
                          worst_position=metrics.worst_position)]


def _judge_labels(metrics: Metrics, thresholds: Thresholds, verdict: Verdict) -> None:
    if not metrics.output_shape_matches:
        return  # said by _judge_output
    excused, over_cap = near_ties(metrics, thresholds)
    verdict.ambiguous_images = [d.image for d in excused]
    verdict.near_ties_excused, verdict.near_ties_over_cap = len(excused), over_cap
    counted = metrics.top1_mismatches - len(excused)
    if counted > thresholds.max_mismatch:
        note = f", {len(excused)} more on near-tied images excused" if excused else ""
        cap = f" ({over_cap} near-ties beyond the cap of {thresholds.max_near_ties} counted)" if over_cap else ""
        name = f" of output '{metrics.outputs[0].name}'" if len(metrics.outputs) > 1 else ""
        verdict.reasons.append(f"{counted} of {metrics.images} images change top-1 label{name}{note}{cap} "
                               f"(allowed: {thresholds.max_mismatch})")


def _judge_output(output: OutputMetrics, thresholds: Thresholds, verdict: Verdict, several: bool) -> None:
    label = f"output '{output.name}'" if several else "the output"
    failures = []
    if not output.shape_matches:
        failures.append(f"the target's shape of {label} differs from the source's" if several
                        else "the target's output shape differs from the source's")
    else:
        failures = _unverifiable(output) or _judge_values(output, thresholds, label)
    if failures:
        verdict.failed_outputs.append(output.name)
        verdict.reasons.extend(failures)


def _unverifiable(output: OutputMetrics) -> list[str]:
    """Why an output cannot be compared at all: it holds no values, or the source gives no finite one."""
    if output.values == 0:
        return [f"output '{output.name}' holds no values per image (shape [N, 0]): there is nothing to compare, "
                "so it cannot be verified"]
    if output.source_finite_values == 0:
        return [f"output '{output.name}': the source gives NaN/inf for every value on every calibration image, so "
                "it cannot be verified numerically (use calibration inputs on which the source's outputs are finite)"]
    return []


def _judge_values(output: OutputMetrics, thresholds: Thresholds, label: str) -> list[str]:
    failures = []
    if output.nonfinite_mismatches:
        failures.append(f"output '{output.name}': the target's NaN/inf values differ from the source's at "
                        f"{output.nonfinite_mismatches} value(s) (NaN or inf where the source is finite, or the reverse)")
    tolerance = thresholds.quantised_rtol if thresholds.keep_quantisation else thresholds.rtol
    if output.single_image_relative_diff is not None and output.single_image_relative_diff > tolerance:
        failures.append(f"{label}: run one image at a time, the target differs from its own batched outputs by "
                        f"{output.single_image_relative_diff:.2e} of the scale {output.scale:.3g} (allowed: "
                        f"{tolerance:g}): its numbers depend on the batch")
    if thresholds.keep_quantisation:
        if output.relative_max_diff > thresholds.quantised_rtol:
            failures.append(f"{label}: max |diff| {output.max_abs_diff:.3g} is {output.relative_max_diff:.2e} of its "
                            f"scale {output.scale:.3g} (allowed with --keep-quantisation: {thresholds.quantised_rtol:g})")
        if output.min_cosine < thresholds.min_cosine:
            failures.append(f"{label}: the worst image's cosine similarity is {output.min_cosine:.3f} "
                            f"(required with --keep-quantisation: {thresholds.min_cosine:g})")
    elif output.relative_max_diff > thresholds.rtol:
        failures.append(f"{label}: max |diff| {output.max_abs_diff:.3g} is {output.relative_max_diff:.2e} of its "
                        f"scale {output.scale:.3g} (allowed: {thresholds.rtol:g})")
    elif output.position_relative_diff > thresholds.rtol:
        failures.append(f"{label}: value {output.worst_position} moves {output.position_relative_diff:.2e} of its "
                        f"own spread across images (allowed: {thresholds.rtol:g}; the output holds values of very "
                        "different sizes, and this one is judged on its own)")
    return failures


def _judge_quantisation(quantisation: QuantisationCheck, verdict: Verdict) -> None:
    verdict.quantised_tensors, verdict.quantised_share = quantisation.tensors, quantisation.share
    if quantisation.unknown_because:
        verdict.reasons.append(f"--keep-quantisation: {quantisation.unknown_because}")
    elif not quantisation.tensors:
        verdict.quantisation_undone = True
        verdict.reasons.append("quantisation undone: the target stores no quantised weight tensors, and "
                               "--keep-quantisation verifies only a model that is still quantised")
    elif quantisation.share is not None and quantisation.share < MIN_QUANTISED_SHARE:
        verdict.quantisation_undone = True
        verdict.reasons.append(f"quantisation undone: only {100 * quantisation.share:.0f}% of the target's conv/dense "
                               f"weight values are stored quantised, and --keep-quantisation verifies only a model "
                               f"that keeps at least {100 * MIN_QUANTISED_SHARE:.0f}% of them quantised")


def near_ties(metrics: Metrics, thresholds: Thresholds) -> tuple[list[Disagreement], int]:
    """The label changes excused as near-ties (most tied first, at most max_near_ties), and how many more
    qualified but were counted because of the cap."""
    qualified = sorted((d for d in metrics.disagreements if ambiguous(d, metrics, thresholds)),
                       key=lambda d: d.source_margin)
    cap = max(0, thresholds.max_near_ties)
    return qualified[:cap], max(0, len(qualified) - cap)


def ambiguous(disagreement: Disagreement, metrics: Metrics, thresholds: Thresholds) -> bool:
    """The source itself nearly ties, the target only swapped its two best labels, and moved little there:
    within near_tie x the scale for a float conversion; within the floor a wanted quantisation may move
    (quantised_rtol x the scale) under --keep-quantisation, whose rounding moves every image more than
    float noise does."""
    margin_limit = thresholds.near_tie * metrics.source_scale
    moved_limit = (thresholds.quantised_rtol if thresholds.keep_quantisation else thresholds.near_tie) * metrics.source_scale
    return (disagreement.source_margin < margin_limit and disagreement.image_max_abs_diff <= moved_limit
            and len(disagreement.source_top5) > 1 and disagreement.target_label == disagreement.source_top5[1])


def counted_mismatches(metrics: Metrics, thresholds: Thresholds) -> int:
    """Label changes that count against max_mismatch (excused near-ties do not)."""
    return metrics.top1_mismatches - len(near_ties(metrics, thresholds)[0])
