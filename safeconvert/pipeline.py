"""One run of safeconvert: plan the route, convert hop by hop, validate, write only what is verified.

Nothing framework-specific lives here: formats, converters, runners and validators are looked up.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .atomic import check_output_path, move_into_place, scratch_dir
from .errors import EXIT_NOT_VERIFIED, EXIT_VERIFIED, ConverterFailedError, SafeConvertError, one_line
from .formats import Format, detect_format, format_for_output
from .report import Hop, Report
from .routes import plan_route
from .runners import Runner, load_runner
from .validators.calibration import CalibrationSet, load_calibration
from .validators.preprocess import check_preset, default_preset, to_model_layout
from .validators.validate import Validation, iter_inputs, preprocessing_for, validate
from .validators.verdict import Thresholds
from .wrappers.base import ConversionOptions, Converter

REPRESENTATIVE_IMAGES = 100


@dataclass
class ConvertRequest:
    """Everything `safeconvert convert` was asked to do."""

    source: Path
    output: Path
    target_format: str | None = None
    calib: Path | None = None
    preprocess: str | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    options: ConversionOptions = field(default_factory=ConversionOptions)
    force: bool = False
    allow_unverified: bool = False
    report_path: Path | None = None


@dataclass
class CheckRequest:
    """Everything `safeconvert check` was asked to do."""

    source: Path
    target: Path
    calib: Path | None = None
    preprocess: str | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    input_shape: tuple[int, ...] | None = None
    report_path: Path | None = None


@dataclass
class Outcome:
    """The report plus the in-memory validation, which later stages (localization) reuse."""

    report: Report
    validation: Validation | None = None


class Stopwatch:
    """Collects wall time per named stage into the report."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 4)


def run_convert(request: ConvertRequest) -> Outcome:
    """Convert, validate, and write OUT only if verified (or if the user allows unverified output)."""
    source, output = Path(request.source), Path(request.output)
    report = Report(command="convert", source={"path": str(source)}, target={"path": str(output)},
                    thresholds=vars(request.thresholds))
    clock = Stopwatch(report.timings)
    outcome = Outcome(report)
    with _reported(report, request.report_path):
        with clock.stage("plan"):
            src_format = detect_format(source)
            dst_format = format_for_output(output, request.target_format)
            check_output_path(output, request.force)
            route = plan_route(src_format, dst_format)
            _check_available(route)
            preset = check_preset(request.preprocess or default_preset(src_format))
            calib = load_calibration(request.calib)
        report.source["format"], report.target["format"] = src_format.value, dst_format.value
        with clock.stage("load_source"):
            source_runner = load_runner(source, src_format, request.options.input_shape)
        report.source["input"] = source_runner.spec.to_dict()
        report.calibration = _describe_calibration(calib, preset)
        _add_representative_data(request.options, source_runner, calib, preset)
        with scratch_dir(output) as work:
            built = _convert_hops(source, src_format, route, request.options, work, report, clock)
            with clock.stage("load_target"):
                target_runner = load_runner(built, dst_format)
            report.target["input"] = target_runner.spec.to_dict()
            with clock.stage("validate"):
                outcome.validation = validate(source_runner, target_runner, calib, preset, request.thresholds)
            _record_validation(report, outcome.validation)
            if report.verified or request.allow_unverified:
                with clock.stage("write"):
                    move_into_place(built, output)
                report.output = str(output)
    return outcome


def run_check(request: CheckRequest) -> Outcome:
    """Validate an existing conversion: nothing is converted or written (except the report)."""
    report = Report(command="check", source={"path": str(request.source)}, target={"path": str(request.target)},
                    thresholds=vars(request.thresholds))
    clock = Stopwatch(report.timings)
    outcome = Outcome(report)
    with _reported(report, request.report_path):
        with clock.stage("plan"):
            src_format, dst_format = detect_format(Path(request.source)), detect_format(Path(request.target))
            preset = check_preset(request.preprocess or default_preset(src_format))
            calib = load_calibration(request.calib)
        report.source["format"], report.target["format"] = src_format.value, dst_format.value
        with clock.stage("load_source"):
            source_runner = load_runner(Path(request.source), src_format, request.input_shape)
        with clock.stage("load_target"):
            target_runner = load_runner(Path(request.target), dst_format, request.input_shape)
        report.source["input"], report.target["input"] = source_runner.spec.to_dict(), target_runner.spec.to_dict()
        report.calibration = _describe_calibration(calib, preset)
        with clock.stage("validate"):
            outcome.validation = validate(source_runner, target_runner, calib, preset, request.thresholds)
        _record_validation(report, outcome.validation)
    return outcome


@contextmanager
def _reported(report: Report, report_path: Path | None) -> Iterator[None]:
    """Record a failure in the report, and write the report (when asked) whatever the outcome."""
    try:
        yield
    except SafeConvertError as exc:
        report.error, report.exit_code = one_line(exc), exc.exit_code
        raise
    finally:
        if report_path is not None:
            report.write(Path(report_path))


def _check_available(route: list[Converter]) -> None:
    for converter in route:
        ok, why = converter.availability()
        if not ok:
            raise ConverterFailedError(converter.name, f"not usable here ({why})")


def _convert_hops(source: Path, src_format: Format, route: list[Converter], options: ConversionOptions,
                  work: Path, report: Report, clock: Stopwatch) -> Path:
    """Run each hop's converter into the scratch directory; return the last hop's output."""
    current, current_format = source, src_format
    for index, converter in enumerate(route, start=1):
        out = work / f"hop{index}-{converter.target.value}{converter.target.suffix}"
        started = time.perf_counter()
        with clock.stage(f"convert:{converter.name}"):
            converter.convert(current, current_format, out, options)
        if not out.exists():
            raise ConverterFailedError(converter.name, "finished without writing a model")
        report.route.append(Hop(
            converter=converter.name,
            tool_version=converter.version(),
            source_format=current_format.value,
            target_format=converter.target.value,
            seconds=round(time.perf_counter() - started, 3),
            options=options.describe(),
            numeric_options=converter.numeric_options(options),
        ))
        current, current_format = out, converter.target
    return current


def _add_representative_data(options: ConversionOptions, source: Runner, calib: CalibrationSet, preset: str) -> None:
    """Full-integer quantisation needs representative inputs: take them from the calibration set."""
    if not options.tflite_int8 or options.representative_data is not None:
        return
    limited = calib.subset(list(range(min(len(calib), REPRESENTATIVE_IMAGES))))
    batches = [to_model_layout(b, source.spec) for b in iter_inputs(limited, preprocessing_for(source, preset))]
    options.representative_data = np.concatenate(batches, axis=0)


def _describe_calibration(calib: CalibrationSet, preset: str) -> dict:
    return {"source": calib.source, "images": len(calib), "preprocess": "none (float .npy)" if calib.preprocessed else preset}


def _record_validation(report: Report, validation: Validation) -> None:
    report.metrics = validation.metrics.to_dict()
    report.verdict = validation.verdict.to_dict()
    report.exit_code = EXIT_VERIFIED if validation.verdict.verified else EXIT_NOT_VERIFIED
