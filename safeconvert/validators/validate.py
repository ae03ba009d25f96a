"""Run source and target side by side over a calibration set, in batches, and judge the result."""

from __future__ import annotations

import time
from dataclasses import dataclass

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
# several routes, or re-validating after a repair, runs the source over the images only once.
_SOURCE_OUTPUTS: dict[tuple, np.ndarray] = {}
_SOURCE_CACHE_LIMIT = 8


def source_outputs_cached(runner: Runner, calib: CalibrationSet, preprocessing: Preprocessing) -> np.ndarray:
    key = (file_identity(runner.path), calib.source, tuple(calib.names), preprocessing)
    if key not in _SOURCE_OUTPUTS:
        if len(_SOURCE_OUTPUTS) >= _SOURCE_CACHE_LIMIT:
            _SOURCE_OUTPUTS.pop(next(iter(_SOURCE_OUTPUTS)))
        _SOURCE_OUTPUTS[key] = run_model(runner, calib, preprocessing)
    return _SOURCE_OUTPUTS[key]


def file_identity(path) -> tuple:
    """Path plus size and modification time of the file (or of a SavedModel's saved_model.pb)."""
    from pathlib import Path

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
    if source_outputs is None:
        source_outputs = source_outputs_cached(source, calib, preprocessing)
    target_outputs = run_model(target, calib, preprocessing)
    metrics = compare_outputs(source_outputs, target_outputs, calib.names, calib.paths)
    return Validation(metrics, judge(metrics, thresholds), time.perf_counter() - started, source_outputs, target_outputs)


def _check_compatible(source: Runner, target: Runner) -> None:
    src, tgt = spatial_size(source.spec), (target.spec.height, target.spec.width)
    if None not in tgt and tuple(tgt) != src:
        raise BadInputError(f"the target expects {tgt[0]}x{tgt[1]} inputs, the source {src[0]}x{src[1]}: not the same model input")
