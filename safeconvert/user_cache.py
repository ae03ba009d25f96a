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

The cache is trusted like the code: a stored source output decides a verdict. So it is used only when its
folders and entries belong to the current user and nobody else may write them (created with mode 0700);
otherwise it is skipped, and the run's report says so once (cache_notices). A cache restored from another
(untrusted) CI job passes that check: never restore one, or run with SAFECONVERT_CACHE_DIR=off.

Every key covers all files of the model (model_files.py: ONNX external data, a SavedModel's files through
its links), and every entry's name also covers safeconvert's version and the environment switches known to
change a framework's numerics (NUMERICS_ENV_VARS). Each entry starts with the sha256 of its payload: an
entry damaged on disk reads as absent.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import __version__
from .formats import Format

ENV_VAR = "SAFECONVERT_CACHE_DIR"

# Environment switches that change what a framework computes for the same model and input, read when it
# loads. Results obtained under other values are other results: cache entries and the up-to-date rule key on
# them. Thread counts (OMP_NUM_THREADS and the like) are left out: they change speed, and only the order of
# a few floating-point reductions.
NUMERICS_ENV_VARS = (
    "TF_ENABLE_ONEDNN_OPTS",  # TensorFlow: oneDNN kernels (fused, other summation order) on or off
    "TF_XLA_FLAGS",  # TensorFlow: XLA auto-clustering fuses ops and rounds differently
    "TF_DETERMINISTIC_OPS",  # TensorFlow: deterministic kernel variants
    "TF_USE_LEGACY_KERAS",  # which Keras (2 or 3) loads a Keras model
    "KERAS_BACKEND",  # which framework runs a Keras 3 model
    "ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE",  # oneDNN (TensorFlow, torch): bf16/tf32 math allowed
    "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",  # oneDNN: instruction set, hence kernels
    "ATEN_CPU_CAPABILITY",  # torch: which vectorised CPU kernels run
    "MKL_CBWR",  # MKL: conditional numerical reproducibility branch
    "CUDA_VISIBLE_DEVICES",  # a GPU or the CPU runs the model
    "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",  # TF32 matrix products on NVIDIA GPUs
)
_CHECKSUM_BYTES = 32


def numerics_environment() -> dict[str, str]:
    """The values of NUMERICS_ENV_VARS that are set (an unset switch is the framework's default)."""
    return {name: os.environ[name] for name in NUMERICS_ENV_VARS if name in os.environ}


def context_digest() -> str:
    """safeconvert's version and the numerics switches: part of every cache entry's name."""
    return digest(__version__, *(f"{k}={v}" for k, v in sorted(numerics_environment().items())))


def cache_root() -> Path | None:
    """The cache folder the user chose (or the usual per-user default); None when turned off, or when it
    exists but others could write it (a notice says so: cache_notices)."""
    chosen = os.environ.get(ENV_VAR)
    if chosen is not None:
        if chosen.strip().lower() in ("", "off", "0", "none"):
            return None
        root = Path(chosen).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "safeconvert"
    try:
        found = os.stat(root)
    except OSError:
        return root  # not made yet: store() creates it, private
    return root if _trusted(root, found, directory=True) else None


_NOTICES: list[str] = []


def cache_notices() -> list[str]:
    """Why the cache was skipped in this process, once per reason (the report's notes)."""
    return list(_NOTICES)


def _trusted(path: Path, found: os.stat_result, directory: bool) -> bool:
    """Ours, of the expected kind, and writable by nobody else; else skipped, with a notice."""
    kind_ok = stat.S_ISDIR(found.st_mode) if directory else stat.S_ISREG(found.st_mode)
    problem = ("is not a " + ("folder" if directory else "regular file")) if not kind_ok else \
        "belongs to another user" if found.st_uid != os.getuid() else \
        "is writable by other users" if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH) else None
    if problem is None:
        return True
    note = (f"the cache was not used: {path} {problem} (cached results are trusted like the code; "
            f"fix its owner and mode, or set {ENV_VAR}=off)")
    if note not in _NOTICES:
        _NOTICES.append(note)
    return False


def _read_trusted(path: Path) -> bytes | None:
    """An entry's bytes, read without following a link, when it passes _trusted (None otherwise)."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(handle, "rb") as stream:
        if not _trusted(path, os.fstat(handle), directory=False):
            return None
        return stream.read()


def _private_folder(path: Path) -> bool:
    """Create a cache folder (mode 0700) if missing; whether it can be trusted."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        return _trusted(path, os.lstat(path), directory=True)
    except OSError:
        return False


@dataclass(frozen=True)
class CacheFolder:
    """One kind of cached result: entries named `<key><suffix>` in `<root>/<name>`, at most `max_entries`."""

    name: str
    suffix: str
    max_entries: int

    def folder(self, root: Path) -> Path:
        return root / self.name

    def entry(self, root: Path, key: str) -> Path:
        """Where `key` is stored under the current version and numerics switches (context_digest)."""
        return self.folder(root) / f"{digest(key, context_digest())}{self.suffix}"

    def load(self, key: str) -> bytes | None:
        """The entry's payload (and it becomes the most recently used); None when absent, damaged (its
        checksum does not match: the entry is dropped) or the cache is off."""
        root = cache_root()
        if root is None:
            return None
        try:
            folder = os.lstat(self.folder(root))
        except OSError:
            return None
        if not _trusted(self.folder(root), folder, directory=True):
            return None
        entry = self.entry(root, key)
        data = _read_trusted(entry)
        if data is None:
            return None
        checksum, payload = data[:_CHECKSUM_BYTES], data[_CHECKSUM_BYTES:]
        if len(checksum) != _CHECKSUM_BYTES or hashlib.sha256(payload).digest() != checksum:
            entry.unlink(missing_ok=True)
            return None
        try:
            os.utime(entry)
        except OSError:
            pass
        return payload

    def has(self, key: str) -> bool:
        """An entry is stored for `key` whose payload matches its checksum."""
        return self.load(key) is not None

    def store(self, key: str, data: bytes) -> None:
        """Write checksum and payload atomically (a reader never sees half an entry), then trim to max_entries."""
        from .atomic import write_bytes_atomically
        from .errors import BadInputError

        root = cache_root()
        if root is None:
            return
        folder = self.folder(root)
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            if not (_private_folder(root) and _private_folder(folder)):
                return
            write_bytes_atomically(self.entry(root, key), hashlib.sha256(data).digest() + data)
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
