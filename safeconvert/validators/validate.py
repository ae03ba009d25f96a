"""Run source and target side by side over a calibration set, in batches, and judge the result."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import progress
from ..errors import BadInputError, SafeConvertError, one_line
from ..runners.base import Runner
from .calibration import CalibrationSet
from .metrics import Metrics, compare_outputs
from .preprocess import Preprocessing, spatial_size, to_model_layout
from .verdict import Thresholds, Verdict, judge

BATCH_SIZE = 16


@dataclass
class Validation:
    """Outcome of one side-by-side run; outputs are kept for localization and reports."""

    metrics: Metrics
    verdict: Verdict
    seconds: float
    source_outputs: np.ndarray
    target_outputs: np.ndarray
    source_cached: bool = False  # the source's outputs were read from the per-user cache, not computed

    def describe_source_outputs(self, calibration: dict | None) -> None:
        """Say in a report's calibration block when the source's outputs came from an earlier run."""
        if self.source_cached and calibration is not None:
            calibration["source_outputs"] = "cached: an earlier run of the same source, runtime, preprocessing and images"


def preprocessing_for(runner: Runner, preset: str) -> Preprocessing:
    height, width = spatial_size(runner.spec)
    return Preprocessing(preset, height, width)


def iter_inputs(calib: CalibrationSet, preprocessing: Preprocessing, batch_size: int = BATCH_SIZE):
    """Yield canonical NHWC float32 batches: preprocessed images, or a float .npy's rows as they are."""
    for _, items in calib.iter_chunks(batch_size):
        if calib.preprocessed:
            yield np.stack(items).astype(np.float32)
        else:
            yield preprocessing.apply(items)


class ModelRunError(BadInputError):
    """A model loaded but fails to run on its own declared input (corrupt weights or shapes, bad batch...)."""

    def __init__(self, path, message: str):
        super().__init__(message)
        self.path = path


def run_model(runner: Runner, calib: CalibrationSet, preprocessing: Preprocessing) -> np.ndarray:
    """All of one model's outputs over the calibration set (a progress bar per batch on a terminal)."""
    outputs = []
    name = getattr(runner.path, "name", runner.path)
    with progress.task(f"running {name}", total=len(calib)) as advance:
        for batch in iter_inputs(calib, preprocessing):
            outputs.append(_run_batch(runner, to_model_layout(batch, runner.spec)))
            advance(len(batch))
    return np.concatenate(outputs, axis=0)


def _run_batch(runner: Runner, batch: np.ndarray) -> np.ndarray:
    """One batch through the model; a runtime's failure becomes one line naming the model."""
    try:
        return runner.run(batch)
    except SafeConvertError:
        raise
    except Exception as exc:  # every runtime raises its own types
        name = getattr(runner.path, "name", runner.path)
        raise ModelRunError(runner.path, f"{name}: the model fails to run on a {list(batch.shape)} input "
                                         f"({one_line(exc)})") from None


# Source outputs by (model file identity, calibration items, preprocessing): converting one source along
# several routes, or re-validating after a repair, runs the source over the images only once. Between runs
# they are kept on disk (output_cache.py), so converting the same source again does not run it either.
_SOURCE_OUTPUTS: dict[tuple, tuple[np.ndarray, bool]] = {}
_SOURCE_CACHE_LIMIT = 8


def source_outputs_cached(runner: Runner, calib: CalibrationSet, preprocessing: Preprocessing) -> tuple[np.ndarray, bool]:
    """The source's outputs over the calibration set, and whether they came from the on-disk cache.

    A model held in memory (the Python API) has no file to key on: it is simply run."""
    if not Path(str(runner.path)).exists():
        return run_model(runner, calib, preprocessing), False
    key = (file_identity(runner.path), calib.source, tuple(calib.names), preprocessing)
    if key not in _SOURCE_OUTPUTS:
        if len(_SOURCE_OUTPUTS) >= _SOURCE_CACHE_LIMIT:
            _SOURCE_OUTPUTS.pop(next(iter(_SOURCE_OUTPUTS)))
        _SOURCE_OUTPUTS[key] = _stored_or_run(runner, calib, preprocessing)
    return _SOURCE_OUTPUTS[key]


def _stored_or_run(runner: Runner, calib: CalibrationSet, preprocessing: Preprocessing) -> tuple[np.ndarray, bool]:
    from . import output_cache

    disk_key = output_cache.outputs_key(runner, calib, preprocessing, BATCH_SIZE)
    stored = output_cache.load(disk_key, len(calib))
    if stored is not None:
        return stored, True
    outputs = run_model(runner, calib, preprocessing)
    output_cache.store(disk_key, outputs)
    return outputs, False


def load_source(path: Path, fmt, input_shape: tuple[int, ...] | None, calib: CalibrationSet, preset: str) -> Runner:
    """The source's runner. When its outputs on `calib` are cached, the model itself is loaded only if something
    asks it to run (runners/deferred.py): a second check of a Keras ResNet101 skips 8-13 s of loading."""
    from ..runners.deferred import load_source_runner
    from . import output_cache

    def outputs_stored(runner: Runner) -> bool:
        key = output_cache.outputs_key(runner, calib, preprocessing_for(runner, preset), BATCH_SIZE)
        return output_cache.is_stored(key)

    return load_source_runner(path, fmt, input_shape, outputs_stored)


def file_identity(path) -> tuple:
    """Path plus size and modification time of the file (or of a SavedModel's saved_model.pb)."""
    path = Path(path).resolve()
    probe = path / "saved_model.pb" if path.is_dir() else path
    stat = probe.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def validate(source: Runner, target: Runner, calib: CalibrationSet, preset: str, thresholds: Thresholds,
             source_outputs: np.ndarray | None = None) -> Validation:
    """Compare target to source on every calibration item; source outputs can be passed in when known."""
    started = time.perf_counter()
    preprocessing = preprocessing_for(source, preset)
    _check_compatible(source, target)
    cached = False
    if source_outputs is None:
        source_outputs, cached = source_outputs_cached(source, calib, preprocessing)
    target_outputs = run_model(target, calib, preprocessing)
    metrics = compare_outputs(source_outputs, target_outputs, calib.names, calib.paths)
    return Validation(metrics, judge(metrics, thresholds), time.perf_counter() - started, source_outputs,
                      target_outputs, cached)


def _check_compatible(source: Runner, target: Runner) -> None:
    src, tgt = spatial_size(source.spec), (target.spec.height, target.spec.width)
    if None not in tgt and tuple(tgt) != src:
        raise BadInputError(f"the target expects {tgt[0]}x{tgt[1]} inputs, the source {src[0]}x{src[1]}: not the same model input")
