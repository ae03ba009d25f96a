"""The converter-wrapper interface: one real converter, one hop between two formats."""

from __future__ import annotations

import abc
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..formats import Format

if TYPE_CHECKING:
    from .tf2onnx_cli import Tf2OnnxCliFlags


@dataclass
class ConversionOptions:
    """Options a user can pass through to the converters; each wrapper reads what applies to it.

    representative_data is a float32 batch already preprocessed for the *source* model, in the source's
    layout; the TFLite wrapper feeds it to post-training quantisation.
    """

    opset: int | None = None
    tflite_optimizations: list[str] = field(default_factory=list)  # e.g. ["DEFAULT"]
    tflite_supported_types: list[str] = field(default_factory=list)  # e.g. ["float16"]
    tflite_int8: bool = False  # full-integer quantisation with builtin int8 ops
    representative_data: np.ndarray | None = None
    input_shape: tuple[int, ...] | None = None  # for sources that record none (TorchScript)
    torch_dynamo: bool = True  # torch.onnx.export's default exporter
    keep_quantisation: bool = False  # the user wants the quantisation: repair keeps layers float, never undoes it
    tf2onnx_cli: Tf2OnnxCliFlags | None = None  # set by `safeconvert tf2onnx`: convert as tf2onnx's CLI does

    def without_numeric_options(self) -> "ConversionOptions":
        """The same options minus those that change numerics on purpose (for the TOOL repair)."""
        from dataclasses import replace

        return replace(self, tflite_optimizations=[], tflite_supported_types=[], tflite_int8=False)

    def describe(self, honoured: tuple[str, ...] | None = None) -> dict:
        """The options that shape numerics, for the report (no arrays); only the `honoured` ones when given, so a
        hop's record lists what its converter reads (a TFLite hop does not show torch.onnx's exporter choice)."""
        described = {
            "opset": self.opset,
            "tflite_optimizations": list(self.tflite_optimizations),
            "tflite_supported_types": list(self.tflite_supported_types),
            "tflite_int8": self.tflite_int8,
            "torch_dynamo": self.torch_dynamo,
            **({"tf2onnx_cli": self.tf2onnx_cli.describe()} if self.tf2onnx_cli is not None else {}),
        }
        return described if honoured is None else {k: v for k, v in described.items() if k in honoured}


# Every option ConversionOptions.describe reports; a converter that declares nothing is assumed to read them all.
DESCRIBED_OPTIONS = ("opset", "tflite_optimizations", "tflite_supported_types", "tflite_int8", "torch_dynamo",
                     "tf2onnx_cli")
TFLITE_OPTIONS = ("tflite_optimizations", "tflite_supported_types", "tflite_int8")


class Converter(abc.ABC):
    """A wrapped third-party converter for one hop.

    `convert` writes the converted model at `out` (a file, or a directory for SavedModel) and raises
    ConverterFailedError with the converter's own last words when it fails.
    """

    name: str  # what the report calls it, e.g. "tf2onnx"
    package: str  # the distribution whose version is reported
    sources: tuple[Format, ...]
    target: Format
    honoured_options: tuple[str, ...] = DESCRIBED_OPTIONS  # the ConversionOptions it reads (reports list only these)

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def availability(self) -> tuple[bool, str]:
        """Whether this converter can run here, and if not, why (for `safeconvert routes`)."""
        if self.version() is None:
            return False, f"{self.package} is not installed"
        return True, "ok"

    @abc.abstractmethod
    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        """Convert `src` (of `src_format`) into `out` in this converter's target format."""

    def numeric_options(self, options: ConversionOptions) -> list[str]:
        """Options in effect that change numerics on purpose (quantisation...); empty when none."""
        return []
