"""`safeconvert tf2onnx ...` and `safeconvert onnx2torch IN OUT`: the converters' own calls, verified.

`safeconvert tf2onnx` takes tf2onnx's command-line flags with tf2onnx's meaning, so putting `safeconvert`
in front of `python -m tf2onnx.convert`'s arguments (in place of `python -m`) is the whole change. It
runs the conversion as tf2onnx's CLI does (wrappers/tf2onnx_cli.py), then the usual validation, and
writes OUT only if verified. tf2onnx flags safeconvert cannot honour are refused with the reason, never
silently dropped: a conversion that quietly differs from what was asked for would defeat the point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli import (
    CalibOption,
    InputShapeOption,
    MaxMismatchOption,
    PreprocessOption,
    ReportOption,
    RtolOption,
    parse_shape,
)
from .cli_output import JsonOption, QuietOption, json_errors, show_outcome
from .errors import BadInputError

ForceOption = typer.Option(False, "--force", help="Overwrite OUT if it exists.")
NoRepairOption = typer.Option(False, "--no-repair", help="Only validate: do not localize and repair a disagreeing conversion.")
AllowUnverifiedOption = typer.Option(False, "--allow-unverified", help="Write OUT even when not verified (exit code stays 1).")

_SAVEDMODEL_SIGNATURE = "safeconvert validates the SavedModel's serving_default signature, the one tf2onnx converts by default"
_CUSTOM_OPS = "custom ops cannot run in ONNX Runtime, so the converted model could not be validated"
_NOT_RUNNABLE = "safeconvert cannot run this kind of source to validate against (use --saved-model, --keras or --tflite)"
_LOGS = "converter logs are not passed through (SAFECONVERT_VERBOSE=1 shows native logs)"

# tf2onnx flags that safeconvert refuses, and why.
UNSUPPORTED_TF2ONNX_FLAGS: dict[str, str] = {
    "--input": _NOT_RUNNABLE,
    "--graphdef": _NOT_RUNNABLE,
    "--checkpoint": _NOT_RUNNABLE,
    "--tfjs": _NOT_RUNNABLE,
    "--tag": _SAVEDMODEL_SIGNATURE,
    "--signature_def": _SAVEDMODEL_SIGNATURE,
    "--concrete_function": _SAVEDMODEL_SIGNATURE,
    "--large_model": "the external-data zip it writes is not validated (models over 2 GB are out of scope)",
    "--custom-ops": _CUSTOM_OPS,
    "--extra_opset": _CUSTOM_OPS,
    "--load_op_libraries": _CUSTOM_OPS,
    "--continue_on_error": "a graph with unconverted ops cannot be verified",
    "--ignore_default": "it applies to graphdef sources only",
    "--use_default": "it applies to graphdef sources only",
    "--output_frozen_graph": "it writes a second, unverified file",
    "--outputs-as-nchw": "outputs are validated in the source model's layout",
    "--verbose": _LOGS,
    "-v": _LOGS,
    "--debug": _LOGS,
}

_EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    """Add the drop-in commands to the `safeconvert` app."""
    app.command("tf2onnx", context_settings=_EXTRA_ARGS)(tf2onnx_command)
    app.command("onnx2torch")(onnx2torch_command)


def tf2onnx_command(
    ctx: typer.Context,
    saved_model: Optional[Path] = typer.Option(None, "--saved-model", help="input from saved model"),
    keras: Optional[Path] = typer.Option(None, "--keras", help="input from keras model"),
    tflite: Optional[Path] = typer.Option(None, "--tflite", help="input from tflite model"),
    output: Path = typer.Option(..., "--output", "-o", help="output model file (written only if verified)"),
    opset: Optional[int] = typer.Option(None, "--opset", help="opset version to use for onnx domain"),
    inputs: Optional[str] = typer.Option(None, "--inputs", help="model input_names, optionally with shapes: x:0[1,224,224,3]"),
    outputs: Optional[str] = typer.Option(None, "--outputs", help="model output_names"),
    inputs_as_nchw: Optional[str] = typer.Option(None, "--inputs-as-nchw", help="transpose inputs as from nhwc to nchw"),
    rename_inputs: Optional[str] = typer.Option(None, "--rename-inputs", help="input names to use in final model"),
    rename_outputs: Optional[str] = typer.Option(None, "--rename-outputs", help="output names to use in final model"),
    use_graph_names: bool = typer.Option(False, "--use-graph-names", help="(saved model only) skip renaming io using signature names"),
    dequantize: bool = typer.Option(False, "--dequantize", help="remove quantization from model (tflite only)"),
    target: Optional[str] = typer.Option(None, "--target", help="target platform workarounds (rs4,rs5,rs6,caffe2,tensorrt,nhwc)"),
    calib: Optional[Path] = CalibOption,
    preprocess: Optional[str] = PreprocessOption,
    report: Optional[Path] = ReportOption,
    max_mismatch: int = MaxMismatchOption,
    rtol: float = RtolOption,
    force: bool = ForceOption,
    allow_unverified: bool = AllowUnverifiedOption,
    no_repair: bool = NoRepairOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """tf2onnx's command line (same flags, same meaning), verified: OUT is written only if it matches the source."""
    from .formats import Format
    from .wrappers.base import ConversionOptions
    from .wrappers.tf2onnx_cli import Tf2OnnxCliFlags, check_flags

    with json_errors(as_json):
        _refuse_extra_args(ctx.args)
        source, src_format = _tf2onnx_source(saved_model, keras, tflite)
        flags = Tf2OnnxCliFlags(
            inputs=inputs, outputs=outputs, inputs_as_nchw=_split(inputs_as_nchw), rename_inputs=_split(rename_inputs),
            rename_outputs=_split(rename_outputs), use_graph_names=use_graph_names, dequantize=dequantize,
            target=_split(target),
        )
        check_flags(flags, src_format)
        options = ConversionOptions(opset=opset, tf2onnx_cli=flags)
        _run(source, output, Format.ONNX.value, options, calib, preprocess, report, max_mismatch, rtol, force,
             allow_unverified, not no_repair, quiet, as_json)


def onnx2torch_command(
    source: Path = typer.Argument(..., help="The ONNX model."),
    output: Path = typer.Argument(..., help="Where to write the verified TorchScript archive (.pt)."),
    calib: Optional[Path] = CalibOption,
    preprocess: Optional[str] = PreprocessOption,
    report: Optional[Path] = ReportOption,
    max_mismatch: int = MaxMismatchOption,
    rtol: float = RtolOption,
    force: bool = ForceOption,
    allow_unverified: bool = AllowUnverifiedOption,
    input_shape: Optional[str] = InputShapeOption,
    no_repair: bool = NoRepairOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """onnx2torch.convert on IN, verified, saved as TorchScript at OUT (loads with plain torch.jit.load)."""
    from .formats import Format, detect_format
    from .wrappers.base import ConversionOptions

    with json_errors(as_json):
        found = detect_format(source)
        if found is not Format.ONNX:
            raise BadInputError(f"onnx2torch converts ONNX models; {source} is {found.value}")
        options = ConversionOptions(input_shape=parse_shape(input_shape))
        _run(source, output, Format.TORCHSCRIPT.value, options, calib, preprocess, report, max_mismatch, rtol, force,
             allow_unverified, not no_repair, quiet, as_json)


def _run(source: Path, output: Path, to: str, options, calib, preprocess, report, max_mismatch: int, rtol: float,
         force: bool, allow_unverified: bool, repair: bool, quiet: bool, as_json: bool) -> None:
    """The same convert run as `safeconvert convert` (idempotent, atomic), then its exit code."""
    from .pipeline import ConvertRequest
    from .uptodate import convert_if_needed
    from .validators.verdict import Thresholds

    request = ConvertRequest(source, output, to, calib, preprocess, Thresholds(max_mismatch, rtol), options, force,
                             allow_unverified, report, repair=repair)
    outcome = convert_if_needed(request)
    show_outcome(outcome, quiet, as_json)
    raise typer.Exit(outcome.report.exit_code)


def _refuse_extra_args(args: list[str]) -> None:
    """tf2onnx flags safeconvert cannot honour get their reason; anything else is unknown."""
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in UNSUPPORTED_TF2ONNX_FLAGS:
            raise BadInputError(f"tf2onnx flag {flag} is not supported by safeconvert: {UNSUPPORTED_TF2ONNX_FLAGS[flag]}")
        if flag.startswith("-"):
            raise BadInputError(f"no such option: {flag} (see safeconvert tf2onnx --help)")
        raise BadInputError(f"unexpected argument {arg!r}: tf2onnx takes its model from --saved-model, --keras or --tflite")


def _tf2onnx_source(saved_model: Path | None, keras: Path | None, tflite: Path | None):
    """The one source given, checked to be the kind its flag says."""
    from .formats import Format, detect_format

    given = [(flag, path, fmt) for flag, path, fmt in (("--saved-model", saved_model, Format.SAVEDMODEL),
                                                       ("--keras", keras, Format.KERAS),
                                                       ("--tflite", tflite, Format.TFLITE)) if path is not None]
    if len(given) != 1:
        raise BadInputError("give exactly one model: --saved-model DIR, --keras FILE or --tflite FILE")
    flag, path, expected = given[0]
    found = detect_format(path)
    if found is not expected:
        raise BadInputError(f"{flag} expects a {expected.value} model; {path} is {found.value}")
    return path, found


def _split(text: str | None) -> list[str]:
    return [part for part in text.split(",") if part] if text else []
