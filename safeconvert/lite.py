"""`from safeconvert.lite import TFLiteConverter`: tf.lite.TFLiteConverter whose convert() is verified.

The class wraps a real tf.lite.TFLiteConverter and forwards every attribute to it, so `optimizations`,
`target_spec.supported_types`, `target_spec.supported_ops`, `representative_dataset`,
`inference_input_type` / `inference_output_type` and the experimental flags mean exactly what they mean
in TensorFlow. `convert()` returns the same flatbuffer bytes TensorFlow produces, after running the
converted model beside the source on the calibration photos. A TensorFlow conversion error propagates
unchanged, as with the original.

Extra attributes: `calibration` (image directory or .npy; default: the packaged photos), `preprocess`,
`max_mismatch`, `rtol`, `allow_unverified` (return the bytes even when not verified), `report_path`
(write the JSON report), and, after convert(), `report` (the Report).

Quantisation is judged like any other change (see dropin_verify): Optimize.DEFAULT on a small model
usually moves outputs beyond the default 1e-3 limit, and convert() raises TFLiteNotVerifiedError naming
the images whose label changed. Raise the limits or set `allow_unverified = True` if that drift is fine.
Not wrapped: `from_concrete_functions` and `experimental_from_jax` (no source safeconvert can run).
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from .dropin_verify import ConversionNotVerifiedError, VerifySettings, conclude, model_file, verify
from .errors import BadInputError
from .report import Hop
from .runners.base import Runner

# Attributes that belong to safeconvert; every other attribute is the real converter's.
SETTINGS = ("calibration", "preprocess", "max_mismatch", "rtol", "allow_unverified", "report_path")
SERVING_SIGNATURE = "serving_default"


class TFLiteNotVerifiedError(ConversionNotVerifiedError):
    """convert() could not verify the TFLite model; `.report` holds the metrics and disagreeing images."""


class TFLiteConverter:
    """tf.lite.TFLiteConverter with verification; build it with from_keras_model or from_saved_model."""

    def __init__(self, real, source: Callable[[], Runner], source_format: str):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_source_format", source_format)
        object.__setattr__(self, "_settings", VerifySettings())
        object.__setattr__(self, "report", None)

    @classmethod
    def from_keras_model(cls, model) -> TFLiteConverter:
        from .runners.memory import KerasModelRunner

        tf = _tensorflow()
        with _quiet():
            real = tf.lite.TFLiteConverter.from_keras_model(model)
        return cls(real, lambda: KerasModelRunner(model), "keras")

    @classmethod
    def from_saved_model(cls, saved_model_dir, signature_keys=None, tags=None) -> TFLiteConverter:
        from .runners.tf_runner import SavedModelRunner

        if signature_keys is not None and list(signature_keys) != [SERVING_SIGNATURE]:
            raise BadInputError(f"safeconvert validates the {SERVING_SIGNATURE!r} signature; got signature_keys={signature_keys!r}")
        tf = _tensorflow()
        with _quiet():
            real = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys, tags)
        return cls(real, lambda: SavedModelRunner(Path(saved_model_dir)), "savedmodel")

    def __getattr__(self, name: str):
        if name in SETTINGS:
            return getattr(object.__getattribute__(self, "_settings"), name)
        return getattr(object.__getattribute__(self, "_real"), name)

    def __setattr__(self, name: str, value) -> None:
        if name in SETTINGS:
            setattr(self._settings, name, value)
        elif name == "report":
            object.__setattr__(self, name, value)
        else:
            setattr(self._real, name, value)

    def convert(self) -> bytes:
        """TensorFlow's conversion, then verification; raises TFLiteNotVerifiedError when not verified."""
        from .runners.tflite_runner import TfliteRunner

        started = time.perf_counter()
        with _quiet():
            flatbuffer = self._real.convert()
        hop = self._hop(time.perf_counter() - started)
        with model_file(flatbuffer, ".tflite") as path:
            self.report = verify(self._source(), TfliteRunner(path), hop, self._settings,
                                 target_label="<bytes returned by TFLiteConverter.convert()>")
        conclude(self.report, self._settings, TFLiteNotVerifiedError, "set converter.allow_unverified = True")
        return flatbuffer

    def _hop(self, seconds: float) -> Hop:
        import importlib.metadata

        return Hop(converter="tflite-converter", tool_version=importlib.metadata.version("tensorflow"),
                   source_format=self._source_format, target_format="tflite", seconds=round(seconds, 3),
                   options=requested_options(self._real), numeric_options=numeric_options(self._real))


def requested_options(real) -> dict:
    """The converter attributes that shape numerics, as plain names for the report."""
    tf = _tensorflow()
    spec = real.target_spec
    return {
        "optimizations": sorted(str(getattr(o, "name", o)) for o in (real.optimizations or [])),
        "supported_types": [tf.as_dtype(t).name for t in (spec.supported_types or [])],
        "supported_ops": sorted(str(getattr(o, "name", o)) for o in (spec.supported_ops or [])),
        "representative_dataset": real.representative_dataset is not None,
        "inference_input_type": tf.as_dtype(real.inference_input_type).name,
        "inference_output_type": tf.as_dtype(real.inference_output_type).name,
    }


def numeric_options(real) -> list[str]:
    """What TensorFlow will do to the numbers, in words (it ignores the type settings without optimizations)."""
    options = requested_options(real)
    described = []
    if options["optimizations"]:
        if options["representative_dataset"]:
            integer_only = "TFLITE_BUILTINS_INT8" in options["supported_ops"]
            described.append("full-integer quantisation calibrated on representative_dataset"
                             + ("" if integer_only else " (float fallback allowed)"))
        elif "float16" in options["supported_types"]:
            described.append("float16 weights")
        else:
            described.append(f"dynamic-range weight quantisation (Optimize.{', '.join(options['optimizations'])})")
    for side in ("input", "output"):
        if options[f"inference_{side}_type"] != "float32":
            described.append(f"{options[f'inference_{side}_type']} model {side}")
    return described


def _tensorflow():
    from .runners.tf_runner import quiet_tensorflow

    return quiet_tensorflow()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keras' "Saved artifact at ..." print, Python warnings and the native calibrator chatter."""
    from .quiet import native_stderr_silenced

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced():
        warnings.simplefilter("ignore")
        yield


__all__ = ["TFLiteConverter", "TFLiteNotVerifiedError"]
