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
from .errors import EXIT_NOT_VERIFIED, EXIT_VERIFIED, BadInputError, ConverterFailedError, SafeConvertError, one_line
from .formats import Format, detect_format, format_for_output
from .report import Hop, Report
from .routes import plan_route
from .timing import Stopwatch
from .runners import Runner, load_runner
from .safety.disk import as_output_space_error
from .safety.exit_codes import describe as describe_failure
from .safety.exit_codes import exit_code_for
from .safety.framework_imports import import_for_converter
from .safety.trust import check_trusted
from .validators.calibration import CalibrationSet, load_calibration
from .validators.preprocess import check_preset, default_preset, to_model_layout
from .validators.validate import ModelRunError, Validation, iter_inputs, preprocessing_for, validate
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
    trust_model_code: bool = False  # load formats that run code from the file (TorchScript, audited-out .pt2)
    repair: bool = True  # localize and repair when the first conversion is not verified


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
    trust_model_code: bool = False


@dataclass
class Outcome:
    """The report plus the in-memory validation, which later stages (localization) reuse."""

    report: Report
    validation: Validation | None = None
    up_to_date: bool = False  # OUT was already verified from the same source and settings: nothing was run


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
            check_trusted(source, src_format, request.trust_model_code)
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
                try:
                    outcome.validation = validate(source_runner, target_runner, calib, preset, request.thresholds)
                except ModelRunError as exc:
                    if exc.path != target_runner.path:
                        raise
                    raise ConverterFailedError(route[-1].name, f"its model does not run ({exc})") from None
            _record_validation(report, outcome.validation)
            if not report.verified and request.repair:
                made = Made(source, src_format, source_runner, route, request.options, work, calib, preset,
                            request.thresholds)
                built, outcome.validation = _repair_stage(made, built, dst_format, outcome.validation, report, clock)
            if report.verified or request.allow_unverified:
                with clock.stage("write"):
                    move_into_place(built, output)
                report.output = str(output)
    return outcome


def run_check(request: CheckRequest) -> Outcome:
    """Validate an existing conversion: nothing is converted or written (except the report)."""
    report = _existing_report("check", request)
    outcome = Outcome(report)
    with _reported(report, request.report_path):
        _validate_existing(request, outcome, Stopwatch(report.timings))
    return outcome


@dataclass
class RepairRequest(CheckRequest):
    """`safeconvert repair SRC TARGET -o OUT` (and `localize`, which writes nothing)."""

    output: Path | None = None
    force: bool = False
    allow_unverified: bool = False
    keep_quantisation: bool = False


def run_localize(request: RepairRequest) -> Outcome:
    """Validate an existing conversion and, when it disagrees, localize the faults (no repair)."""
    from .localize.engine import localize

    report = _existing_report("localize", request)
    outcome = Outcome(report)
    clock = Stopwatch(report.timings)
    with _reported(report, request.report_path):
        existing = _validate_existing(request, outcome, clock)
        if not report.verified:
            with scratch_dir(Path(request.target)) as work, clock.stage("localize"):
                onnx = _editable_onnx(existing, work)
                loc = localize(_existing_input(existing, outcome.validation, onnx, request))
            report.findings = [f.to_dict() for f in loc.findings]
            report.divergence = loc.divergence.to_dict() if loc.divergence else None
            report.localization_notes = loc.notes
            for name, seconds in loc.seconds.items():
                report.timings[f"localize:{name}"] = round(seconds, 4)
    return outcome


def run_repair(request: RepairRequest) -> Outcome:
    """Repair an existing faulty conversion; write OUT (in TARGET's format) only once verified."""
    from .repair.loop import RepairSession, repair_until_verified

    output = Path(request.output)
    report = _existing_report("repair", request)
    report.target["output"] = str(output)
    outcome = Outcome(report)
    clock = Stopwatch(report.timings)
    with _reported(report, request.report_path):
        check_output_path(output, request.force)
        existing = _validate_existing(request, outcome, clock)
        if format_for_output(output, existing.target_format.value) is not existing.target_format:
            raise BadInputError(f"the repaired model keeps TARGET's format ({existing.target_format.value}): "
                                f"name OUT accordingly")
        with scratch_dir(output) as work:
            final = Path(request.target)
            if not report.verified:
                report.metrics_before_repair = report.metrics
                session = RepairSession(
                    target=final, target_format=existing.target_format, onnx_intermediate=_editable_onnx(existing, work),
                    work=work, validate=lambda path: validate(existing.source_runner, load_runner(path, existing.target_format),
                                                              existing.calib, existing.preset, request.thresholds),
                    make_input=lambda target, onnx, current: _existing_input(existing, current, onnx, request, target),
                    to_target=_to_torchscript,
                    float_reference=lambda folder: _float_tflite_of_source(existing, folder),
                    quick_gap=_quick_gap(existing.source_runner, existing.target_format, existing.calib, existing.preset,
                                         request.thresholds, outcome.validation),
                )
                with clock.stage("localize_and_repair"):
                    result = repair_until_verified(session, outcome.validation)
                _record_repairs(report, result)
                _record_validation(report, result.validation)
                final, outcome.validation = result.target, result.validation
            if report.verified or request.allow_unverified:
                with clock.stage("write"):
                    _place_copy(final, output, work)
                report.output = str(output)
    return outcome


@dataclass
class Existing:
    """An existing source/target pair, loaded for validation."""

    source: Path
    source_format: Format
    target: Path
    target_format: Format
    source_runner: Runner
    calib: CalibrationSet
    preset: str


def _existing_report(command: str, request: CheckRequest) -> Report:
    return Report(command=command, source={"path": str(request.source)}, target={"path": str(request.target)},
                  thresholds=vars(request.thresholds))


def _validate_existing(request: CheckRequest, outcome: Outcome, clock: Stopwatch) -> Existing:
    report = outcome.report
    with clock.stage("plan"):
        src_format, dst_format = detect_format(Path(request.source)), detect_format(Path(request.target))
        check_trusted(Path(request.source), src_format, request.trust_model_code)
        check_trusted(Path(request.target), dst_format, request.trust_model_code)
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
    return Existing(Path(request.source), src_format, Path(request.target), dst_format, source_runner, calib, preset)


def _existing_input(existing: Existing, validation: Validation, onnx: Path | None, request: RepairRequest,
                    target: Path | None = None):
    from .localize.context import LocalizationInput

    return LocalizationInput(existing.source, existing.source_format, target or existing.target, existing.target_format,
                             existing.calib, preprocessing_for(existing.source_runner, existing.preset), validation,
                             target_ir_path=onnx, quantisation_requested=request.keep_quantisation)


def _editable_onnx(existing: Existing, work: Path) -> Path | None:
    """TorchScript targets are localized and repaired through an ONNX export of themselves."""
    if existing.target_format is not Format.TORCHSCRIPT:
        return None
    from .repair.torch_roundtrip import torchscript_to_onnx

    return torchscript_to_onnx(existing.target, work / "target-as.onnx")


def _quick_gap(source_runner: Runner, target_format: Format, calib: CalibrationSet, preset: str,
               thresholds: Thresholds, validation: Validation):
    """Output gap of a candidate on a few images (the disagreeing ones first): cheap sensitivity probes."""
    from .localize.context import divergence_indices

    few = calib.subset(divergence_indices(validation, calib.names, limit=8))
    return lambda path: validate(source_runner, load_runner(path, target_format), few, preset, thresholds).metrics.max_abs_diff


def _float_tflite_of_source(existing: Existing, folder: Path) -> Path:
    """A plain float TFLite conversion of a Keras/SavedModel source: where float weights come from."""
    from .wrappers.tflite_wrapper import TfliteConverter

    if existing.source_format not in (Format.KERAS, Format.SAVEDMODEL):
        raise BadInputError("keeping layers in float needs a Keras or SavedModel source")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "float.tflite"
    TfliteConverter().convert(existing.source, existing.source_format, out, ConversionOptions())
    return out


def _to_torchscript(onnx: Path, out: Path) -> None:
    from .repair.torch_roundtrip import onnx_to_torchscript

    onnx_to_torchscript(onnx, out)


def _place_copy(built: Path, output: Path, work: Path) -> None:
    """Copy (the unrepaired target is the user's file) or move a scratch file into place atomically."""
    import shutil

    if not str(built).startswith(str(work)):
        staged = work / f"staged{built.suffix}"
        shutil.copytree(built, staged) if built.is_dir() else shutil.copyfile(built, staged)
        built = staged
    move_into_place(built, output)


@contextmanager
def _reported(report: Report, report_path: Path | None) -> Iterator[None]:
    """Record a failure in the report, and write the report (when asked) whatever the outcome."""
    try:
        yield
    except SafeConvertError as exc:
        report.error, report.exit_code = one_line(exc), exc.exit_code
        raise
    except BaseException as exc:  # interrupted, disk full, or a bug: the report must not claim exit code 0
        report.error, report.exit_code = describe_failure(exc), exit_code_for(exc)
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
        out = hop_output(work, index, converter)
        started = time.perf_counter()
        with clock.stage(f"convert:{converter.name}"):
            import_for_converter(converter.name)  # with Ctrl-C held: see safety.framework_imports
            try:
                converter.convert(current, current_format, out, options)
            except (OSError, ConverterFailedError) as exc:  # a full disk is the output location's fault
                raise as_output_space_error(exc, work) or exc
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


def hop_output(work: Path, index: int, converter: Converter) -> Path:
    """Where hop `index` (from 1) of a route writes its model inside the scratch directory."""
    return work / f"hop{index}-{converter.target.value}{converter.target.suffix}"


@dataclass
class Made:
    """How a target was made: what the repair stage needs to localize, re-validate and re-convert."""

    source: Path
    source_format: Format
    source_runner: Runner
    route: list[Converter]
    options: ConversionOptions
    work: Path
    calib: CalibrationSet
    preset: str
    thresholds: Thresholds

    def last_onnx(self) -> Path | None:
        """The last ONNX model along the route before the target (repairs of non-ONNX targets edit it)."""
        hops = [hop_output(self.work, i, c) for i, c in enumerate(self.route, start=1)]
        return next((p for p, c in reversed(list(zip(hops[:-1], self.route[:-1]))) if c.target is Format.ONNX), None)


def _repair_stage(made: Made, built: Path, dst_format: Format, validation: Validation, report: Report,
                  clock: Stopwatch) -> tuple[Path, Validation]:
    """Localize and repair until verified (bounded); record everything in the report."""
    from .repair.loop import RepairSession, repair_until_verified

    report.metrics_before_repair = report.metrics
    session = RepairSession(
        target=built, target_format=dst_format, onnx_intermediate=made.last_onnx(), work=made.work,
        validate=lambda path: validate(made.source_runner, load_runner(path, dst_format), made.calib, made.preset,
                                       made.thresholds),
        make_input=lambda target, onnx, current: _localization_input(made, target, dst_format, onnx, current, report),
        reconvert=lambda folder: _reconvert(made, folder),
        to_target=lambda onnx, out: _finish_route_from_onnx(made, onnx, out),
        float_reference=lambda folder: _reconvert(made, folder),
        quick_gap=_quick_gap(made.source_runner, dst_format, made.calib, made.preset, made.thresholds, validation),
        requantise=_requantise(made) if made.options.tflite_int8 else None,
    )
    with clock.stage("localize_and_repair"):
        result = repair_until_verified(session, validation)
    _record_repairs(report, result)
    _record_validation(report, result.validation)
    return result.target, result.validation


def _localization_input(made: Made, target: Path, dst_format: Format, onnx: Path | None, validation: Validation,
                        report: Report):
    from .localize.context import LocalizationInput

    return LocalizationInput(made.source, made.source_format, target, dst_format, made.calib,
                             preprocessing_for(made.source_runner, made.preset), validation, list(report.route),
                             target_ir_path=onnx if dst_format is not Format.ONNX else None,
                             quantisation_requested=made.options.keep_quantisation)


def _requantise(made: Made):
    """Full-integer conversion of the source again, keeping the named layers (and their activations) float."""
    from .repair.tflite_edit import convert_with_float_layers

    def run(names: list[str], out: Path) -> Path:
        out.write_bytes(convert_with_float_layers(made.source, made.options.representative_data, names))
        return out

    return run


def _reconvert(made: Made, folder: Path) -> Path:
    """The TOOL repair: the same route again, without the options that change numerics."""
    folder.mkdir(parents=True, exist_ok=True)
    scratch_report = Report(command="reconvert", source={}, target={})
    return _convert_hops(made.source, made.source_format, made.route, made.options.without_numeric_options(), folder,
                         scratch_report, Stopwatch())


def _finish_route_from_onnx(made: Made, onnx: Path, out: Path) -> None:
    """Run the hops that follow the route's last ONNX model on a repaired copy of it."""
    index = max(i for i, c in enumerate(made.route) if c.target is Format.ONNX and i < len(made.route) - 1)
    current, current_format = onnx, Format.ONNX
    for converter in made.route[index + 1:]:
        target = out if converter is made.route[-1] else out.with_name(f"{out.stem}-{converter.target.value}{converter.target.suffix}")
        converter.convert(current, current_format, target, made.options)
        current, current_format = target, converter.target


def _record_repairs(report: Report, result) -> None:
    details = result.to_dict()
    report.repairs = details["records"]
    if result.localizations:
        first = result.localizations[0]
        report.findings = [f.to_dict() for f in first.findings]
        report.divergence = first.divergence.to_dict() if first.divergence else None
        report.localization_notes = [n for loc in result.localizations for n in loc.notes]
    for name, seconds in details["seconds"].items():
        report.timings[f"repair:{name}"] = seconds


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
