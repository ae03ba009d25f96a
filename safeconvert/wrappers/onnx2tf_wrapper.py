"""onnx2tf: ONNX models to TF SavedModels and to .tflite files (one conversion writes both).

onnx2tf turns an NCHW ONNX graph into an NHWC TensorFlow graph: the SavedModel's and the .tflite's input is
NHWC (the runners read the layout from the model, so validation feeds each model its own layout). An ONNX
model whose input is already NHWC (tf2onnx's, from Keras) keeps that input as it is.

Three things about onnx2tf 1.29 shape this wrapper:

* It needs a static input shape: a dynamic batch is fixed to 1 with `overwrite_input_shape` (other dynamic
  dimensions need --input-shape). The SavedModel's signature still accepts any batch.
* It downloads a calibration sample into the working directory when the file is not there. It runs here in a
  scratch working directory where `onnx2tf_sample.write_sample` has put that file, made from the packaged
  photos: nothing is ever downloaded.
* Importing it changes process-wide state (TF_USE_LEGACY_KERAS=1, which would turn `tf.keras` into Keras 2
  for the rest of the process, a recursion limit of 2**31-1, every warning ignored). That state is put back
  after the import, and the recursion limit it wants is only in force while it converts.

When onnx2tf fails on a graph as written (tf2onnx's MobileNetV2: its depthwise BatchNorm Muls), the
"-fused" entries run it again on a copy that ONNX Runtime's basic optimisations have simplified
(onnx_fusion.py); they come right after the plain entries, so a fallback tries them before onnx-tf.

Its progress output is captured (non_verbose leaves only its errors); when it fails, the last error lines
become this converter's message. Its Keras outputs (output_keras_v3 / output_h5) are tf_keras models built
from TFOpLambda layers, which Keras 3 cannot load, so this wrapper offers no Keras target.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..errors import BadInputError, ConverterFailedError, SafeConvertError, one_line
from ..formats import Format, guess_layout
from .base import ConversionOptions, Converter
from .onnx2tf_sample import write_sample

# Modules onnx2tf imports besides TensorFlow (installed with --no-deps: see requirements/no-deps.txt).
NEEDED_MODULES = ("onnx2tf", "tf_keras", "onnx_graphsurgeon", "sng4onnx", "onnx", "psutil")
SAVEDMODEL_MEMBERS = ("saved_model.pb", "variables", "assets", "fingerprint.pb", "keras_metadata.pb")
ERROR_LINES = 3
# The recursion limit onnx2tf's import asks for (2**31-1), applied only while it converts.
_onnx2tf_recursion_limit: int | None = None


class Onnx2TfConverter(Converter):
    """Wraps onnx2tf.convert; this entry keeps the SavedModel it writes."""

    name = "onnx2tf"
    honoured_options = ()
    package = "onnx2tf"
    sources = (Format.ONNX,)
    target = Format.SAVEDMODEL
    fuse_first = False  # simplify the ONNX graph with ONNX Runtime before onnx2tf sees it (onnx_fusion.py)

    def availability(self) -> tuple[bool, str]:
        available, why = super().availability()
        missing = [m for m in NEEDED_MODULES if _missing(m)]
        if available and missing:
            return False, f"{', '.join(missing)} not installed (onnx2tf imports it)"
        return available, why

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        if src_format is not Format.ONNX:
            raise BadInputError(f"{self.name} converts onnx, not {src_format.value}")
        self._check_options(options)
        src, out = Path(src).absolute(), Path(out).absolute()  # onnx2tf runs in another working directory
        shape = static_input_shape(src, options.input_shape)
        work = Path(tempfile.mkdtemp(prefix=".onnx2tf-", dir=out.parent))
        try:
            folder = run_onnx2tf(src, shape, work, self.name if self.fuse_first else None)
            self._collect(folder, out, options)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _check_options(self, options: ConversionOptions) -> None:
        if options.tflite_optimizations or options.tflite_supported_types or options.tflite_int8:
            raise BadInputError(f"{self.name} writes a float SavedModel: TFLite quantisation options do not apply")

    def _collect(self, folder: Path, out: Path, options: ConversionOptions) -> None:
        """Move the SavedModel's own members into `out`, leaving onnx2tf's other files behind."""
        if not (folder / "saved_model.pb").is_file():
            raise ConverterFailedError(self.name, "finished without writing a SavedModel")
        out.mkdir()
        for member in SAVEDMODEL_MEMBERS:
            if (folder / member).exists():
                shutil.move(str(folder / member), str(out / member))


class Onnx2TfTfliteConverter(Onnx2TfConverter):
    """The same onnx2tf conversion, keeping the .tflite it writes (float32, or float16 weights when asked).

    Its own name, so reports, fallbacks and hop children tell the two onnx2tf entries apart.
    """

    name = "onnx2tf-tflite"
    honoured_options = ("tflite_supported_types",)  # float16 only
    target = Format.TFLITE

    def _check_options(self, options: ConversionOptions) -> None:
        types = {t.lower() for t in options.tflite_supported_types}
        if options.tflite_int8 or options.tflite_optimizations or types - {"float16"}:
            raise BadInputError(f"{self.name} writes float32 or float16 .tflite files only: pass --tflite-float16 or "
                                "nothing (for other quantisation convert through a SavedModel or Keras source)")

    def numeric_options(self, options: ConversionOptions) -> list[str]:
        if "float16" in {t.lower() for t in options.tflite_supported_types}:
            return ["float16 weights (onnx2tf's *_float16.tflite)"]
        return []

    def _collect(self, folder: Path, out: Path, options: ConversionOptions) -> None:
        kind = "float16" if self.numeric_options(options) else "float32"
        found = sorted(folder.glob(f"*_{kind}.tflite"))
        if len(found) != 1:
            raise ConverterFailedError(self.name, f"finished without writing one {kind} .tflite file")
        shutil.move(str(found[0]), str(out))


class Onnx2TfFusedConverter(Onnx2TfConverter):
    """onnx2tf on ONNX Runtime's basic-level simplification of the model (SavedModel)."""

    name = "onnx2tf-fused"
    fuse_first = True


class Onnx2TfFusedTfliteConverter(Onnx2TfTfliteConverter):
    """onnx2tf on ONNX Runtime's basic-level simplification of the model (.tflite)."""

    name = "onnx2tf-fused-tflite"
    fuse_first = True


def static_input_shape(src: Path, override: tuple[int, ...] | None) -> tuple[str, tuple[int, ...]]:
    """The single ONNX input's name and a fully static shape (dynamic batch -> 1)."""
    import onnx

    try:
        proto = onnx.load(str(src), load_external_data=False)
    except Exception as exc:
        raise BadInputError(f"{src.name}: not a loadable ONNX model ({one_line(exc)})") from None
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BadInputError(f"safeconvert handles single-input image models, this ONNX model has {len(inputs)} inputs")
    dims = [d.dim_value if d.dim_value > 0 else None for d in inputs[0].type.tensor_type.shape.dim]
    shape = list(override) if override is not None else dims
    shape[0] = shape[0] or 1  # onnx2tf cannot convert a dynamic batch
    if len(shape) != len(dims) or any(d is None for d in shape):
        raise BadInputError(f"the ONNX input has dynamic dimensions {dims}: pass --input-shape, e.g. 1,3,224,224")
    return inputs[0].name, tuple(int(d) for d in shape)


def run_onnx2tf(src: Path, shape: tuple[str, tuple[int, ...]], work: Path, fused_as: str | None = None) -> Path:
    """Convert in `work` (with the calibration sample in place, on a copy of the ONNX file); return the output folder.

    `fused_as` names the converter entry that simplifies the copy with ONNX Runtime first."""
    write_sample(work)
    model = work / "model.onnx"  # a copy: onnx2tf may rewrite the file it is given
    name, dims = shape
    name = _copy_with_plain_input_name(src, model, name)
    if fused_as is not None:
        from .onnx_fusion import fuse_in_place

        fuse_in_place(model, fused_as)
    folder = work / "tf"
    # onnx2tf takes every 4-D input for NCHW and transposes it; an NHWC input (tf2onnx's) must be kept as it is.
    keep_nhwc = [name] if guess_layout(dims) == "NHWC" else None
    log = io.StringIO()
    onnx2tf = _import_onnx2tf()
    try:
        with _working_directory(work), _recursion_limit(), _captured(log):
            onnx2tf.convert(input_onnx_file_path=str(model), output_folder_path=str(folder),
                            overwrite_input_shape=[f"{name}:{','.join(map(str, dims))}"], output_signaturedefs=True,
                            keep_nwc_or_nhwc_or_ndhwc_input_names=keep_nhwc, not_use_onnxsim=True, non_verbose=True)
    except SafeConvertError:
        raise
    except (Exception, SystemExit) as exc:  # onnx2tf ends with sys.exit(1) after printing its error
        raise ConverterFailedError(fused_as or "onnx2tf", _last_error(log.getvalue(), exc)) from None
    return folder


def _copy_with_plain_input_name(src: Path, copy: Path, name: str) -> str:
    """Copy the model, renaming an input whose name onnx2tf would sanitise (tf2onnx's TFLite inputs are named
    like `serving_default_input:0`): its keep-layout and shape options match the sanitised name only."""
    plain = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if plain == name:
        shutil.copyfile(src, copy)
        return name
    import onnx

    proto = onnx.load(str(src))
    for value in proto.graph.input:
        if value.name == name:
            value.name = plain
    for node in proto.graph.node:
        node.input[:] = [plain if i == name else i for i in node.input]
    onnx.save(proto, str(copy))
    return plain


def _import_onnx2tf():
    """Import onnx2tf, then put back the process-wide state its import changes (see the module docstring)."""
    global _onnx2tf_recursion_limit
    if "onnx2tf" in sys.modules:
        return sys.modules["onnx2tf"]
    from ..runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    saved_env = {k: os.environ.get(k) for k in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")}
    limit = sys.getrecursionlimit()
    try:
        with warnings.catch_warnings(), _captured(io.StringIO()):
            import onnx2tf
    except Exception as exc:
        raise ConverterFailedError("onnx2tf", f"cannot be imported: {one_line(exc)}") from None
    finally:
        _onnx2tf_recursion_limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit)
        for key, value in saved_env.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return onnx2tf


@contextlib.contextmanager
def _recursion_limit() -> Iterator[None]:
    """The recursion limit onnx2tf sets for itself (deep graphs), only while it converts."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_onnx2tf_recursion_limit or limit)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """onnx2tf reads its calibration sample from the current working directory."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _captured(log: io.StringIO) -> Iterator[None]:
    """onnx2tf prints progress and errors on stdout; TensorFlow chatters on native stderr."""
    from ..quiet import native_stderr_silenced

    with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), \
            native_stderr_silenced():
        warnings.simplefilter("ignore")
        yield


def _last_error(output: str, exc: BaseException) -> str:
    """What failed where: the exception in onnx2tf's trace log and the ONNX node it was converting; else
    onnx2tf's own last ERROR lines (colour codes removed), else the exception. (onnx2tf's last ERROR lines
    are generic advice, the same whatever failed.)"""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in output.splitlines()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    cause = _raised(lines)
    node = next((e.removeprefix("onnx_op_name:").strip() for e in errors if e.startswith("onnx_op_name:")), None)
    if cause:
        return one_line(RuntimeError(f"at ONNX node {node}: {cause}" if node else cause))
    if errors:
        return one_line(RuntimeError(" | ".join(errors[-ERROR_LINES:])))
    if isinstance(exc, SystemExit):
        tail = [line for line in lines if line][-ERROR_LINES:]
        return one_line(RuntimeError(" | ".join(tail))) if tail else f"exited with status {exc.code}"
    return one_line(exc)


RAISED = re.compile(r"^([A-Za-z_][\w.]*)?(Error|Exception)\b[^:]*: ")


def _raised(lines: list[str]) -> str | None:
    """The last exception line of a trace log, with the line after it when that one holds the detail
    (TensorFlow's layer errors say which layer first and why on the next line)."""
    index = next((i for i in range(len(lines) - 1, -1, -1) if RAISED.match(lines[i])), None)
    if index is None:
        return None
    following = next((line for line in lines[index + 1:] if line), "")
    detail = "" if following.startswith(("Call arguments", "File ", "ERROR:", "\u2022")) else following
    return f"{lines[index]} {detail}".strip()


def _missing(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True
