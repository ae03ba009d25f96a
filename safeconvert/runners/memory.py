"""Runners for models that live in memory, not in a file: what the Python drop-ins are handed.

`TFLiteConverter.from_keras_model(model)` and `tf2onnx.convert.from_keras(model)` take a Keras model
object, and `onnx2torch.convert` returns a torch module. Validating them must not depend on saving them
first (custom layers may not save, and saving costs time), so these runners call the objects directly.
Their `path` is a descriptive placeholder; callers pass source outputs to `validate` themselves, because
the per-file output cache keys on real files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..formats import Format, InputSpec, guess_layout
from .base import Runner
from .tf_runner import KerasRunner
from .torch_runner import _call_torch, call_torch_outputs


class KerasModelRunner(KerasRunner):
    """A Keras model object, run as KerasRunner runs a loaded file."""

    def __init__(self, model, input_shape: tuple[int, ...] | None = None):
        label = f"<Keras model {getattr(model, 'name', '')}>".replace(" >", ">")
        inputs = list(getattr(model, "inputs", None) or [])
        if len(inputs) != 1:
            raise BadInputError(f"{label}: safeconvert handles built single-input image models, this one has {len(inputs)} inputs")
        self.model = model
        tensor = inputs[0]
        shape = tuple(input_shape) if input_shape else tuple(tensor.shape)
        spec = InputSpec(getattr(tensor, "name", "input"), shape, guess_layout(shape), str(tensor.dtype))
        Runner.__init__(self, Path(label), spec)


class TorchModuleRunner(Runner):
    """A torch.nn.Module object (e.g. onnx2torch's GraphModule) called on float32 batches."""

    format = Format.TORCH_EXPORT  # the nearest format: a live PyTorch module, not an archive

    def __init__(self, module, spec: InputSpec, label: str = "<PyTorch module>"):
        self.module = module.eval()
        super().__init__(Path(label), spec)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return _call_torch(self.module, chunk)

    def _run_chunk_outputs(self, chunk: np.ndarray) -> list:
        return call_torch_outputs(self.module, chunk)
