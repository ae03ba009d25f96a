"""Run source and target side by side over a calibration set, in batches, and judge the result."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import progress
from ..errors import BadInputError, SafeConvertError, one_line
from ..runners.base import NamedOutput, Runner
from .calibration import CalibrationSet
from .metrics import Metrics, compare_all, compare_single_runs
from .preprocess import Preprocessing, spatial_size, to_model_layout
from .verdict import QuantisationCheck, Thresholds, Verdict, judge

BATCH_SIZE = 16


@dataclass
class Validation:
    """Outcome of one side-by-side run; outputs are kept for localization and reports.

    source_outputs / target_outputs: the first source output and the target output paired with it (what
    localization traces); source_all / target_all: every output of each model, in the model's order."""

    metrics: Metrics
    verdict: Verdict
    seconds: float
    source_outputs: np.ndarray
    target_outputs: np.ndarray
    source_cached: bool = False  # the source's outputs were read from the per-user cache, not computed
    source_all: list[NamedOutput] | None = None
    target_all: list[NamedOutput] | None = None

    def source_subset(self, indices) -> list[NamedOutput]:
        """Every source output on some of the images (to validate again on them without running the source)."""
        return [o.subset(indices) for o in (self.source_all or [NamedOutput("output_0", self.source_outputs)])]

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
    """One model's first output over the calibration set."""
    return run_model_outputs(runner, calib, preprocessing)[0].values


def run_model_outputs(runner: Runner, calib: CalibrationSet, preprocessing: Preprocessing) -> list[NamedOutput]:
    """Every output of one model over the calibration set (a progress bar per batch on a terminal)."""
    from ..runners.base import join_chunks

    batches = []
    with progress.task(f"running {progress.display_name(runner.path)}", total=len(calib)) as advance:
        for batch in iter_inputs(calib, preprocessing):
            batches.append(_run_batch(runner, to_model_layout(batch, runner.spec)))
            advance(len(batch))
    return join_chunks(batches)


def _run_batch(runner: Runner, batch: np.ndarray) -> list[NamedOutput]:
    """One batch through the model; a runtime's failure becomes one line naming the model."""
    try:
        return runner.run_outputs(batch)
    except SafeConvertError:
        raise
    except Exception as exc:  # every runtime raises its own types
        name = progress.display_name(runner.path)
        raise ModelRunError(runner.path, f"{name}: the model fails to run on a {list(batch.shape)} input "
                                         f"({one_line(exc)})") from None


# Source outputs by (model file identity, calibration items, preprocessing): converting one source along
# several routes, or re-validating after a repair, runs the source over the images only once. Between runs
# they are kept on disk (output_cache.py), so converting the same source again does not run it either.
_SOURCE_OUTPUTS: dict[tuple, tuple[list[NamedOutput], bool]] = {}
_SOURCE_CACHE_LIMIT = 8


def source_outputs_cached(runner: Runner, calib: CalibrationSet,
                          preprocessing: Preprocessing) -> tuple[list[NamedOutput], bool]:
    """The source's outputs over the calibration set, and whether they came from the on-disk cache.

    A model held in memory (the Python API) has no file to key on: it is simply run."""
    if not Path(str(runner.path)).exists():
        return run_model_outputs(runner, calib, preprocessing), False
    key = (file_identity(runner.path), calib.source, tuple(calib.names), preprocessing)
    if key not in _SOURCE_OUTPUTS:
        if len(_SOURCE_OUTPUTS) >= _SOURCE_CACHE_LIMIT:
            _SOURCE_OUTPUTS.pop(next(iter(_SOURCE_OUTPUTS)))
        _SOURCE_OUTPUTS[key] = _stored_or_run(runner, calib, preprocessing)
    return _SOURCE_OUTPUTS[key]


def _stored_or_run(runner: Runner, calib: CalibrationSet, preprocessing: Preprocessing) -> tuple[list[NamedOutput], bool]:
    from . import output_cache

    disk_key = output_cache.outputs_key(runner, calib, preprocessing, BATCH_SIZE)
    stored = output_cache.load(disk_key, len(calib))
    if stored is not None:
        return stored, True
    outputs = run_model_outputs(runner, calib, preprocessing)
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
    """Path plus the identity of every file of the model (model_files.model_identity: an ONNX model's
    external data, all files of a SavedModel), so changed weights alone are a new identity."""
    from ..model_files import model_files, model_identity

    path = Path(path).resolve()
    return (str(path),) + model_identity(model_files(path))


def validate(source: Runner, target: Runner, calib: CalibrationSet, preset: str, thresholds: Thresholds,
             source_outputs: list[NamedOutput] | np.ndarray | None = None) -> Validation:
    """Compare every output of target to source on every calibration item; source outputs (all of them, or
    the single array of a one-output model) can be passed in when known.

    The target also runs two images alone (batch of one): the batched run alone would verify a target whose
    numbers depend on the batch, which most deployments run one image at a time. A target with a fixed batch
    size already ran that way (batch of one) or cannot (a larger fixed batch)."""
    started = time.perf_counter()
    preprocessing = preprocessing_for(source, preset)
    _check_compatible(source, target)
    cached = False
    if source_outputs is None:
        source_outputs, cached = source_outputs_cached(source, calib, preprocessing)
    elif isinstance(source_outputs, np.ndarray):
        source_outputs = [NamedOutput("output_0", source_outputs)]
    target_outputs = run_model_outputs(target, calib, preprocessing)
    metrics = compare_all(source_outputs, target_outputs, calib.names, calib.paths)
    if not metrics.unmatched_outputs and len(calib) > 1 and target.spec.fixed_batch is None:
        compare_single_runs(metrics, target_outputs, _run_alone(target, calib, preprocessing, _alone_images(metrics)))
    quantisation = target_quantisation(target) if thresholds.keep_quantisation else None
    primary = _paired_with_first(metrics, target_outputs)
    return Validation(metrics, judge(metrics, thresholds, quantisation), time.perf_counter() - started,
                      source_outputs[0].values, primary.values, cached, source_outputs, target_outputs)


def _alone_images(metrics: Metrics) -> list[int]:
    """The images the target also runs one at a time: the first, and the one where it moved most."""
    return sorted({0, max(metrics.worst_image, 0)})


def _run_alone(target: Runner, calib: CalibrationSet, preprocessing: Preprocessing, indices: list[int]) -> dict:
    """The target's outputs on each of some images run as a batch of one (see metrics.compare_single_runs)."""
    alone = {}
    for index in indices:
        batch = next(iter_inputs(calib.subset([index]), preprocessing, batch_size=1))
        alone[index] = _run_batch(target, to_model_layout(batch, target.spec))
    return alone


def _paired_with_first(metrics: Metrics, target_outputs: list[NamedOutput]) -> NamedOutput:
    """The target output compared with the source's first (its first output when none was paired)."""
    name = metrics.outputs[0].target_name if metrics.outputs else ""
    return next((o for o in target_outputs if o.name == name), target_outputs[0])


def target_quantisation(target: Runner) -> QuantisationCheck:
    """The quantised weight tensors the target stores (the count the TOOL finding uses), for --keep-quantisation."""
    from ..formats import Format
    from ..localize.tool import quantised_weights

    path = Path(str(target.path))
    if target.format not in (Format.TFLITE, Format.ONNX):
        return QuantisationCheck(None, f"cannot check that a {target.format.value} target is still quantised")
    if not path.is_file():
        return QuantisationCheck(None, f"cannot check that {path.name} is still quantised (no model file)")
    stored = quantised_weights(path, target.format)
    return QuantisationCheck(stored.tensors, share=stored.share)


def _check_compatible(source: Runner, target: Runner) -> None:
    src, tgt = spatial_size(source.spec), (target.spec.height, target.spec.width)
    if None not in tgt and tuple(tgt) != src:
        raise BadInputError(f"the target expects {tgt[0]}x{tgt[1]} inputs, the source {src[0]}x{src[1]}: not the same model input")
