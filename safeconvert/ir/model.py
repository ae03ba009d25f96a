"""IrModel: one model in the common Relax form — import, normalise, enumerate layers, run with taps.

This is what localisation stages hold on to. Everything expensive happens once: import and
normalisation in `load_ir`, compilation on the first `run_taps`/`run` (one executable exposing every
layer's output, reused for any subset).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..formats import Format
from .importers import ImportedModel
from .layers import Layer


@dataclass
class IrModel:
    """A normalised model with its layers; run it on numpy batches in the model's own input layout.

    imported: the raw import (origin table, input spec). module: the normalised IRModule.
    layers: all layers in execution order (Layer.index is the position here).
    timings: seconds spent in import, normalise, enumerate, compile, vm_init (filled as they happen).
    """

    imported: ImportedModel
    module: Any
    layers: list[Layer]
    timings: dict[str, float] = field(default_factory=dict)
    _runner: Any = field(default=None, repr=False)

    @property
    def format(self) -> Format:
        return self.imported.format

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Static input shape `main` takes per run (batch 1), in the model's own layout."""
        return self.imported.input_shape

    @property
    def input_layout(self) -> str:
        return self.imported.input_layout

    def compute_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.role == "compute"]

    def runner(self):
        """The compiled TapRunner exposing every layer's output (built on first use, then cached)."""
        if self._runner is None:
            from .taps import TapRunner

            self._runner = TapRunner.build(self.module, [layer.tap for layer in self.layers])
            self.timings["compile"] = self._runner.compile_seconds
            self.timings["vm_init"] = self._runner.init_seconds
        return self._runner

    def run_taps(self, batch: np.ndarray, layer_ids: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        """Outputs of the given layers (all when None) for `batch`, keyed by layer index."""
        ids = [layer.index for layer in self.layers] if layer_ids is None else [int(i) for i in layer_ids]
        result = self.runner().run(np.asarray(batch), [self.layers[i].tap for i in ids])
        self.timings["run_per_image"] = result.seconds_per_image
        return {i: result.taps[self.layers[i].tap] for i in ids}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model output for `batch` (float32)."""
        result = self.runner().run(np.asarray(batch), [])
        self.timings["run_per_image"] = result.seconds_per_image
        return result.output


def load_ir(source, fmt: Format | None = None, input_shape: tuple[int, ...] | None = None) -> IrModel:
    """Import (path, Keras model object or ImportedModel), normalise and enumerate layers."""
    from .importers import import_model
    from .layers import enumerate_layers
    from .normalise import normalise

    timings: dict[str, float] = {}
    start = time.perf_counter()
    if isinstance(source, ImportedModel):
        imported = source
    elif isinstance(source, (str, Path)):
        imported = import_model(Path(source), fmt, input_shape)
    else:  # an in-memory Keras model
        from .keras_reference import import_keras

        imported = import_keras(source)
    timings["import"] = time.perf_counter() - start
    start = time.perf_counter()
    module = normalise(imported.module)
    timings["normalise"] = time.perf_counter() - start
    start = time.perf_counter()
    layers = enumerate_layers(module, imported.origins)
    timings["enumerate"] = time.perf_counter() - start
    return IrModel(imported, module, layers, timings)
