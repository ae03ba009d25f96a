"""torch.onnx.export: torch.export archives (.pt2) and TorchScript archives to ONNX.

Registered as two converters, one per exporter, so that a failure of one is a real fallback to the other:
"torch.onnx-dynamo" (the default exporter, .pt2 only) and "torch.onnx-torchscript" (dynamo=False, .pt2 and
TorchScript). `TorchOnnxConverter` ("torch.onnx") keeps choosing by options.torch_dynamo for direct callers;
the route planner puts the exporter options.torch_dynamo names first.

.pt2 sources go to the default (dynamo) exporter as the loaded ExportedProgram itself, not re-exported from
`program.module()`: the program already records which dimensions are dynamic. A program exported with a fixed
batch has batch-specialised ops baked in (a flatten becomes `view(1, C)`), and re-exporting its module with a
dynamic batch writes an ONNX file that declares a dynamic batch yet fails at any other batch size. So the
ONNX batch is dynamic exactly when the .pt2's is.

When options.opset asks for an opset the dynamo exporter cannot write (it emits opset 18 or newer and its
down-converter gives up on e.g. ReduceMean, keeping 18 with only a log warning), the .pt2 is exported again
with the TorchScript-based exporter, which writes older opsets natively (onnx2torch needs opset <= 17).

TorchScript sources always use the TorchScript-based exporter (dynamo=False), whatever options.torch_dynamo
says: the dynamo exporter runs torch.export, which cannot trace a ScriptModule (measured with torch 2.13:
TorchExportError). TorchScript records no input shape, so the example input comes from options.input_shape
or the spec safeconvert stores in the archive; the batch is exported dynamic when the spec says so and ONNX
Runtime confirms it at another batch size, otherwise fixed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import BadInputError, ConverterFailedError, SafeConvertError, one_line
from ..formats import Format
from ..runners.torch_runner import SPEC_EXTRA_FILE, read_stored_spec
from .base import ConversionOptions, Converter

BATCH_AXIS_NAME = "batch"
# The batch used for example inputs when the batch is dynamic, and the other batch ONNX Runtime is checked at.
EXAMPLE_BATCH = 2
CHECK_BATCH = 3


class TorchOnnxConverter(Converter):
    """Wraps torch.onnx.export; the opset is options.opset, or torch's default when unset."""

    name = "torch.onnx"
    honoured_options = ("opset", "torch_dynamo")
    package = "torch"
    sources = (Format.TORCH_EXPORT, Format.TORCHSCRIPT)
    target = Format.ONNX

    def availability(self) -> tuple[bool, str]:
        available, why = super().availability()
        if available and _missing("onnx"):
            return False, "onnx is not installed (torch.onnx.export needs it)"
        return available, why

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        if src_format not in self.sources:
            raise BadInputError(f"{self.name} converts {', '.join(f.value for f in self.sources)}, not {src_format.value}")
        try:
            if src_format is Format.TORCH_EXPORT:
                _from_exported_program(Path(src), Path(out), options)
            else:
                _from_torchscript(Path(src), Path(out), options)
        except SafeConvertError:
            raise
        except Exception as exc:  # torch.export / ONNX translation errors of every kind
            raise ConverterFailedError(self.name, _torch_message(exc)) from None


class TorchOnnxDynamoConverter(TorchOnnxConverter):
    """torch.onnx.export's default (dynamo) exporter, registered as its own converter for .pt2 sources.

    It runs torch.export, so it cannot take TorchScript. When it cannot write the requested opset it still
    falls back to the TorchScript-based exporter inside the same hop (see the module docstring).
    """

    name = "torch.onnx-dynamo"
    honoured_options = ("opset",)  # the exporter is this converter's choice
    sources = (Format.TORCH_EXPORT,)

    def availability(self) -> tuple[bool, str]:
        available, why = super().availability()
        if available and _missing("onnxscript"):
            return False, "onnxscript is not installed (the dynamo exporter needs it)"
        return available, why

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        super().convert(src, src_format, out, replace(options, torch_dynamo=True))


class TorchOnnxTorchScriptConverter(TorchOnnxConverter):
    """torch.onnx.export's TorchScript-based exporter (dynamo=False): the alternative for .pt2 sources, the only
    exporter for TorchScript sources; it keeps BatchNormalization as a node and writes opsets below 18 natively."""

    name = "torch.onnx-torchscript"
    honoured_options = ("opset",)  # the exporter is this converter's choice

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        super().convert(src, src_format, out, replace(options, torch_dynamo=False))


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def _from_exported_program(src: Path, out: Path, options: ConversionOptions) -> None:
    """Dynamo: export the ExportedProgram as is. TorchScript exporter: trace its module at the recorded shape."""
    import torch

    program = _load_exported_program(src)
    if options.torch_dynamo:
        if _missing("onnxscript"):
            raise ConverterFailedError("torch.onnx-dynamo", "the dynamo exporter needs onnxscript (pip install onnxscript), or pass torch_dynamo=False")
        with _quiet_torch_onnx():
            torch.onnx.export(program, (), str(out), dynamo=True, opset_version=options.opset,
                              external_data=False, verbose=False)
        if options.opset is None or _written_opset(out) == options.opset:
            return
        # The dynamo exporter writes opset >= 18 and only tries to down-convert; when that fails it keeps 18
        # and merely logs a warning. The TorchScript exporter writes older opsets natively.
    name, shape, dtype = _program_input(program)
    _export_legacy(program.module(), out, name, shape, dtype, options.opset)


def _written_opset(path: Path) -> int | None:
    """The default-domain opset an ONNX file declares."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _load_exported_program(src: Path):
    import torch

    try:
        return torch.export.load(str(src))
    except Exception as exc:
        raise BadInputError(f"{src.name}: not a loadable torch.export archive ({one_line(exc)})") from None


def _program_input(program) -> tuple[str, tuple[int | None, ...], str]:
    """The single user input's name, shape (None where symbolic) and dtype, from the program's fake tensor."""
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise BadInputError(f"safeconvert handles single-input image models, this one has {len(user_inputs)}")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0])
    fake = node.meta["val"]
    shape = tuple(int(d) if str(d).isdigit() else None for d in fake.shape)
    return user_inputs[0], shape, str(fake.dtype).removeprefix("torch.")


def _from_torchscript(src: Path, out: Path, options: ConversionOptions) -> None:
    import torch

    extra = {SPEC_EXTRA_FILE: ""}
    try:
        module = torch.jit.load(str(src), map_location="cpu", _extra_files=extra).eval()
    except Exception as exc:
        raise BadInputError(f"{src.name}: not a loadable TorchScript archive ({one_line(exc)})") from None
    stored = read_stored_spec(extra[SPEC_EXTRA_FILE], src.name) or {}
    if options.input_shape is not None:
        shape: tuple[int | None, ...] = tuple(options.input_shape)
    elif stored:
        shape = tuple(stored["shape"])
    else:
        raise BadInputError(f"{src.name}: a TorchScript file records no input shape; pass --input-shape, e.g. 1,3,224,224")
    _export_legacy(module, out, stored.get("name", "input"), shape, stored.get("dtype", "float32"), options.opset)


def _export_legacy(module, out: Path, name: str, shape: tuple[int | None, ...], dtype: str, opset: int | None) -> None:
    """TorchScript-based exporter, dynamic batch when the shape says so and ONNX Runtime agrees."""
    if any(d is None for d in shape[1:]):
        raise BadInputError(f"input shape {list(shape)} has dynamic non-batch dimensions: pass --input-shape, e.g. 1,3,224,224")
    dynamic = shape[0] is None
    _run_legacy_export(module, out, name, shape, dtype, opset, dynamic)
    if dynamic and not _batch_really_dynamic(module, out, shape, dtype):
        _run_legacy_export(module, out, name, (1, *shape[1:]), dtype, opset, dynamic=False)


def _run_legacy_export(module, out: Path, name: str, shape, dtype: str, opset: int | None, dynamic: bool) -> None:
    import torch

    example = _example(shape[0] or EXAMPLE_BATCH, shape, dtype, seed=0)
    axes = {name: {0: BATCH_AXIS_NAME}, "output": {0: BATCH_AXIS_NAME}} if dynamic else None
    # TrainingMode.PRESERVE: the modules are in eval mode already, and torch.export's unlifted modules
    # refuse the train(False) call the exporter makes in its default EVAL mode ("Calling train() is not supported").
    with _quiet_torch_onnx():
        torch.onnx.export(module, (example,), str(out), dynamo=False, opset_version=opset, input_names=[name],
                          output_names=["output"], dynamic_axes=axes, external_data=False, verbose=False,
                          training=torch.onnx.TrainingMode.PRESERVE)


def _batch_really_dynamic(module, out: Path, shape, dtype: str) -> bool:
    """Run the exported model at another batch size with ONNX Runtime and compare with the torch module.

    A traced TorchScript module can have its batch baked into reshapes; the exporter would still declare the
    batch dynamic, and the file would fail (or mislead) at any other batch size.
    """
    import onnxruntime as ort
    import torch

    example = _example(CHECK_BATCH, shape, dtype, seed=1)
    try:
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
        with torch.no_grad():
            want = _first_output(module(example))
    except Exception:
        return False
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-3, atol=1e-4 * scale))


def _example(batch: int, shape, dtype: str, seed: int):
    import torch

    rng = np.random.default_rng(seed)
    size = (batch, *shape[1:])
    if np.dtype(dtype).kind == "f":
        return torch.from_numpy(rng.standard_normal(size).astype(dtype))
    return torch.from_numpy(rng.integers(0, 256, size).astype(dtype))


def _first_output(output) -> np.ndarray:
    if isinstance(output, (list, tuple)):
        output = output[0]
    if isinstance(output, dict):
        output = next(iter(output.values()))
    return output.detach().numpy()


def _torch_message(exc: BaseException) -> str:
    """torch.onnx wraps the real error in paragraphs of advice: report the underlying cause on one line."""
    cause = exc.__cause__ or exc
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(cause))
    summary = one_line(RuntimeError(text)) if text.strip() else type(cause).__name__
    return summary if cause is exc else f"{type(exc).__name__}: {summary}"


@contextlib.contextmanager
def _quiet_torch_onnx() -> Iterator[None]:
    """Silence the exporter's progress lines, its "torchvision is not installed" warnings, onnxscript's
    version-converter logging and Python warnings."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)  # onnxscript logs a failed opset down-conversion with a traceback
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
