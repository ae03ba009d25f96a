"""Verification for the Python drop-ins (safeconvert.lite, .tf2onnx, .onnx2torch): same metrics and verdict
as `safeconvert convert`, on models that may only exist in memory.

A drop-in returns what the original returns (bytes, a ModelProto, a torch module) once the result is
verified, and raises `ConversionNotVerifiedError` (a NotVerifiedError, carrying the report) when it is
not. Quantisation the user asked for is judged like any other change: the verdict is not relaxed for it,
because only the user knows how much drift their application tolerates. The exception says which images
changed label and which numeric options were in effect; `allow_unverified` returns the result anyway,
and `max_mismatch` / `rtol` set the limits.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import EXIT_NOT_VERIFIED, EXIT_VERIFIED, NotVerifiedError
from .report import Hop, Report
from .runners.base import Runner
from .validators.verdict import DEFAULT_MAX_MISMATCH, DEFAULT_RTOL, Thresholds

SHOWN_IMAGES = 5  # disagreeing images named in the exception message (all are in the report)


@dataclass
class VerifySettings:
    """What a drop-in's caller can set on top of the original's arguments."""

    calibration: str | Path | None = None  # image directory or .npy; None = the packaged photos
    preprocess: str | None = None  # preset; None = by source framework
    max_mismatch: int = DEFAULT_MAX_MISMATCH
    rtol: float = DEFAULT_RTOL
    allow_unverified: bool = False  # return the converted model even when not verified
    report_path: str | Path | None = None  # also write the JSON report here

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.max_mismatch, self.rtol)


class ConversionNotVerifiedError(NotVerifiedError):
    """The converted model disagrees with the source beyond the limits; `report` holds the details."""

    def __init__(self, report: Report, how_to_accept: str = "pass allow_unverified=True"):
        self.report = report
        super().__init__(failure_message(report, how_to_accept))


def verify(source: Runner, target: Runner, hop: Hop, settings: VerifySettings, source_label: str | None = None,
           target_label: str | None = None) -> Report:
    """Run source and target over the calibration set and judge; labels name in-memory or temporary models."""
    from .validators.calibration import load_calibration
    from .validators.preprocess import check_preset, default_preset
    from .validators.validate import validate

    preset = check_preset(settings.preprocess or default_preset(source.format))
    calib = load_calibration(Path(settings.calibration) if settings.calibration is not None else None)
    report = Report(command="convert", source=_describe(source, source_label), target=_describe(target, target_label),
                    thresholds=vars(settings.thresholds), route=[hop])
    report.calibration = {"source": calib.source, "images": len(calib),
                          "preprocess": "none (float .npy)" if calib.preprocessed else preset}
    started = time.perf_counter()
    validation = validate(source, target, calib, preset, settings.thresholds)
    report.timings["validate"] = round(time.perf_counter() - started, 4)
    report.metrics, report.verdict = validation.metrics.to_dict(), validation.verdict.to_dict()
    validation.describe_source_outputs(report.calibration)
    report.exit_code = EXIT_VERIFIED if validation.verdict.verified else EXIT_NOT_VERIFIED
    return report


def accepted(report: Report, settings: VerifySettings) -> bool:
    """Whether the result may be returned or written: verified, or the caller accepts unverified results."""
    return report.verified or settings.allow_unverified


def conclude(report: Report, settings: VerifySettings, error: type[ConversionNotVerifiedError] = ConversionNotVerifiedError,
             how_to_accept: str = "pass allow_unverified=True") -> None:
    """Write the report when asked, then raise unless the result is accepted."""
    if settings.report_path is not None:
        report.write(Path(settings.report_path))
    if not accepted(report, settings):
        raise error(report, how_to_accept)


@contextmanager
def model_file(data: bytes, suffix: str) -> Iterator[Path]:
    """Converted bytes in a temporary file, for the runtimes that load from a path (and probe it first)."""
    with tempfile.TemporaryDirectory(prefix="safeconvert-") as folder:
        path = Path(folder) / f"converted{suffix}"
        path.write_bytes(data)
        yield path


def failure_message(report: Report, how_to_accept: str) -> str:
    """One paragraph: why, which images changed, what numeric options were asked for, how to proceed."""
    parts = [f"{_converter(report)} conversion not verified: " + "; ".join((report.verdict or {}).get("reasons", []))]
    changed = (report.metrics or {}).get("disagreements", [])
    if changed:
        named = ", ".join(f"{d['image']} ({d['source_label']} -> {d['target_label']})" for d in changed[:SHOWN_IMAGES])
        more = f" and {len(changed) - SHOWN_IMAGES} more" if len(changed) > SHOWN_IMAGES else ""
        parts.append(f"top-1 label changed on {named}{more}")
    requested = [option for hop in report.route for option in hop.numeric_options]
    if requested:
        parts.append("requested: " + ", ".join(requested))
    parts.append(f"the report is on this exception's .report; {how_to_accept} to get the result anyway, "
                 "or set max_mismatch / rtol")
    return ". ".join(parts)


def _converter(report: Report) -> str:
    return report.route[0].converter if report.route else "the"


def _describe(runner: Runner, label: str | None) -> dict:
    return {"path": label or str(runner.path), "format": runner.format.value, "input": runner.spec.to_dict()}
