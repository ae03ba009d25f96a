"""The runner interface: load one model format, run numpy batches, report the input spec."""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from ..formats import Format, InputSpec


class Runner(abc.ABC):
    """Runs one loaded model on numpy batches laid out and typed as `spec` says.

    Subclasses implement `_run_chunk`; `run` splits a batch into chunks the model accepts
    (a model exported with a fixed batch of 1 is fed image by image), so callers never care.
    """

    format: Format
    max_chunk = 16

    def __init__(self, path: Path, spec: InputSpec):
        from ..safety.limits import check_input_shape

        check_input_shape(spec.shape, Path(path).name)  # before any batch is built for an absurd input
        self.path = path
        self.spec = spec

    @property
    def kind(self) -> str:
        """Which runner runs the model (a deferred runner names the one it will load)."""
        return type(self).__qualname__

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Return the model's first output for `batch`, one row per image, as float32."""
        chunk = self.spec.fixed_batch or self.max_chunk
        outputs = [self._run_chunk(batch[start : start + chunk]) for start in range(0, len(batch), chunk)]
        return np.concatenate([np.asarray(o, dtype=np.float32) for o in outputs], axis=0)

    @abc.abstractmethod
    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Run one chunk whose size the model accepts; return its first output."""

    def describe(self) -> dict:
        return {"path": str(self.path), "format": self.format.value, "input": self.spec.to_dict()}
