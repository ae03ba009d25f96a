"""The int8 keep-float repair as a converter, so that it runs in a child process like every other conversion.

The repair re-runs full-integer quantisation keeping some layers in float (repair.tflite_edit); that is a
TFLite conversion, with the same memory appetite and failure modes as the TFLite converter itself.
"""

from __future__ import annotations

from pathlib import Path

from ..formats import Format
from ..wrappers.base import ConversionOptions, Converter, TFLITE_OPTIONS


class KeepFloatTfliteConverter(Converter):
    """Full-integer TFLite conversion with the named layers (and their activations) left in float."""

    name = "tflite-converter"
    honoured_options = TFLITE_OPTIONS
    package = "tensorflow"
    sources = (Format.KERAS, Format.SAVEDMODEL)
    target = Format.TFLITE

    def __init__(self, float_layers: list[str] | None = None):
        self.float_layers = list(float_layers or [])

    @property
    def child_arguments(self) -> dict:
        """What the child process passes to the constructor (JSON)."""
        return {"float_layers": self.float_layers}

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        from ..errors import ConverterFailedError, SafeConvertError, one_line
        from ..repair.tflite_edit import convert_with_float_layers

        try:
            payload = convert_with_float_layers(Path(src), options.representative_data, self.float_layers)
        except SafeConvertError:
            raise
        except Exception as exc:  # TensorFlow's quantiser raises many unrelated types
            raise ConverterFailedError(self.name, one_line(exc)) from None
        Path(out).write_bytes(payload)
