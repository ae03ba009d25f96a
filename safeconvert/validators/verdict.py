"""The verdict: is a conversion faithful enough to be written out?"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .metrics import Metrics

DEFAULT_MAX_MISMATCH = 0
DEFAULT_RTOL = 1e-3
DEFAULT_NEAR_TIE = 0.01


@dataclass
class Thresholds:
    """Verified when top-1 mismatches <= max_mismatch and max |diff| <= rtol x the source's output range.

    near_tie: a label change is *ambiguous* when the source's own top-1/top-2 margin is below near_tie x its
    output range and the target picks the source's runner-up: float noise alone can do that. Ambiguous
    changes are listed in the verdict but do not count against max_mismatch; a real fault cannot hide behind
    them because rtol still judges the numbers. labels_only drops the rtol test (a wanted quantisation,
    --keep-quantisation, is judged on labels alone).
    """

    max_mismatch: int = DEFAULT_MAX_MISMATCH
    rtol: float = DEFAULT_RTOL
    labels_only: bool = False
    near_tie: float = DEFAULT_NEAR_TIE


@dataclass
class Verdict:
    verified: bool
    reasons: list[str] = field(default_factory=list)  # why not verified; empty when verified
    ambiguous_images: list[str] = field(default_factory=list)  # label changes on near-tied images (not counted)

    def to_dict(self) -> dict:
        return asdict(self)


def judge(metrics: Metrics, thresholds: Thresholds) -> Verdict:
    reasons = []
    if not metrics.output_shape_matches:
        reasons.append("the target's output shape differs from the source's")
    else:
        counted = counted_mismatches(metrics, thresholds)
        if counted > thresholds.max_mismatch:
            near_tied = metrics.top1_mismatches - counted
            note = f", {near_tied} more on near-tied images" if near_tied else ""
            reasons.append(
                f"{counted} of {metrics.images} images change top-1 label{note} (allowed: {thresholds.max_mismatch})"
            )
        if not thresholds.labels_only and metrics.relative_max_diff > thresholds.rtol:
            reasons.append(
                f"max |diff| {metrics.max_abs_diff:.3g} is {metrics.relative_max_diff:.2e} of the output range (allowed: {thresholds.rtol:g})"
            )
    excused = [d.image for d in metrics.disagreements if ambiguous(d, metrics, thresholds)]
    return Verdict(verified=not reasons, reasons=reasons, ambiguous_images=excused)


def ambiguous(disagreement, metrics: Metrics, thresholds: Thresholds) -> bool:
    """The source itself nearly ties, and the target only swapped its two best labels."""
    limit = thresholds.near_tie * metrics.source_output_range
    return disagreement.source_margin < limit and disagreement.target_label == disagreement.source_top5[1]


def counted_mismatches(metrics: Metrics, thresholds: Thresholds) -> int:
    """Label changes that count against max_mismatch (near-tied swaps do not)."""
    return sum(1 for d in metrics.disagreements if not ambiguous(d, metrics, thresholds))
