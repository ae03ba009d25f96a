"""The verdict: is a conversion faithful enough to be written out?"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .metrics import Metrics

DEFAULT_MAX_MISMATCH = 0
DEFAULT_RTOL = 1e-3


@dataclass
class Thresholds:
    """Verified when top-1 mismatches <= max_mismatch and max |diff| <= rtol x the source's output range."""

    max_mismatch: int = DEFAULT_MAX_MISMATCH
    rtol: float = DEFAULT_RTOL


@dataclass
class Verdict:
    verified: bool
    reasons: list[str] = field(default_factory=list)  # why not verified; empty when verified

    def to_dict(self) -> dict:
        return asdict(self)


def judge(metrics: Metrics, thresholds: Thresholds) -> Verdict:
    reasons = []
    if not metrics.output_shape_matches:
        reasons.append("the target's output shape differs from the source's")
    else:
        if metrics.top1_mismatches > thresholds.max_mismatch:
            reasons.append(
                f"{metrics.top1_mismatches} of {metrics.images} images change top-1 label (allowed: {thresholds.max_mismatch})"
            )
        if metrics.relative_max_diff > thresholds.rtol:
            reasons.append(
                f"max |diff| {metrics.max_abs_diff:.3g} is {metrics.relative_max_diff:.2e} of the output range (allowed: {thresholds.rtol:g})"
            )
    return Verdict(verified=not reasons, reasons=reasons)
