"""TensorFlow's own TFLite converter: Keras and SavedModel models to .tflite, optionally quantised.

The quantising options change numerics on purpose, so `numeric_options` names them for the report and the
verdict can be read knowing what was asked for. TensorFlow only honours `supported_types` and a
representative dataset when `Optimize.DEFAULT` is on, so float16 and int8 requests switch it on themselves
(the TensorFlow documentation's recipes do the same).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import BadInputError, ConverterFailedError, one_line
from ..formats import Format
from .base import ConversionOptions, Converter, TFLITE_OPTIONS


class TfliteConverter(Converter):
    """Wraps tf.lite.TFLiteConverter (from_keras_model / from_saved_model)."""

    name = "tflite-converter"
    honoured_options = TFLITE_OPTIONS
    package = "tensorflow"
    sources = (Format.KERAS, Format.SAVEDMODEL)
    target = Format.TFLITE

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        if src_format not in self.sources:
            raise BadInputError(f"{self.name} converts {', '.join(f.value for f in self.sources)}, not {src_format.value}")
        _check_options(options)
        converter = _make_converter(Path(src), src_format)
        _apply_options(converter, options)
        try:
            with _quiet():
                flatbuffer = converter.convert()
        except Exception as exc:  # TF raises ConverterError, ValueError, RuntimeError...
            raise ConverterFailedError(self.name, one_line(exc)) from None
        Path(out).write_bytes(flatbuffer)

    def numeric_options(self, options: ConversionOptions) -> list[str]:
        """Describe the quantisation that will be applied, most specific recipe first."""
        if options.tflite_int8:
            count = 0 if options.representative_data is None else len(options.representative_data)
            return [f"int8 full-integer quantisation (weights and activations, calibrated on {count} images; float input/output)"]
        types = [t.lower() for t in options.tflite_supported_types]
        if "float16" in types:
            described = ["float16 weights (Optimize.DEFAULT with supported_types float16)"]
        elif _wants_default(options) or types:
            described = ["Optimize.DEFAULT (dynamic-range weight quantisation)"]
        else:
            described = []
        return described + [f"supported type {t}" for t in types if t != "float16"]


def _wants_default(options: ConversionOptions) -> bool:
    return any(o.upper() in {"DEFAULT", "OPTIMIZE_FOR_SIZE", "OPTIMIZE_FOR_LATENCY"} for o in options.tflite_optimizations)


def _check_options(options: ConversionOptions) -> None:
    """Reject option values TensorFlow would misread, before spending time on a conversion."""
    known = {"DEFAULT", "OPTIMIZE_FOR_SIZE", "OPTIMIZE_FOR_LATENCY", "EXPERIMENTAL_SPARSITY"}
    unknown = [o for o in options.tflite_optimizations if o.upper() not in known]
    if unknown:
        raise BadInputError(f"unknown TFLite optimization {unknown[0]!r} (known: {', '.join(sorted(known))})")
    if options.tflite_int8:
        data = options.representative_data
        if data is None or len(data) == 0:
            raise BadInputError("int8 full-integer quantisation needs representative data (calibration images)")


def _make_converter(src: Path, src_format: Format):
    from ..runners.tf_runner import load_keras_model, quiet_tensorflow

    tf = quiet_tensorflow()
    if src_format is Format.KERAS:
        model = load_keras_model(src)
        try:
            with _quiet():
                return tf.lite.TFLiteConverter.from_keras_model(model)
        except Exception as exc:
            raise ConverterFailedError("tflite-converter", one_line(exc)) from None
    try:
        return tf.lite.TFLiteConverter.from_saved_model(str(src))
    except Exception as exc:
        raise ConverterFailedError("tflite-converter", one_line(exc)) from None


def _apply_options(converter, options: ConversionOptions) -> None:
    """Map safeconvert's option names onto the TFLiteConverter attributes."""
    import tensorflow as tf

    optimizations = {getattr(tf.lite.Optimize, o.upper()) for o in options.tflite_optimizations}
    types = [_tf_dtype(t) for t in options.tflite_supported_types]
    if types or options.tflite_int8:
        optimizations.add(tf.lite.Optimize.DEFAULT)  # TF ignores the other settings without it
    converter.optimizations = sorted(optimizations, key=lambda o: o.value)
    if types:
        converter.target_spec.supported_types = types
    if options.tflite_int8:
        converter.representative_dataset = _representative_dataset(options.representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # inference_input_type / inference_output_type stay float32: the model quantises its own input.


def _tf_dtype(name: str):
    import tensorflow as tf

    try:
        return tf.dtypes.as_dtype(name.lower())
    except TypeError:
        raise BadInputError(f"unknown TFLite supported type {name!r} (e.g. float16, int8)") from None


def _representative_dataset(data: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """One image per yield, as TFLite's calibrator expects (a list with one array per model input)."""
    batch = np.asarray(data, dtype=np.float32)

    def generate() -> Iterator[list[np.ndarray]]:
        for image in batch:
            yield [image[np.newaxis]]

    return generate


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide Keras' "Saved artifact at ..." prints, Python warnings and native stderr chatter while converting.

    TF's C++ calibrator writes "fully_quantize: 0, inference_type: 6, ..." straight to file descriptor 2,
    past Python and TF_CPP_MIN_LOG_LEVEL; conversion errors still arrive in the Python exception.
    """
    from ..quiet import native_stderr_silenced

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced():
        warnings.simplefilter("ignore")
        yield
