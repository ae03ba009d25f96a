"""tf2onnx: Keras, SavedModel and TFLite models to ONNX.

tf2onnx 1.17 converts Keras 3 models directly (`from_keras`) and TFLite files (`from_tflite`). It has no
`from_saved_model` function: its documented SavedModel path is the CLI `python -m tf2onnx.convert
--saved-model DIR`, whose `main()` is `tf_loader.from_saved_model` followed by `_convert_common`. We call
those two in-process, with the CLI's own defaults, instead of spawning the CLI: same conversion, without a
second TensorFlow start-up (several seconds) per hop.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..errors import BadInputError, ConverterFailedError, SafeConvertError, one_line
from ..formats import Format
from .base import ConversionOptions, Converter
from .onnx_names import canonical_names
from .tf2onnx_cli import convert_like_cli


class Tf2OnnxConverter(Converter):
    """Wraps tf2onnx; the ONNX opset is `options.opset`, or tf2onnx's default when unset."""

    name = "tf2onnx"
    honoured_options = ("opset", "tf2onnx_cli")
    package = "tf2onnx"
    sources = (Format.KERAS, Format.SAVEDMODEL, Format.TFLITE)
    target = Format.ONNX

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        if src_format not in self.sources:
            raise BadInputError(f"{self.name} converts {', '.join(f.value for f in self.sources)}, not {src_format.value}")
        self._write(Path(src), src_format, Path(out), options)

    def _write(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        """Convert with tf2onnx and write the canonically named ONNX file (formats already checked)."""
        try:
            with _quiet_tensorflow_converter():
                proto = self._convert_to_proto(src, src_format, options)
            _check_model(proto)
            payload = canonical_names(proto).SerializeToString()  # same source -> same bytes (onnx_names.py)
        except SafeConvertError:
            raise
        except Exception as exc:  # tf2onnx and TensorFlow raise many unrelated exception types
            raise ConverterFailedError(self.name, one_line(exc)) from None
        out.write_bytes(payload)

    def _convert_to_proto(self, src: Path, src_format: Format, options: ConversionOptions):
        opset = options.opset
        if options.tf2onnx_cli is not None:
            _import_tf2onnx()
            return convert_like_cli(src, src_format, opset, options.tf2onnx_cli)
        if src_format is Format.KERAS:
            return _from_keras(src, opset)
        if src_format is Format.SAVEDMODEL:
            return _from_saved_model(src, opset)
        return _from_tflite(src, opset)


def _import_tf2onnx():
    """Import tf2onnx after TensorFlow has been told to keep quiet (tf2onnx imports TensorFlow itself)."""
    from ..runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import tf2onnx
    import tf2onnx.tf_loader

    return tf2onnx


def _from_keras(src: Path, opset: int | None):
    """Keras 3 model -> ONNX, with every input's batch dimension left dynamic."""
    from ..runners.tf_runner import load_keras_model

    tf2onnx = _import_tf2onnx()
    import tensorflow as tf

    model = load_keras_model(src)
    signature = tuple(
        tf.TensorSpec((None, *tuple(tensor.shape)[1:]), tensor.dtype, name=_input_name(tensor, index))
        for index, tensor in enumerate(model.inputs)
    )
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    return proto


def _input_name(tensor, index: int) -> str:
    """Keras input names become the ONNX input names; fall back to a positional name."""
    name = getattr(tensor, "name", None)
    return name.split(":")[0] if name else f"input_{index}"


def _from_saved_model(src: Path, opset: int | None):
    """What `python -m tf2onnx.convert --saved-model SRC [--opset N]` runs (tf2onnx 1.17 convert.main)."""
    tf2onnx = _import_tf2onnx()
    import tensorflow as tf

    graph_def, inputs, outputs, tables, renames = tf2onnx.tf_loader.from_saved_model(
        str(src), None, None, None, None, None, False,
        return_initialized_tables=True, return_tensors_to_rename=True, use_graph_names=False,
    )
    with tf.device("/cpu:0"):
        proto, _ = tf2onnx.convert._convert_common(
            graph_def, name=str(src), continue_on_error=False, opset=opset, input_names=inputs,
            output_names=outputs, tensors_to_rename=renames, initialized_tables=tables,
        )
    return proto


def _from_tflite(src: Path, opset: int | None):
    tf2onnx = _import_tf2onnx()
    proto, _ = tf2onnx.convert.from_tflite(str(src), opset=opset)
    return proto


def _check_model(proto) -> None:
    """Refuse a model ONNX itself rejects.

    `from_tflite` converts with continue_on_error=True: an op tf2onnx cannot map stays in the graph under its
    TFLite name and the "converted" model would only fail later, when ONNX Runtime loads it. The checker names
    the culprit now, as this converter's failure.
    """
    import onnx

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ConverterFailedError("tf2onnx", f"wrote an invalid ONNX model: {one_line(exc)}") from None


@contextlib.contextmanager
def _quiet_tensorflow_converter() -> Iterator[None]:
    """Hide Keras' "Saved artifact at ..." prints, Python warnings, tf2onnx's INFO logging and the native
    "Created TensorFlow Lite XNNPACK delegate" line `from_tflite` triggers."""
    from ..quiet import native_stderr_silenced

    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
