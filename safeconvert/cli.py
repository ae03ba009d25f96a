"""The `safeconvert` command line (typer). Names and exit codes are a contract: see the README."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .cli_output import JsonOption, QuietOption, VerboseOption, json_errors, show_outcome
from .errors import EXIT_BAD_INPUT, BadInputError, SafeConvertError, one_line
from .html_report.alongside import check_page_path, html_written
from .quiet import framework_output_captured, unraisable_silenced
from .safety.disk import disk_problem
from .safety.signals import EXIT_TERMINATED, Terminated, raise_if_signalled, signals_unwind

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Convert image models between Keras, TF SavedModel, TFLite, ONNX and PyTorch; verify on real photos; "
    "write only verified models.",
)

EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


def _print_version(asked: bool) -> None:
    if asked:
        print(f"safeconvert {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print safeconvert's version and exit."),
) -> None:
    pass  # no docstring: the app's help above stays the help text; --version acts in its callback

CalibOption = typer.Option(None, "--calib", help="Calibration images: a directory (jpg/png/bmp/webp) or a .npy array. "
                           "Default: the 42 photos shipped with safeconvert.")
PreprocessOption = typer.Option(None, "--preprocess", help="torch | tf | caffe | raw | none (default: by source framework).")
ReportOption = typer.Option(None, "--report", help="Write the JSON report here.")
HtmlOption = typer.Option(None, "--html", help="Write a self-contained HTML report here (verdict, findings, "
                          "per-layer divergence plot, the photos whose label changed).")
MaxMismatchOption = typer.Option(0, "--max-mismatch", min=0, help="Top-1 label changes allowed for a verified verdict.")
RtolOption = typer.Option(1e-3, "--rtol", min=0.0, help="Allowed max |diff| of every output as a fraction of its robust "
                          "scale (the median over images of the largest deviation from each value's median).")
MaxNearTiesOption = typer.Option(2, "--max-near-ties", min=0, help="Label changes on near-tied images (small source "
                                 "margin and small difference) excused at most; beyond, they count as mismatches.")
QuantisedRtolOption = typer.Option(0.5, "--quantised-rtol", min=0.0, help="With --keep-quantisation: allowed max |diff| "
                                   "of every output as a fraction of its robust scale.")
MinCosineOption = typer.Option(0.9, "--min-cosine", min=-1.0, max=1.0, help="With --keep-quantisation: the lowest "
                               "cosine similarity allowed for any image (centred outputs).")
InputShapeOption = typer.Option(None, "--input-shape", help="Input shape for models that record none, e.g. 1,3,224,224.")
KeepQuantisationOption = typer.Option(
    False, "--keep-quantisation", help="The quantisation is wanted: when it breaks the verdict, keep the fewest layers "
    "in float instead of undoing it.")
TrustOption = typer.Option(False, "--trust-model-code", help="Load models that run code from the file when loaded "
                           "(TorchScript .pt, .pt2 archives that fail the static audit). Only for files you trust.")
# Isolation of each converter call in a child process (docs/converter-protocol.md)
HopTimeoutOption = typer.Option(None, "--hop-timeout", help="Seconds a converter may run per hop (default 900); "
                                "past it the converter is killed and another one for the hop is tried.")
HopMemoryOption = typer.Option(None, "--hop-memory", help="MB of memory a converter may use per hop (default 80% of RAM).")
ConverterEnvOption = typer.Option(None, "--converter-env", help="NAME=/path/to/python: run converter NAME in that "
                                  "interpreter (repeatable; also the converter-env table of safeconvert.toml).")
ConfigOption = typer.Option(None, "--config", help="TOML file with a converter-env table (default ./safeconvert.toml).")


def thresholds(max_mismatch: int, rtol: float, max_near_ties: int, quantised_rtol: float, min_cosine: float,
               keep_quantisation: bool = False):
    """The verdict's limits from the command line (validators/verdict.py says what each guarantees)."""
    from .validators.verdict import Thresholds

    return Thresholds(max_mismatch, rtol, keep_quantisation=keep_quantisation, max_near_ties=max_near_ties,
                      quantised_rtol=quantised_rtol, min_cosine=min_cosine)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise BadInputError(f"--input-shape must be comma-separated integers, got '{text}'") from None
    if len(shape) != 4 or min(shape) <= 0:
        raise BadInputError(f"--input-shape must be 4 positive integers (N,C,H,W or N,H,W,C), got '{text}'")
    return shape


def _run_and_exit(run, quiet: bool, as_json: bool, html: Path | None = None, verbose: bool = False) -> None:
    """Run one command (errors as JSON too when --json), show its outcome, exit with the report's code.

    What frameworks print meanwhile stays off the terminal unless --verbose; the progress display (only on a
    terminal) draws on the real stderr."""
    from rich.console import Console

    from . import progress

    show_progress = progress.wanted(quiet, as_json)  # asked before stderr is redirected
    with json_errors(as_json), framework_output_captured(verbose) as terminal, \
            progress.shown(show_progress, Console(file=terminal)):
        if html is not None:
            check_page_path(html)  # before a long run, not after it
        outcome = run()
    show_outcome(outcome, quiet, as_json)
    raise typer.Exit(outcome.report.exit_code)


@app.command()
def convert(
    source: Path = typer.Argument(..., help="Source model: .keras/.h5, SavedModel directory, .onnx, .tflite, .pt2 or .pt."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the verified model."),
    to: Optional[str] = typer.Option(None, "--to", help="Target format (onnx, tflite, torch, pt2, keras, savedmodel); default from OUT's suffix."),
    calib: Optional[Path] = CalibOption,
    preprocess: Optional[str] = PreprocessOption,
    report: Optional[Path] = ReportOption,
    max_mismatch: int = MaxMismatchOption,
    rtol: float = RtolOption,
    max_near_ties: int = MaxNearTiesOption,
    quantised_rtol: float = QuantisedRtolOption,
    min_cosine: float = MinCosineOption,
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
    allow_unverified: bool = typer.Option(False, "--allow-unverified", help="Write OUT even when not verified (exit code stays 1)."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset for converters that write ONNX."),
    tflite_optimize: bool = typer.Option(False, "--tflite-optimize", help="TFLite converter: Optimize.DEFAULT (dynamic-range weight quantisation)."),
    tflite_float16: bool = typer.Option(False, "--tflite-float16", help="TFLite converter: float16 weights."),
    tflite_int8: bool = typer.Option(False, "--tflite-int8", help="TFLite converter: full-integer int8, calibrated on --calib."),
    input_shape: Optional[str] = InputShapeOption,
    trust_model_code: bool = TrustOption,
    no_repair: bool = typer.Option(False, "--no-repair", help="Only validate: do not localize and repair a disagreeing conversion."),
    keep_quantisation: bool = KeepQuantisationOption,
    html: Optional[Path] = HtmlOption,
    hop_timeout: Optional[float] = HopTimeoutOption,
    hop_memory: Optional[int] = HopMemoryOption,
    converter_env: Optional[list[str]] = ConverterEnvOption,
    config: Optional[Path] = ConfigOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
    verbose: bool = VerboseOption,
) -> None:
    """Convert SOURCE, validate it against SOURCE, and write OUTPUT only if verified (a no-op when OUT is up to date)."""
    from .hops.settings import with_isolation
    from .pipeline import ConvertRequest
    from .uptodate import convert_if_needed
    from .wrappers.base import ConversionOptions

    options = ConversionOptions(
        opset=opset,
        tflite_optimizations=["DEFAULT"] if (tflite_optimize or tflite_float16 or tflite_int8) else [],
        tflite_supported_types=["float16"] if tflite_float16 else [],
        tflite_int8=tflite_int8,
        input_shape=parse_shape(input_shape),
        keep_quantisation=keep_quantisation,
    )
    with html_written(html, report) as report:
        limits = thresholds(max_mismatch, rtol, max_near_ties, quantised_rtol, min_cosine)
        request = ConvertRequest(source, output, to, calib, preprocess, limits, options,
                                 force, allow_unverified, report, trust_model_code, repair=not no_repair,
                                 trace_divergence=html is not None)
        _run_and_exit(lambda: convert_if_needed(with_isolation(request, hop_timeout, hop_memory, converter_env, config)), quiet, as_json, html, verbose)


@app.command()
def check(
    source: Path = typer.Argument(..., help="The original model."),
    target: Path = typer.Argument(..., help="Its conversion, to be checked against SOURCE."),
    calib: Optional[Path] = CalibOption,
    preprocess: Optional[str] = PreprocessOption,
    report: Optional[Path] = ReportOption,
    max_mismatch: int = MaxMismatchOption,
    rtol: float = RtolOption,
    max_near_ties: int = MaxNearTiesOption,
    quantised_rtol: float = QuantisedRtolOption,
    min_cosine: float = MinCosineOption,
    input_shape: Optional[str] = InputShapeOption,
    trust_model_code: bool = TrustOption,
    keep_quantisation: bool = typer.Option(False, "--keep-quantisation", help="The quantisation is wanted: judge TARGET "
                                           "by labels and the quantisation floor, and require it to be quantised."),
    html: Optional[Path] = HtmlOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
    verbose: bool = VerboseOption,
) -> None:
    """Validate an existing conversion TARGET against SOURCE (exit 0 verified, 1 not)."""
    from .pipeline import CheckRequest, run_check

    with html_written(html, report) as report:
        limits = thresholds(max_mismatch, rtol, max_near_ties, quantised_rtol, min_cosine, keep_quantisation)
        _run_and_exit(lambda: run_check(CheckRequest(source, target, calib, preprocess, limits,
                                                     parse_shape(input_shape), report, trust_model_code)), quiet, as_json, html, verbose)


@app.command()
def localize(
    source: Path = typer.Argument(..., help="The original model."),
    target: Path = typer.Argument(..., help="Its conversion."),
    calib: Optional[Path] = CalibOption,
    preprocess: Optional[str] = PreprocessOption,
    report: Optional[Path] = ReportOption,
    max_mismatch: int = MaxMismatchOption,
    rtol: float = RtolOption,
    max_near_ties: int = MaxNearTiesOption,
    quantised_rtol: float = QuantisedRtolOption,
    min_cosine: float = MinCosineOption,
    input_shape: Optional[str] = InputShapeOption,
    trust_model_code: bool = TrustOption,
    keep_quantisation: bool = KeepQuantisationOption,
    html: Optional[Path] = HtmlOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
    verbose: bool = VerboseOption,
) -> None:
    """Validate TARGET against SOURCE and, when they disagree, say where and why (findings only; exit 0 verified, 1 not)."""
    from .pipeline import RepairRequest, run_localize

    with html_written(html, report) as report:
        limits = thresholds(max_mismatch, rtol, max_near_ties, quantised_rtol, min_cosine)
        request = RepairRequest(source, target, calib, preprocess, limits, parse_shape(input_shape),
                                report, trust_model_code, keep_quantisation=keep_quantisation)
        _run_and_exit(lambda: run_localize(request), quiet, as_json, html, verbose)


@app.command()
def repair(
    source: Path = typer.Argument(..., help="The original model."),
    target: Path = typer.Argument(..., help="Its faulty conversion (ONNX, TFLite or TorchScript)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the repaired, verified model (TARGET's format)."),
    calib: Optional[Path] = CalibOption,
    preprocess: Optional[str] = PreprocessOption,
    report: Optional[Path] = ReportOption,
    max_mismatch: int = MaxMismatchOption,
    rtol: float = RtolOption,
    max_near_ties: int = MaxNearTiesOption,
    quantised_rtol: float = QuantisedRtolOption,
    min_cosine: float = MinCosineOption,
    input_shape: Optional[str] = InputShapeOption,
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
    allow_unverified: bool = typer.Option(False, "--allow-unverified", help="Write OUT even when the repair does not verify."),
    trust_model_code: bool = TrustOption,
    keep_quantisation: bool = KeepQuantisationOption,
    html: Optional[Path] = HtmlOption,
    hop_timeout: Optional[float] = HopTimeoutOption,
    hop_memory: Optional[int] = HopMemoryOption,
    converter_env: Optional[list[str]] = ConverterEnvOption,
    config: Optional[Path] = ConfigOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
    verbose: bool = VerboseOption,
) -> None:
    """Localize and repair an existing conversion TARGET; write OUT only once it is verified against SOURCE."""
    from .hops.settings import with_isolation
    from .pipeline import RepairRequest, run_repair

    with html_written(html, report) as report:
        limits = thresholds(max_mismatch, rtol, max_near_ties, quantised_rtol, min_cosine)
        request = RepairRequest(source, target, calib, preprocess, limits, parse_shape(input_shape),
                                report, trust_model_code, output=output, force=force, allow_unverified=allow_unverified,
                                keep_quantisation=keep_quantisation, trace_divergence=html is not None)
        _run_and_exit(lambda: run_repair(with_isolation(request, hop_timeout, hop_memory, converter_env, config)), quiet, as_json, html, verbose)


@app.command("report")
def report_page(
    report_json: Path = typer.Argument(..., help="A JSON report written with --report."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the HTML page."),
) -> None:
    """Render a JSON report as one self-contained HTML page: verdict, route, metrics, findings, divergence plot, photos."""
    from .html_report import html_from_json
    from .html_report.alongside import check_page_path

    check_page_path(output, "--output")
    html_from_json(report_json, output)
    print(f"wrote {output}")


@app.command()
def routes(
    converter_env: Optional[list[str]] = ConverterEnvOption,
    config: Optional[Path] = ConfigOption,
) -> None:
    """The converters found here, their versions, and which routes work (and why not)."""
    from .environment import print_routes
    from .hops.envs import converter_envs

    print_routes(interpreters=converter_envs(converter_env, config).pythons)


@app.command()
def doctor() -> None:
    """Check the environment: frameworks, converters, TVM, and their versions."""
    from .environment import print_doctor

    raise typer.Exit(print_doctor())


@app.command()
def demo(
    workdir: Path = typer.Option(Path("safeconvert-demo"), "--workdir", help="Where the demo writes its models and reports."),
    images: Optional[int] = typer.Option(None, "--images", min=1, help="Use only the first N packaged photos (faster)."),
) -> None:
    """The main job on the embedded default: the real MobileNetV2 converted along several routes, each validated."""
    from .demo import run_demo

    raise typer.Exit(run_demo(workdir, images))


from .cli_dropins import register as register_dropins  # noqa: E402  (the drop-ins reuse the options above)

register_dropins(app)  # `safeconvert tf2onnx ...`, `safeconvert onnx2torch IN OUT`


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure becomes one line on stderr and a documented exit code, never a traceback."""
    from .safety.memory_limit import memory_limited

    click_error, click_abort = _click_exceptions()
    try:
        with signals_unwind(), unraisable_silenced(), memory_limited():  # SIGTERM unwinds like Ctrl-C: scratch files go
            code = app(args=argv, prog_name="safeconvert", standalone_mode=False)
            raise_if_signalled()  # a signal whose exception some library swallowed still ends the run
        if code == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into a silent Exit(130)
            raise KeyboardInterrupt
    except click_error as exc:
        exc.show()
        code = EXIT_BAD_INPUT
    except SafeConvertError as exc:
        print(f"safeconvert: error: {one_line(exc)}", file=sys.stderr)
        code = exc.exit_code
    except (KeyboardInterrupt, click_abort):
        print("safeconvert: interrupted; nothing was written at the output path", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except Terminated:
        print("safeconvert: terminated; nothing was written at the output path", file=sys.stderr)
        code = EXIT_TERMINATED
    except OSError as exc:
        code = _os_error(exc)
    except MemoryError:
        print("safeconvert: error: out of memory", file=sys.stderr)
        code = EXIT_INTERNAL
    except Exception as exc:  # a bug of ours: still one line, with a distinct code
        print(f"safeconvert: internal error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else 0)


def _os_error(exc: OSError) -> int:
    """A full or read-only disk is the output location's fault (exit 2); any other OSError is ours."""
    problem = disk_problem(exc)
    if problem is not None:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"safeconvert: error: cannot write{where}: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"safeconvert: internal error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
    return EXIT_INTERNAL


def _click_exceptions() -> tuple[type, type]:
    """Typer >= 0.2x vendors click; older ones depend on it. Usage errors and aborts come from either."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # typer with click as a dependency
        from click.exceptions import ClickException
    return ClickException, typer.Abort


if __name__ == "__main__":
    main()
