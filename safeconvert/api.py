"""`safeconvert.convert(...)` and `safeconvert.check(...)`: the command line's two main commands, for Python.

Both return the Report (`report.verified`, `report.exit_code`, `report.metrics`...) and raise the
SafeConvertError subclasses the CLI turns into exit codes 2 and 3 (BadInputError, ConverterFailedError).
A conversion that is not verified is not an exception here: it returns a report with `verified` False
and, as on the command line, nothing is written at `output` unless `allow_unverified=True`. `convert`
is idempotent like the CLI: an output already verified from the same source bytes and settings is
left alone.
"""

from __future__ import annotations

from pathlib import Path

from .report import Report
from .validators.verdict import DEFAULT_MAX_MISMATCH, DEFAULT_RTOL, Thresholds

PathLike = str | Path


def convert(source: PathLike, output: PathLike, to: str | None = None, calib: PathLike | None = None,
            preprocess: str | None = None, *, max_mismatch: int = DEFAULT_MAX_MISMATCH, rtol: float = DEFAULT_RTOL,
            force: bool = False, allow_unverified: bool = False, report: PathLike | None = None,
            opset: int | None = None, tflite_optimize: bool = False, tflite_float16: bool = False,
            tflite_int8: bool = False, input_shape: tuple[int, ...] | None = None,
            trust_model_code: bool = False, repair: bool = True) -> Report:
    """Convert `source` to `output` (format from `to` or the suffix), verify, write only if verified."""
    from .pipeline import ConvertRequest
    from .uptodate import convert_if_needed
    from .wrappers.base import ConversionOptions

    options = ConversionOptions(
        opset=opset,
        tflite_optimizations=["DEFAULT"] if (tflite_optimize or tflite_float16 or tflite_int8) else [],
        tflite_supported_types=["float16"] if tflite_float16 else [],
        tflite_int8=tflite_int8,
        input_shape=tuple(input_shape) if input_shape else None,
    )
    request = ConvertRequest(Path(source), Path(output), to, _path(calib), preprocess, Thresholds(max_mismatch, rtol),
                             options, force, allow_unverified, _path(report), trust_model_code, repair=repair)
    return convert_if_needed(request).report


def check(source: PathLike, target: PathLike, calib: PathLike | None = None, preprocess: str | None = None, *,
          max_mismatch: int = DEFAULT_MAX_MISMATCH, rtol: float = DEFAULT_RTOL, input_shape: tuple[int, ...] | None = None,
          report: PathLike | None = None, trust_model_code: bool = False) -> Report:
    """Validate an existing conversion `target` against `source`; nothing is written except the report."""
    from .pipeline import CheckRequest, run_check

    request = CheckRequest(Path(source), Path(target), _path(calib), preprocess, Thresholds(max_mismatch, rtol),
                           tuple(input_shape) if input_shape else None, _path(report), trust_model_code)
    return run_check(request).report


def _path(value: PathLike | None) -> Path | None:
    return Path(value) if value is not None else None
