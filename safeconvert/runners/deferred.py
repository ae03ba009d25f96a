"""Load a source model only when it must run: when its outputs on the images are cached, it need not.

Checking the same source again finds its outputs on the calibration set in the per-user cache
(validators/output_cache.py); all validation still wants from the model is its input spec. Loading it costs
more than that lookup: 6-13 s for a Keras MobileNetV2 or ResNet101, TensorFlow's import included. So the spec
is cached too (keyed, like the outputs, by the model's bytes and the runtime's version), and when both are
there the source comes back as a DeferredRunner that loads the real model the first time it is asked to run
(a new image, another preprocessing). A model that once failed to load is never cached, so it still fails
where it always did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..formats import Format, InputSpec
from ..model_files import model_digest
from ..user_cache import CacheFolder, cache_root, digest, runtime_versions
from .base import NamedOutput, Runner

SPECS = CacheFolder("source-specs", ".json", max_entries=256)
FORMAT_VERSION = "1"


class DeferredRunner(Runner):
    """A runner whose spec is known and whose model loads on first use (see the module docstring)."""

    def __init__(self, path: Path, fmt: Format, spec: InputSpec, kind: str, input_shape: tuple[int, ...] | None):
        self.format = fmt
        self._kind, self._input_shape = kind, input_shape
        self._real: Runner | None = None
        super().__init__(path, spec)

    @property
    def kind(self) -> str:
        return self._kind

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._loaded().run(batch)

    def run_outputs(self, batch: np.ndarray) -> list[NamedOutput]:
        return self._loaded().run_outputs(batch)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return self._loaded()._run_chunk(chunk)

    def _loaded(self) -> Runner:
        from . import load_runner

        if self._real is None:
            self._real = load_runner(Path(self.path), self.format, self._input_shape)
        return self._real


def load_source_runner(path: Path, fmt: Format, input_shape: tuple[int, ...] | None,
                       outputs_cached: Callable[[Runner], bool]) -> Runner:
    """The source's runner: deferred when its spec is cached and `outputs_cached(runner)` says validation will
    not run it; otherwise loaded now (and its spec cached for next time)."""
    from . import load_runner

    key = _spec_key(Path(path), fmt, input_shape)
    stored = _stored_spec(key)
    if stored is not None:
        deferred = DeferredRunner(path, fmt, *stored, input_shape)
        if outputs_cached(deferred):
            return deferred
    runner = load_runner(path, fmt, input_shape)
    if key is not None:
        SPECS.store(key, json.dumps({"spec": runner.spec.to_dict(), "kind": runner.kind}).encode())
    return runner


def _spec_key(path: Path, fmt: Format, input_shape: tuple[int, ...] | None) -> str | None:
    if cache_root() is None or not path.exists():
        return None
    settings = {"format": fmt.value, "input_shape": list(input_shape or []), "versions": runtime_versions(fmt)}
    return digest(FORMAT_VERSION, json.dumps(settings, sort_keys=True), model_digest(path))


def _stored_spec(key: str | None) -> tuple[InputSpec, str] | None:
    data = SPECS.load(key) if key is not None else None
    if data is None:
        return None
    try:
        entry = json.loads(data)
        spec = entry["spec"]
        return InputSpec(spec["name"], tuple(spec["shape"]), spec["layout"], spec["dtype"]), str(entry["kind"])
    except (ValueError, KeyError, TypeError):
        return None
