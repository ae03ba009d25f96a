"""A source model's outputs on a calibration set, kept in the per-user cache between runs.

Validation runs the source over every calibration image each time a conversion of it is checked: 20 s of a
ResNet101 check on 32 photos, the same 20 s when the user converts again after changing an option. Those
outputs depend only on the source's bytes, the runtime that runs it, its input spec, the preprocessing and
the images (bytes and order), so they are stored under a digest of all of these (user_cache.py); any change
to one of them is a new key. Models held in memory (the Python API) have no bytes to key on and always run.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ..runners.base import NamedOutput, Runner
from ..model_files import file_digest, model_digest
from ..user_cache import RUNTIMES, CacheFolder, cache_root, digest, library_version, runtime_versions
from .calibration import CalibrationSet
from .preprocess import Preprocessing

FORMAT_VERSION = "2"  # bump when the way outputs are computed or stored changes (2: every output, named)
OUTPUTS = CacheFolder("source-outputs", ".npz", max_entries=64)

_IMAGE_LIBRARIES = ("numpy", "pillow")  # decoding and resizing photos


def outputs_key(runner: Runner, calib: CalibrationSet, preprocessing: Preprocessing, batch_size: int) -> str | None:
    """The digest the outputs are stored under; None when they cannot be keyed (no file, or cache off)."""
    path = Path(str(runner.path))
    if cache_root() is None or not path.exists() or runner.format not in RUNTIMES:
        return None
    settings = {"runner": runner.kind, "format": runner.format.value, "spec": runner.spec.to_dict(),
                "preprocessing": [preprocessing.preset, preprocessing.height, preprocessing.width],
                "batch": batch_size, "versions": {**runtime_versions(runner.format), **_image_library_versions()}}
    return digest(FORMAT_VERSION, json.dumps(settings, sort_keys=True), model_digest(path), calibration_digest(calib))


def _image_library_versions() -> dict[str, str]:
    return {name: library_version(name) for name in _IMAGE_LIBRARIES}


def calibration_digest(calib: CalibrationSet) -> str:
    """The calibration items' names, order and bytes (image files, or the .npy array's values)."""
    if calib.array is not None:
        array = np.ascontiguousarray(calib.array)  # a memory-mapped .npy is hashed without a copy
        return digest(*calib.names, str(array.dtype), str(array.shape), hashlib.sha256(memoryview(array).cast("B")).hexdigest())
    return digest(*calib.names, *(file_digest(path) for path in calib.paths))


def is_stored(key: str | None) -> bool:
    return key is not None and OUTPUTS.has(key)


# Stored as one .npz: the outputs' names (JSON, as bytes) and one float32 array per output, in the model's order.
_NAMES, _OUTPUT = "names", "output_{}"


def load(key: str | None, count: int) -> list[NamedOutput] | None:
    """Every stored output for `key`, if any and if each holds one row per calibration item."""
    data = OUTPUTS.load(key) if key is not None else None
    if data is None:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            names = json.loads(archive[_NAMES].tobytes().decode())
            outputs = [NamedOutput(str(name), archive[_OUTPUT.format(i)]) for i, name in enumerate(names)]
    except (ValueError, OSError, EOFError, KeyError, TypeError, UnicodeDecodeError, zipfile.BadZipFile):
        return None
    usable = outputs and all(o.values.ndim >= 1 and len(o.values) == count and o.values.dtype == np.float32
                             for o in outputs)
    return outputs if usable else None


def store(key: str | None, outputs: list[NamedOutput]) -> None:
    if key is None:
        return
    arrays = {_OUTPUT.format(i): np.ascontiguousarray(o.values, dtype=np.float32) for i, o in enumerate(outputs)}
    names = np.frombuffer(json.dumps([o.name for o in outputs]).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **{_NAMES: names}, **arrays)
    OUTPUTS.store(key, buffer.getvalue())
