"""tf2onnx through a SavedModel: Keras models exported with `model.export` first, then tf2onnx's SavedModel path.

tf2onnx has two independent ways into a Keras model: `from_keras` traces the live Keras 3 model, while
`python -m tf2onnx.convert --saved-model` reads the graph Keras' own exporter wrote. A model one of them
cannot trace (or traces wrongly) can still go through the other, so this is registered as a separate
converter for the keras -> onnx hop: the fallback has a real alternative, not the same call again.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import BadInputError
from ..formats import Format
from .base import ConversionOptions
from .keras_export_wrapper import export_saved_model
from .tf2onnx_wrapper import Tf2OnnxConverter


class Tf2OnnxSavedModelConverter(Tf2OnnxConverter):
    """Keras -> SavedModel (keras-export) -> ONNX (tf2onnx's SavedModel path), as one hop."""

    name = "tf2onnx-savedmodel"
    sources = (Format.KERAS,)

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        if src_format is not Format.KERAS:
            raise BadInputError(f"{self.name} converts keras, not {src_format.value}")
        scratch = Path(tempfile.mkdtemp(prefix=".tf2onnx-savedmodel-", dir=Path(out).parent))
        try:
            exported = scratch / "saved_model"
            export_saved_model(Path(src), exported, self.name)
            self._write(exported, Format.SAVEDMODEL, Path(out), options)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
