"""The cached float TFLite export that Keras and SavedModel sources are imported into TVM through.

Localizing a fault in a Keras model starts by loading it and exporting it to float TFLite (keras_reference.py):
on ResNet101 that is 35-40 s of a localization, and it is the same every time the same source is checked
again. The export depends only on the source's bytes and the TensorFlow that made it, so it is kept in the
per-user cache (user_cache.py) under that key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..formats import Format
from ..model_files import model_digest
from ..user_cache import CacheFolder, digest

FORMAT_VERSION = "2"  # bump when keras_reference changes what it exports
EXPORTS = CacheFolder("float-reference", ".tflite", max_entries=8)


def source_key(path: Path, tensorflow_version: str) -> str:
    """The source's content (all files of the model, model_files.py: a SavedModel's through its links) and
    TensorFlow's version; safeconvert's version and the numerics switches are added by the cache folder."""
    return digest(FORMAT_VERSION, tensorflow_version, model_digest(path))


def cached_float_tflite(path: Path, export: Callable[[], bytes]) -> bytes:
    """The float TFLite export of the source at `path`: from the cache, or made by `export` and stored."""
    from ..user_cache import cache_root
    from ..user_cache import runtime_versions

    if cache_root() is None:
        return export()
    # TensorFlow's version from its installed metadata: importing it (4-6 s) only to read it would cost a
    # cached import most of what the cache saves
    key = source_key(path, runtime_versions(Format.KERAS)["tensorflow"])
    data = EXPORTS.load(key)
    if data is None:
        data = export()
        EXPORTS.store(key, data)
    return data
