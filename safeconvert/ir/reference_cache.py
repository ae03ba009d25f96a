"""A per-user cache of the float TFLite export that Keras and SavedModel sources are imported through.

Localizing a fault in a Keras model starts by loading it and exporting it to float TFLite (keras_reference.py):
on ResNet101 that is 35-40 s of a localization, and it is the same every time the same source is checked
again (the usual loop: convert, read the report, change an option, convert again). The export depends only on
the source's bytes and the TensorFlow that made it, so it is kept under that key and reused.

Where: $SAFECONVERT_CACHE_DIR, else $XDG_CACHE_HOME/safeconvert, else ~/.cache/safeconvert; the
`float-reference` folder there holds at most MAX_ENTRIES exports (least recently used go first).
SAFECONVERT_CACHE_DIR=off turns the cache off. A cache that cannot be written is skipped silently: it only
ever saves time, it never changes a result.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

ENV_VAR = "SAFECONVERT_CACHE_DIR"
FORMAT_VERSION = "1"  # bump when keras_reference changes what it exports
MAX_ENTRIES = 8
_CHUNK = 1 << 20


def cache_root() -> Path | None:
    """The cache folder the user chose (or the usual per-user default); None when turned off."""
    chosen = os.environ.get(ENV_VAR)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "safeconvert"


def source_key(path: Path, tensorflow_version: str) -> str:
    """sha256 over the source's bytes (every file of a SavedModel directory, with its relative path)."""
    digest = hashlib.sha256(f"{FORMAT_VERSION}\0{tensorflow_version}\0".encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else "").encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def cached_float_tflite(path: Path, export: Callable[[], bytes]) -> bytes:
    """The float TFLite export of the source at `path`: from the cache, or made by `export` and stored."""
    root = cache_root()
    if root is None:
        return export()
    from ..runners.tf_runner import quiet_tensorflow

    folder = _exports_folder(root)
    entry = folder / f"{source_key(path, quiet_tensorflow().__version__)}.tflite"
    try:
        data = entry.read_bytes()
        os.utime(entry)  # recently used: kept longest
        return data
    except OSError:
        pass
    data = export()
    _store(folder, entry, data)
    return data


def _store(folder: Path, entry: Path, data: bytes) -> None:
    """Write atomically (a concurrent reader never sees half an export), then trim to MAX_ENTRIES."""
    from ..atomic import write_bytes_atomically
    from ..errors import BadInputError

    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_bytes_atomically(entry, data)
        _trim(folder)
    except (OSError, BadInputError):
        pass


def cached_exports(root: Path) -> list[Path]:
    """The exports held under a cache root, most recently used first."""
    try:
        return sorted(_exports_folder(root).glob("*.tflite"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []


def _exports_folder(root: Path) -> Path:
    return root / "float-reference"


def _trim(folder: Path) -> None:
    for old in cached_exports(folder.parent)[MAX_ENTRIES:]:
        old.unlink(missing_ok=True)
