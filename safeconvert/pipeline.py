"""One run of safeconvert: plan the route, convert hop by hop, validate, write only what is verified.

Nothing framework-specific lives here: formats, converters, runners and validators are looked up.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from . import progress
from .atomic import check_output_path, check_report_paths, place_model, scratch_dir
from .errors import EXIT_NOT_VERIFIED, EXIT_VERIFIED, BadInputError, ConverterFailedError, SafeConvertError, one_line
from .formats import Format, detect_format, format_for_output
from .hops.fallback import DROPPED, KEPT, Attempt, RouteQueue, hop_name, tool_finding
from .hops.run import ERROR, PendingHop, convert_isolated
from .hops.settings import Isolation
from .report import Hop, Report, rendered_pages
from .routes import hop_alternatives, plan_route
from .timing import Stopwatch
from .runners import Runner, load_runner
from .safety.disk import OutputSpaceError, as_output_space_error
from .safety.exit_codes import describe as describe_failure
from .safety.exit_codes import exit_code_for
from .safety.trust import check_trusted
from .validators.calibration import CalibrationSet, load_calibration
from .validators.preprocess import check_preset, default_preset, to_model_layout
from .validators.validate import ModelRunError, Validation, iter_inputs, load_source, preprocessing_for, validate
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
    isolation: Isolation = field(default_factory=Isolation)  # each hop in a child process, with limits
    trace_divergence: bool = False  # trace per-layer divergence even when a static repair suffices (--html)

    def __post_init__(self) -> None:
        self.thresholds = _for_quantisation(self.thresholds, self.options.keep_quantisation)


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
    written_sha256: str | None = None  # digest of the model placed at OUT (model_files.py), taken before placing


def run_convert(request: ConvertRequest) -> Outcome:
    """Convert, validate, and write OUT only if verified (or if the user allows unverified output)."""
    check_report_paths_of(request)
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
            route = plan_route(src_format, dst_format, options=request.options)
            route = _usable_route(route, src_format, request.isolation)
            preset = check_preset(request.preprocess or default_preset(src_format))
            calib = load_calibration(request.calib)
        report.source["format"], report.target["format"] = src_format.value, dst_format.value
        with scratch_dir(output) as work, progress.named(work, f"the conversion to {output.name}"), \
                _first_hop_started(source, src_format, route, request, work) as cache:
            with clock.stage("load_source"):  # meanwhile the first hop converts in its child
                source_runner = load_source(source, src_format, request.options.input_shape, calib, preset)
            report.source["input"] = source_runner.spec.to_dict()
            report.calibration = _describe_calibration(calib, preset)
            _add_representative_data(request.options, source_runner, calib, preset)
            made = Made(source, src_format, source_runner, route, request.options, work, calib, preset,
                        request.thresholds, isolation=request.isolation, trace_divergence=request.trace_divergence)
            kept = _convert_with_fallback(made, dst_format, request.repair, report, clock, cache)
            built, outcome.validation = kept.built, kept.validation
            if report.verified or request.allow_unverified:
                with clock.stage("write"):
                    outcome.written_sha256 = place_model(built, output, request.force, work)
                report.output = str(output)
    return outcome


def run_check(request: CheckRequest) -> Outcome:
    """Validate an existing conversion: nothing is converted or written (except the report)."""
    check_report_paths_of(request)
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
    isolation: Isolation = field(default_factory=Isolation)  # converters re-run by the repair, in children
    trace_divergence: bool = False  # trace per-layer divergence even when a static repair suffices (--html)

    def __post_init__(self) -> None:
        self.thresholds = _for_quantisation(self.thresholds, self.keep_quantisation)


def _for_quantisation(thresholds: Thresholds, keep_quantisation: bool) -> Thresholds:
    """A wanted quantisation is judged on labels and the quantisation floor (validators/verdict.py), however the
    request was made (CLI, API, drop-in); applied where a request is made, so the run, its report and the
    up-to-date check all see it."""
    return replace(thresholds, keep_quantisation=True) if keep_quantisation else thresholds


def run_localize(request: RepairRequest) -> Outcome:
    """Validate an existing conversion and, when it disagrees, localize the faults (no repair)."""
    from .localize.engine import localize

    check_report_paths_of(request)
    report = _existing_report("localize", request)
    outcome = Outcome(report)
    clock = Stopwatch(report.timings)
    with _reported(report, request.report_path):
        existing = _validate_existing(request, outcome, clock)
        if not report.verified:
            with scratch_dir(Path(request.target)) as work, clock.stage("localize"):
                onnx = _editable_onnx(existing, work, request.isolation)
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

    check_report_paths_of(request)
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
        with scratch_dir(output) as work, progress.named(work, f"a repair of {Path(request.target).name}"):
            final = Path(request.target)
            if not report.verified:
                report.metrics_before_repair = report.metrics
                session = RepairSession(
                    target=final, target_format=existing.target_format,
                    onnx_intermediate=_editable_onnx(existing, work, request.isolation),
                    work=work, validate=lambda path: validate(existing.source_runner, load_runner(path, existing.target_format),
                                                              existing.calib, existing.preset, request.thresholds),
                    make_input=lambda target, onnx, current: _existing_input(existing, current, onnx, request, target),
                    to_target=lambda onnx, out: _to_torchscript(onnx, out, request.isolation),
                    float_reference=lambda folder: _float_tflite_of_source(existing, folder, request.isolation),
                    quick_gap=_quick_gap(existing.source_runner, existing.target_format, existing.calib, existing.preset,
                                         request.thresholds, outcome.validation),
                    trace_first=request.trace_divergence,
                )
                with clock.stage("localize_and_repair"):
                    result = repair_until_verified(session, outcome.validation)
                _record_repairs(report, result)
                _record_validation(report, result.validation)
                final, outcome.validation = result.target, result.validation
            if report.verified or request.allow_unverified:
                with clock.stage("write"):
                    outcome.written_sha256 = place_model(final, output, request.force, work)
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
        source_runner = load_source(Path(request.source), src_format, request.input_shape, calib, preset)
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


def _editable_onnx(existing: Existing, work: Path, isolation: Isolation) -> Path | None:
    """TorchScript targets are localized and repaired through an ONNX export of themselves.

    The export is repair.torch_roundtrip's (TorchScript exporter, its opset), run in a child like every hop.
    """
    if existing.target_format is not Format.TORCHSCRIPT:
        return None
    from .repair.torch_roundtrip import ROUNDTRIP_OPSET
    from .wrappers.torch_onnx_wrapper import TorchOnnxConverter

    out = work / "target-as.onnx"
    options = ConversionOptions(opset=ROUNDTRIP_OPSET, torch_dynamo=False)
    convert_isolated(TorchOnnxConverter(), existing.target, Format.TORCHSCRIPT, out, options, isolation)
    return out


def _quick_gap(source_runner: Runner, target_format: Format, calib: CalibrationSet, preset: str,
               thresholds: Thresholds, validation: Validation):
    """Output gap of a candidate on a few images (the disagreeing ones first): cheap sensitivity probes."""
    from .localize.context import divergence_indices

    indices = divergence_indices(validation, calib.names, limit=8)
    few, source_outputs = calib.subset(indices), validation.source_subset(indices)  # the source is not run again
    return lambda path: validate(source_runner, load_runner(path, target_format), few, preset, thresholds,
                                 source_outputs=source_outputs).metrics.max_abs_diff


def _float_tflite_of_source(existing: Existing, folder: Path, isolation: Isolation) -> Path:
    """A plain float TFLite conversion of a Keras/SavedModel source: where float weights come from."""
    from .wrappers.tflite_wrapper import TfliteConverter

    if existing.source_format not in (Format.KERAS, Format.SAVEDMODEL):
        raise BadInputError("keeping layers in float needs a Keras or SavedModel source")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "float.tflite"
    convert_isolated(TfliteConverter(), existing.source, existing.source_format, out, ConversionOptions(), isolation)
    return out


def _to_torchscript(onnx: Path, out: Path, isolation: Isolation) -> None:
    """A repaired ONNX back to TorchScript with onnx2torch (what repair.torch_roundtrip does), in a child."""
    from .wrappers.onnx2torch_wrapper import Onnx2TorchConverter

    convert_isolated(Onnx2TorchConverter(), onnx, Format.ONNX, out, ConversionOptions(), isolation)


def check_report_paths_of(request: CheckRequest | ConvertRequest, **more: Path | None) -> None:
    """Refuse, before any work, a report path (or a page rendered from the report) that would overwrite
    SRC, TARGET, OUT, a file of theirs, the calibration set, or the other report (atomic.check_report_paths)."""
    reports = {"the report": request.report_path, **{"the page": page for page in rendered_pages()}}
    models = {"SRC": request.source, "TARGET": getattr(request, "target", None),
              "OUT": getattr(request, "output", None), "the calibration set": request.calib, **more}
    check_report_paths(reports, models)


@contextmanager
def _reported(report: Report, report_path: Path | None) -> Iterator[None]:
    """Record a failure in the report, and write the report (when asked) whatever the outcome; say in it
    when the cache was not used because others could write it (user_cache.cache_notices)."""
    from .user_cache import cache_notices

    try:
        yield
    except SafeConvertError as exc:
        report.error, report.exit_code = one_line(exc), exc.exit_code
        raise
    except BaseException as exc:  # interrupted, disk full, or a bug: the report must not claim exit code 0
        report.error, report.exit_code = describe_failure(exc), exit_code_for(exc)
        raise
    finally:
        report.notes += [note for note in cache_notices() if note not in report.notes]
        if report_path is not None:
            report.write(Path(report_path))


def _usable_route(route: list[Converter], src_format: Format, isolation: Isolation) -> list[Converter]:
    """The planned route, with any converter that cannot run here swapped for one that can make its hop."""
    usable, current = [], src_format
    for converter in route:
        choice = next((c for c in hop_alternatives(converter, current) if _available(c, isolation)), None)
        if choice is None:
            raise ConverterFailedError(converter.name, f"not usable here ({converter.availability()[1]})")
        usable.append(choice)
        current = choice.target
    return usable


def _available(converter: Converter, isolation: Isolation) -> bool:
    """Usable here; a converter with an interpreter of its own is judged there, by its child."""
    return isolation.envs.interpreter_for(converter.name) is not None or converter.availability()[0]


@dataclass
class HopCache:
    """Hop outputs by converter-name prefix: a route that shares a prefix with one converted earlier in the
    run reuses those hops' models instead of running their converters again. `pending` holds a hop whose
    child was started early (the first hop, while the source model loads)."""

    done: dict[tuple[str, ...], tuple[Path, Hop]] = field(default_factory=dict)
    pending: dict[tuple[str, ...], PendingHop] = field(default_factory=dict)


@contextmanager
def _first_hop_started(source: Path, src_format: Format, route: list[Converter], request: ConvertRequest,
                       work: Path) -> Iterator[HopCache]:
    """Start the first hop's child before the source model loads in this process: both take seconds
    (each imports its framework), and on two cores they overlap. Not for int8, whose representative data
    comes from the loaded source; a child still pending at the end (the source failed to load) is killed."""
    cache = HopCache()
    if request.options.tflite_int8 or not request.isolation.active:
        yield cache
        return
    first = route[0]
    cache.pending[(first.name,)] = PendingHop(first, source, src_format, hop_output(work, 1, first), request.options,
                                              request.isolation)
    try:
        yield cache
    finally:
        for pending in cache.pending.values():
            pending.abandon()


@dataclass
class Trial:
    """One route tried: its own scratch report, and its model and validation, or how it failed."""

    made: "Made"
    report: Report
    built: Path | None = None
    validation: Validation | None = None
    failure: ConverterFailedError | None = None
    failed_hop: int | None = None  # from 0
    ran: dict[int, float] = field(default_factory=dict)  # hop index -> seconds, for hops converted in this trial

    @property
    def verified(self) -> bool:
        return self.failure is None and self.report.verified


MAX_ROUTES = 6  # routes tried per run, the planned one included


def _convert_with_fallback(made: "Made", dst_format: Format, repair: bool, report: Report, clock: Stopwatch,
                           cache: HopCache) -> Trial:
    """Convert along the planned route; when a hop fails or the result is not verified (repair included),
    try the other converters for the hops (hops.fallback) until one is verified; else keep the best result."""
    queue = RouteQueue(made.route, made.source_format,
                       lambda chosen, fmt: [c for c in hop_alternatives(chosen, fmt)[1:] if _available(c, made.isolation)])
    trials: list[Trial] = []
    while len(trials) < MAX_ROUTES and (route := queue.next()) is not None:
        work = made.work if not trials else made.work / f"route{len(trials) + 1}"
        work.mkdir(exist_ok=True)
        trial = _try_route(replace(made, route=route, work=work), dst_format, cache, clock, first=not trials)
        trials.append(trial)
        if trial.failure is not None:
            queue.after_failure(route, trial.failed_hop)
            continue
        if not trial.verified and repair and not any(t.verified for t in trials):
            trial.built, trial.validation = _repair_stage(trial.made, trial.built, dst_format, trial.validation,
                                                          trial.report, clock)
        if trial.verified:
            break  # the planned route, or the first fallback in order of preference, works: nothing more to try
        queue.after_unverified(route)
    kept = _best(trials)
    _report_trials(report, trials, kept, made.source_format)
    if kept is None:
        raise trials[0].failure
    return kept


def _try_route(made: "Made", dst_format: Format, cache: HopCache, clock: Stopwatch, first: bool) -> Trial:
    """Convert and validate one route; a converter's failure is recorded in the trial, not raised."""
    trial = Trial(made, Report(command="convert", source={}, target={}, thresholds=vars(made.thresholds)))
    try:
        trial.built = _convert_hops(made, trial, cache, clock)
        with clock.stage("load_target"):
            target_runner = _load_converted(trial.built, dst_format, made.route[-1].name)
        trial.report.target["input"] = target_runner.spec.to_dict()
        with clock.stage("validate"):
            trial.validation = _validate_converted(made, target_runner)
    except ConverterFailedError as exc:
        trial.failure, trial.failed_hop = exc, min(len(trial.report.route), len(made.route) - 1)
        return trial
    except BadInputError as exc:  # the user's input: it ends the run, unless an alternative converter said so
        if first or isinstance(exc, OutputSpaceError):
            raise
        trial.failed_hop = min(len(trial.report.route), len(made.route) - 1)
        trial.failure = ConverterFailedError(made.route[trial.failed_hop].name, one_line(exc))
        return trial
    _record_validation(trial.report, trial.validation)
    return trial


def _load_converted(built: Path, dst_format: Format, converter: str) -> Runner:
    """A converted model that does not even load is its converter's failure, not the user's input."""
    try:
        return load_runner(built, dst_format)
    except BadInputError as exc:
        raise ConverterFailedError(converter, f"its model does not load ({one_line(exc)})") from None


def _validate_converted(made: "Made", target_runner: Runner) -> Validation:
    try:
        return validate(made.source_runner, target_runner, made.calib, made.preset, made.thresholds)
    except ModelRunError as exc:
        if exc.path != target_runner.path:
            raise
        raise ConverterFailedError(made.route[-1].name, f"its model does not run ({exc})") from None


def _best(trials: list[Trial]) -> Trial | None:
    """Verified first, then the most top-1 agreement, then the smallest output difference."""
    converted = [t for t in trials if t.failure is None]
    if not converted:
        return None

    def rank(trial: Trial) -> tuple:
        metrics = trial.report.metrics or {}
        diff = metrics.get("max_abs_diff")
        diff = float(diff) if isinstance(diff, (int, float)) and diff == diff else float("inf")
        return (trial.verified, float(metrics.get("top1_agreement") or 0.0), -diff)

    return max(converted, key=rank)  # max keeps the first of equals: the planned route wins ties


def _report_trials(report: Report, trials: list[Trial], kept: Trial | None, src_format: Format) -> None:
    """The kept route's results become the run's; every converter tried, and every failure, is reported."""
    if kept is not None:
        for name in ("route", "metrics", "verdict", "metrics_before_repair", "findings", "repairs", "divergence",
                     "localization_notes", "exit_code"):
            setattr(report, name, getattr(kept.report, name))
        report.target["input"] = kept.report.target.get("input")
    report.converters_tried = [a.to_dict() for a in _attempts(trials, kept, src_format)]
    report.findings = list(report.findings) + [_failure_finding(t, kept, src_format).to_dict()
                                               for t in trials if t.failure is not None]


def _attempts(trials: list[Trial], kept: Trial | None, src_format: Format) -> list[Attempt]:
    kept_key = [c.name for c in kept.made.route] if kept else []
    attempts = []
    for trial in trials:
        route = trial.made.route
        for index in sorted(set(trial.ran) | ({trial.failed_hop} if trial.failure else set())):
            on_kept = kept is not None and kept_key[:index + 1] == [c.name for c in route[:index + 1]]
            why = _why_kept(kept) if on_kept else _why_dropped(trial, index, kept)
            seconds = trial.ran.get(index, getattr(trial.failure, "seconds", 0.0))
            attempts.append(Attempt(route[index].name, hop_name(route, index, src_format), index + 1,
                                    KEPT if on_kept else DROPPED, why, seconds))
    return attempts


def _why_kept(kept: Trial) -> str:
    return "verified" if kept.verified else "the best of the routes tried, but not verified"


def _why_dropped(trial: Trial, index: int, kept: Trial | None) -> str:
    route = trial.made.route
    if trial.failure is not None:
        if index == trial.failed_hop:
            return f"{getattr(trial.failure, 'failure', ERROR)}: {trial.failure.detail}"
        return f"the route through it failed at hop {trial.failed_hop + 1} ({route[trial.failed_hop].name})"
    metrics = trial.report.metrics or {}
    instead = f"; kept {' -> '.join(c.name for c in kept.made.route)} instead" if kept else ""
    return (f"not verified (top-1 agreement {metrics.get('top1_agreement')}, max |diff| "
            f"{metrics.get('max_abs_diff')}){instead}")


def _failure_finding(trial: Trial, kept: Trial | None, src_format: Format):
    index, failure = trial.failed_hop, trial.failure
    route = trial.made.route
    replacement = kept.made.route[index].name if kept is not None and len(kept.made.route) > index else None
    return tool_finding(route[index].name, hop_name(route, index, src_format), getattr(failure, "failure", ERROR),
                        failure.detail, getattr(failure, "log_tail", []), getattr(failure, "status", None),
                        replacement if replacement != route[index].name else None)


def _convert_hops(made: "Made", trial: Trial, cache: HopCache, clock: Stopwatch) -> Path:
    """Run each hop's converter in a child, into made.work; return the last hop's output."""
    current, current_format = made.source, made.source_format
    made.hop_paths = []
    for index, converter in enumerate(made.route):
        key = tuple(c.name for c in made.route[:index + 1])
        if key not in cache.done:
            out = hop_output(made.work, index + 1, converter)
            cache.done[key] = (out, _run_hop(converter, current, current_format, out, made, clock,
                                             cache.pending.pop(key, None)))
            trial.ran[index] = cache.done[key][1].seconds
        out, hop = cache.done[key]
        trial.report.route.append(hop)
        made.hop_paths.append(out)
        current, current_format = out, converter.target
    return current


def _run_hop(converter: Converter, src: Path, src_format: Format, out: Path, made: "Made", clock: Stopwatch,
             pending: PendingHop | None = None) -> Hop:
    """One hop in its child (or the one started early); its failure is raised with the child's last lines."""
    with clock.stage(f"convert:{converter.name}"):
        try:
            if pending is not None:
                run = pending.finish()
            else:
                run = convert_isolated(converter, src, src_format, out, made.options, made.isolation)
        except (OSError, ConverterFailedError) as exc:  # a full disk is the output location's fault
            raise as_output_space_error(exc, made.work) or exc
    return Hop(
        converter=converter.name,
        tool_version=run.tool_version,
        source_format=src_format.value,
        target_format=converter.target.value,
        seconds=round(run.seconds, 3),
        options=made.options.describe(converter.honoured_options),
        numeric_options=converter.numeric_options(made.options),
        interpreter=run.interpreter,
    )


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
    isolation: Isolation = field(default_factory=Isolation)
    hop_paths: list[Path] = field(default_factory=list)  # each hop's model (earlier routes' when shared)
    trace_divergence: bool = False

    def last_onnx(self) -> Path | None:
        """The last ONNX model along the route before the target (repairs of non-ONNX targets edit it)."""
        hops = self.hop_paths or [hop_output(self.work, i, c) for i, c in enumerate(self.route, start=1)]
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
        trace_first=made.trace_divergence,
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
    from .hops.requantise import KeepFloatTfliteConverter

    def run(names: list[str], out: Path) -> Path:
        convert_isolated(KeepFloatTfliteConverter(names), made.source, made.source_format, out, made.options,
                         made.isolation)
        return out

    return run


def _reconvert(made: Made, folder: Path) -> Path:
    """The TOOL repair: the same route again (each hop in a child), without the options that change numerics."""
    folder.mkdir(parents=True, exist_ok=True)
    again = replace(made, options=made.options.without_numeric_options(), work=folder, hop_paths=[])
    return _convert_hops(again, Trial(again, Report(command="reconvert", source={}, target={})), HopCache(), Stopwatch())


def _finish_route_from_onnx(made: Made, onnx: Path, out: Path) -> None:
    """Run the hops that follow the route's last ONNX model on a repaired copy of it."""
    index = max(i for i, c in enumerate(made.route) if c.target is Format.ONNX and i < len(made.route) - 1)
    current, current_format = onnx, Format.ONNX
    for converter in made.route[index + 1:]:
        target = out if converter is made.route[-1] else out.with_name(f"{out.stem}-{converter.target.value}{converter.target.suffix}")
        convert_isolated(converter, current, current_format, target, made.options, made.isolation)
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
    validation.describe_source_outputs(report.calibration)
