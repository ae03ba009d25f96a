"""The runner interface: load one model format, run numpy batches, report the input spec."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..formats import Format, InputSpec


@dataclass
class NamedOutput:
    """One output of a model over a batch: its name in the model file and one row per image (float32)."""

    name: str
    values: np.ndarray

    def subset(self, indices) -> "NamedOutput":
        return NamedOutput(self.name, self.values[indices])


def output_names(names: list[str] | None, count: int) -> list[str]:
    """The model's own output names when it has one per output, else output_0, output_1..."""
    if names is not None and len(names) == count and len(set(names)) == count:
        return [str(n) for n in names]
    return [f"output_{i}" for i in range(count)]


def named_outputs(output, names: list[str] | None = None) -> list[NamedOutput]:
    """A framework's forward result (one tensor, a list/tuple, or a dict) as named numpy outputs."""
    if isinstance(output, dict):
        return [NamedOutput(str(k), np.asarray(v)) for k, v in output.items()]
    items = list(output) if isinstance(output, (list, tuple)) else [output]
    return [NamedOutput(n, np.asarray(v)) for n, v in zip(output_names(names, len(items)), items)]


class Runner(abc.ABC):
    """Runs one loaded model on numpy batches laid out and typed as `spec` says.

    Subclasses implement `_run_chunk` (the first output) and, when the model can have several outputs,
    `_run_chunk_outputs` (all of them, named); `run`/`run_outputs` split a batch into chunks the model
    accepts (a model exported with a fixed batch of 1 is fed image by image), so callers never care.
    Validation compares every output (`run_outputs`); callers that want one array use `run`.
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

    def run_outputs(self, batch: np.ndarray) -> list[NamedOutput]:
        """Every output of the model for `batch`, in the model's order, each one row per image, as float32."""
        chunk = self.spec.fixed_batch or self.max_chunk
        parts = [self._run_chunk_outputs(batch[start : start + chunk]) for start in range(0, len(batch), chunk)]
        return join_chunks(parts)

    @abc.abstractmethod
    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Run one chunk whose size the model accepts; return its first output."""

    def _run_chunk_outputs(self, chunk: np.ndarray) -> list[NamedOutput]:
        """Run one chunk; return every output (a runner whose models have one output need not override)."""
        return [NamedOutput("output_0", np.asarray(self._run_chunk(chunk)))]

    def describe(self) -> dict:
        return {"path": str(self.path), "format": self.format.value, "input": self.spec.to_dict()}


def join_chunks(parts: list[list[NamedOutput]]) -> list[NamedOutput]:
    """Outputs of consecutive chunks joined along the batch, output by output, as float32."""
    first = parts[0]
    return [NamedOutput(out.name, np.concatenate([np.asarray(p[i].values, dtype=np.float32) for p in parts], axis=0))
            for i, out in enumerate(first)]
