"""Atomic output: a model appears at OUT complete and verified, or not at all.

Work happens in a scratch directory beside OUT (same filesystem), and the finished file or SavedModel
directory is moved into place with a rename, which is atomic on POSIX.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import BadInputError
from .safety.signals import raise_if_signalled, signals_deferred

SCRATCH_PREFIX = ".safeconvert-"


def check_output_path(out: Path, force: bool) -> None:
    """Fail before any work when OUT cannot be written: missing or read-only directory, existing file."""
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise BadInputError(f"output directory is not a directory: {parent}")
    if not parent.is_dir():
        raise BadInputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"output directory is not writable: {parent}")
    if out.exists() and not force:
        raise BadInputError(f"{out} exists; pass --force to overwrite it")
    if out.is_dir() and not (out / "saved_model.pb").exists() and any(out.iterdir()):
        raise BadInputError(f"{out} is a non-empty directory that is not a SavedModel; refusing to replace it")


@contextmanager
def scratch_dir(near: Path) -> Iterator[Path]:
    """A temporary directory beside `near`, removed whatever happens."""
    parent = near.parent if str(near.parent) else Path(".")
    path = None
    try:
        with signals_deferred():  # a Ctrl-C right after mkdtemp must not leave the directory unrecorded
            path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
        yield path
    finally:
        if path is not None:
            with signals_deferred():  # a second Ctrl-C must not cut the cleanup short
                shutil.rmtree(path, ignore_errors=True)


def move_into_place(built: Path, out: Path) -> None:
    """Move a finished file or directory to OUT atomically, replacing what is there (caller checked --force).
    An interruption that arrived earlier (and that library code may have swallowed) stops it here."""
    raise_if_signalled()
    if built.is_dir():
        backup = None
        if out.exists():
            backup = out.with_name(f"{SCRATCH_PREFIX}old-{out.name}")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(out, backup)
        os.replace(built, out)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    else:
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(built, out)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write a small file (a report) via a temporary sibling and a rename."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BadInputError(f"report directory does not exist: {parent}")
    if path.is_dir():
        raise BadInputError(f"the report path is a directory: {path}")
    fd, tmp = tempfile.mkstemp(prefix=SCRATCH_PREFIX, dir=parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
