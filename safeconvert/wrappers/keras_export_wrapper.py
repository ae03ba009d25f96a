"""Keras' own SavedModel export: .keras / .h5 models to a TF SavedModel directory (`model.export(DIR)`).

Keras 3 no longer writes SavedModels through `model.save`; `model.export(DIR, format="tf_saved_model")` is the
documented way, and its `serve` endpoint is also published as the `serving_default` signature that
`tf.saved_model.load` users and TensorFlow Serving call. The model is loaded with safe_mode (no Lambda
bytecode, no custom classes), like every Keras file safeconvert reads.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..errors import BadInputError, ConverterFailedError, one_line
from ..formats import Format
from .base import ConversionOptions, Converter


class KerasExportConverter(Converter):
    """Wraps keras.Model.export(format="tf_saved_model")."""

    name = "keras-export"
    honoured_options = ()
    package = "keras"
    sources = (Format.KERAS,)
    target = Format.SAVEDMODEL

    def availability(self) -> tuple[bool, str]:
        available, why = super().availability()
        if available and _missing("tensorflow"):
            return False, "tensorflow is not installed (Keras exports SavedModels through it)"
        return available, why

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        if src_format is not Format.KERAS:
            raise BadInputError(f"{self.name} converts keras, not {src_format.value}")
        export_saved_model(Path(src), Path(out), self.name)


def export_saved_model(src: Path, out: Path, converter_name: str) -> None:
    """Load a Keras file safely and export it as a SavedModel at `out` (a directory that must not exist)."""
    from ..runners.tf_runner import load_keras_model

    model = load_keras_model(src)
    try:
        with _quiet():
            model.export(str(out), format="tf_saved_model", verbose=False)
    except Exception as exc:  # TF tracing errors of every kind
        raise ConverterFailedError(converter_name, one_line(exc)) from None
    if not (out / "saved_model.pb").is_file():
        raise ConverterFailedError(converter_name, "model.export finished without writing saved_model.pb")


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the export's "Saved artifact at ..." listing, Python warnings and native stderr chatter."""
    from ..quiet import native_stderr_silenced

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced():
        warnings.simplefilter("ignore")
        yield
