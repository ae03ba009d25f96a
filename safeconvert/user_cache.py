"""The per-user cache: results that depend only on file contents and library versions, kept between runs.

The usual loop is convert, read the report, change an option, convert again: the same source is loaded,
exported and run over the same photos every time. What only its bytes decide is kept here, one folder per
kind of result, each holding a bounded number of entries (least recently used go first):

- float-reference/: a Keras or SavedModel source's float TFLite export (ir/reference_cache.py);
- source-outputs/: a source model's outputs on a calibration set (validators/output_cache.py);
- source-specs/: a source model's input spec, so a source whose outputs are cached need not be loaded
  (runners/deferred.py).

Where: $SAFECONVERT_CACHE_DIR, else $XDG_CACHE_HOME/safeconvert, else ~/.cache/safeconvert.
SAFECONVERT_CACHE_DIR=off turns the cache off. A cache that cannot be read or written is skipped silently:
it only ever saves time, it never changes a result.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .formats import Format

ENV_VAR = "SAFECONVERT_CACHE_DIR"
_CHUNK = 1 << 20


def cache_root() -> Path | None:
    """The cache folder the user chose (or the usual per-user default); None when turned off."""
    chosen = os.environ.get(ENV_VAR)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "safeconvert"


@dataclass(frozen=True)
class CacheFolder:
    """One kind of cached result: entries named `<key><suffix>` in `<root>/<name>`, at most `max_entries`."""

    name: str
    suffix: str
    max_entries: int

    def folder(self, root: Path) -> Path:
        return root / self.name

    def load(self, key: str) -> bytes | None:
        """The entry's bytes (and it becomes the most recently used), or None when absent or the cache is off."""
        root = cache_root()
        if root is None:
            return None
        entry = self.folder(root) / f"{key}{self.suffix}"
        try:
            data = entry.read_bytes()
            os.utime(entry)
            return data
        except OSError:
            return None

    def has(self, key: str) -> bool:
        root = cache_root()
        return root is not None and (self.folder(root) / f"{key}{self.suffix}").is_file()

    def store(self, key: str, data: bytes) -> None:
        """Write atomically (a concurrent reader never sees half an entry), then trim to max_entries."""
        from .atomic import write_bytes_atomically
        from .errors import BadInputError

        root = cache_root()
        if root is None:
            return
        folder = self.folder(root)
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_bytes_atomically(folder / f"{key}{self.suffix}", data)
            for old in self.entries(root)[self.max_entries:]:
                old.unlink(missing_ok=True)
        except (OSError, BadInputError):
            pass

    def entries(self, root: Path) -> list[Path]:
        """The entries held under a cache root, most recently used first."""
        try:
            return sorted(self.folder(root).glob(f"*{self.suffix}"), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return []


def digest(*parts: str | bytes) -> str:
    """sha256 over several parts, each one delimited so that ("ab", "c") and ("a", "bc") differ."""
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "little") + data)
    return hasher.hexdigest()


_CONTENT_DIGESTS: dict[tuple, str] = {}


def content_digest(path: Path) -> str:
    """sha256 over a file's bytes, or over every file of a directory with its relative path.

    Remembered per (path, size, mtime) of each file, so a run that asks twice reads a large model once."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    identity = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if identity not in _CONTENT_DIGESTS:
        hasher = hashlib.sha256()
        for file in files:
            name = str(file.relative_to(path) if path.is_dir() else "")
            hasher.update(f"{name}\0{file.stat().st_size}\0".encode())
            with open(file, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    hasher.update(chunk)
        _CONTENT_DIGESTS[identity] = hasher.hexdigest()
    return _CONTENT_DIGESTS[identity]


# The libraries whose version can change what a model of a format computes (cache keys include them).
RUNTIMES = {
    Format.KERAS: ("tensorflow", "keras"),
    Format.SAVEDMODEL: ("tensorflow",),
    Format.ONNX: ("onnxruntime",),
    Format.TFLITE: ("ai-edge-litert",),
    Format.TORCH_EXPORT: ("torch",),
    Format.TORCHSCRIPT: ("torch",),
}


def runtime_versions(fmt: Format) -> dict[str, str]:
    """The versions of the libraries that load and run a model of this format (read without importing them)."""
    return {name: library_version(name) for name in RUNTIMES.get(fmt, ())}


def library_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"
