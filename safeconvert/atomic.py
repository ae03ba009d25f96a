"""Atomic output: a model appears at OUT complete and verified, or not at all.

Work happens in a scratch directory beside OUT (same filesystem), and the finished file or SavedModel
directory is moved into place with a rename, which is atomic on POSIX. Placing (place_model) holds a lock
per OUT (a lock file beside it), so concurrent runs on one OUT take turns, and without --force it creates
OUT exclusively (a hard link for a file, a no-replace rename for a directory): a file that appeared at OUT
during the run is never replaced. An ONNX model with external data is placed with its data, which is copied
into one file named after OUT and its contents (`OUT.<hash>.data`: the same inputs give the same bytes) and
placed first. That name can be predicted, so it is claimed exclusively: whatever is found there is never
adopted or followed. A regular file with the same bytes is replaced by safeconvert's own copy (a hard link
into someone's file would let later edits of that file change OUT); a link, or a file with other bytes, is
replaced only with --force (else exit 2). OUT itself, renamed last, is what makes the new model visible,
so it never refers to a data file of another model. The lock file is opened without following links.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import BadInputError
from .model_files import file_digest, is_onnx_file, model_digest
from .safety.signals import raise_if_signalled, scratch_tracked, signals_deferred

SCRATCH_PREFIX = ".safeconvert-"
LOCK_WAIT_SECONDS = 30.0  # placing takes a rename or two: a lock held longer belongs to a stuck run
_DATA_ALIGNMENT = 4096  # external tensors start on page boundaries, as onnx aligns them for memory mapping


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


def check_report_paths(reports: dict[str, Path | None], models: dict[str, Path | None]) -> None:
    """Fail before any work when a report would be written over a model or over another report.

    `reports` and `models` map what each path is called in the message ("--report", "OUT") to the path. A
    report path is refused when it resolves (links followed) to a model's path, to any file of the model
    (external data, a SavedModel's files), into a model's directory, onto a data file OUT would be placed
    with, or when it is the same file (a hard link) as any of them."""
    named = [(label, Path(path)) for label, path in reports.items() if path is not None]
    guarded = [(label, Path(path)) for label, path in models.items() if path is not None]
    for index, (label, report) in enumerate(named):
        for other_label, other in guarded + named[:index]:
            if _writes_over(report, other, is_model=(other_label, other) in guarded):
                raise BadInputError(f"{label} {report} would overwrite {other_label} ({other}); "
                                    f"write the report somewhere else")


def _writes_over(report: Path, model: Path, is_model: bool) -> bool:
    real_report, real_model = Path(os.path.realpath(report)), Path(os.path.realpath(model))
    if real_report == real_model or (model.is_dir() and real_report.is_relative_to(real_model)):
        return True
    if is_model and real_report.parent == real_model.parent and \
            real_report.name.startswith(f"{real_model.name}.") and real_report.name.endswith(".data"):
        return True  # a data file OUT is (or will be) placed with
    files = [model]
    if is_model and model.exists():
        from .model_files import model_files

        try:
            files = [f.path for f in model_files(model)]
        except BadInputError:  # a model refused for its files: loading it says why
            files = [model]
    return any(_same_file_path(report, path) for path in files)


def _same_file_path(a: Path, b: Path) -> bool:
    """One file under two names: the same real path, or a hard link (samefile, when both exist)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def scratch_dir(near: Path) -> Iterator[Path]:
    """A temporary directory beside `near`, removed whatever happens."""
    parent = near.parent if str(near.parent) else Path(".")
    path = None
    try:
        with signals_deferred():  # a Ctrl-C right after mkdtemp must not leave the directory unrecorded
            path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
        with scratch_tracked(path):  # removed too if a signal has to end a run stuck in native code
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


def place_model(built: Path, out: Path, force: bool, work: Path) -> str:
    """Put the finished model `built` at OUT (see the module docstring) and return the digest of what was
    placed, taken from the staged copy before it is placed. `built` outside `work` (the user's own file, a
    repair that changed nothing) is copied, never moved; an ONNX file always goes through staging."""
    raise_if_signalled()
    staged = _staged(Path(built), Path(out), Path(work))
    written = model_digest(staged)
    with output_lock(Path(out)), signals_deferred():
        if staged.is_dir():
            _place_directory(staged, Path(out), force)
        else:
            _place_file(staged, Path(out), force)
    return written


@contextmanager
def output_lock(out: Path, wait_seconds: float | None = None) -> Iterator[None]:
    """An exclusive lock on OUT for this process, through a lock file beside it that is removed afterwards.

    The file is locked, then checked to still be the one at its path: a run that held the lock before may
    have removed it, and a lock on a removed file excludes nobody."""
    path = out.parent / f"{SCRATCH_PREFIX}lock-{out.name}"
    deadline = time.monotonic() + (LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds)
    while True:
        handle = _open_lock_file(path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            if time.monotonic() > deadline:
                raise BadInputError(f"another safeconvert run is writing {out}; try again when it has finished") from None
            time.sleep(0.05)
            continue
        if _same_file(path, handle):
            break
        os.close(handle)
    try:
        yield
    finally:
        Path(path).unlink(missing_ok=True)
        os.close(handle)


def _open_lock_file(path: Path) -> int:
    """Create or open the lock file, never through a link: a link planted at its name would have the lock
    create a file wherever it points."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise BadInputError(f"the lock file {path} is a symbolic link; remove it and run again") from None
        raise


def _same_file(path: Path, handle: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle).st_ino
    except FileNotFoundError:
        return False


def _staged(built: Path, out: Path, work: Path) -> Path:
    """The model as it will be placed, inside `work`: ONNX with its data relocated, a foreign file copied."""
    ours = built.resolve().is_relative_to(work.resolve())
    if built.is_file() and is_onnx_file(built):
        folder = Path(tempfile.mkdtemp(prefix="place-", dir=work))
        return stage_onnx(built, folder / out.name, may_link=ours)
    if ours:
        return built
    staged = work / f"staged{built.suffix}"
    shutil.copytree(built, staged) if built.is_dir() else shutil.copyfile(built, staged)
    return staged


def stage_onnx(model_path: Path, staged: Path, may_link: bool = False) -> Path:
    """Write `model_path` as `staged`, its external tensors (if any) copied into one data file beside it named
    after `staged` and the data's own digest; the weights are streamed, never loaded into memory. A model
    without external data is hard-linked when `may_link` (a scratch file: never the user's own)."""
    import onnx

    from .model_files import external_tensors, onnx_external_locations

    onnx_external_locations(model_path)  # refuses a location outside the model's folder, or a missing file
    model = onnx.load(str(model_path), load_external_data=False)
    tensors = external_tensors(model)
    if not tensors:
        try:
            if not may_link:
                raise OSError("a copy is wanted")
            os.link(model_path, staged)
        except OSError:
            shutil.copyfile(model_path, staged)
        return staged
    data_tmp = staged.with_name(staged.name + ".data-part")
    hasher = hashlib.sha256()
    with open(data_tmp, "wb") as sink:
        for tensor in tensors:
            info = {entry.key: entry.value for entry in tensor.external_data}
            start = sink.tell() + (-sink.tell()) % _DATA_ALIGNMENT
            _copy_range(model_path.parent / info["location"], int(info.get("offset", 0)),
                        int(info["length"]) if "length" in info else None, sink, start, hasher)
            _set_external(tensor, start, sink.tell() - start)
    data_name = f"{staged.name}.{hasher.hexdigest()[:12]}.data"
    os.replace(data_tmp, staged.with_name(data_name))
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
    onnx.save_model(model, str(staged))
    return staged


def _copy_range(source: Path, offset: int, length: int | None, sink, start: int, hasher) -> None:
    sink.write(b"\0" * (start - sink.tell()))
    hasher.update(start.to_bytes(8, "little"))
    with open(source, "rb") as handle:
        handle.seek(offset)
        remaining = length if length is not None else max(0, os.fstat(handle.fileno()).st_size - offset)
        while remaining > 0:
            chunk = handle.read(min(remaining, 1 << 20))
            if not chunk:
                raise BadInputError(f"{source.name}: external data ends before a tensor it should hold")
            sink.write(chunk)
            hasher.update(chunk)
            remaining -= len(chunk)


def _set_external(tensor, offset: int, length: int) -> None:
    """Point a tensor at its new place in the data file (a stale checksum entry would no longer hold)."""
    kept = [(e.key, e.value) for e in tensor.external_data if e.key not in ("offset", "length", "checksum")]
    del tensor.external_data[:]
    for key, value in kept + [("offset", str(offset)), ("length", str(length))]:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _data_files_of(staged: Path) -> list[Path]:
    """The data files staged beside a staged ONNX model (named after it)."""
    return sorted(staged.parent.glob(f"{glob_escape(staged.name)}.*.data"))


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _place_file(staged: Path, out: Path, force: bool) -> None:
    """Data files first (new names: nothing refers to them yet), OUT last; then earlier data files of OUT go."""
    if not force and (out.exists() or out.is_symlink()):
        raise BadInputError(f"{out} exists (it appeared during the run); pass --force to overwrite it")
    data_files, placed = _data_files_of(staged), []
    try:
        for data in data_files:
            final = out.with_name(data.name)
            if _place_data_file(data, final, force):
                placed.append(final)
        if force:
            if out.is_dir() and not out.is_symlink():
                _check_replaceable_directory(out)
                shutil.rmtree(out)
            os.replace(staged, out)
        else:
            _link_exclusively(staged, out)
    except BaseException:
        for final in placed:
            final.unlink(missing_ok=True)
        raise
    _remove_earlier_data_files(out, keep={data.name for data in data_files})


def _place_data_file(data: Path, final: Path, force: bool) -> bool:
    """Claim the data file's name exclusively (a hard link, then the staged name goes); True when the name was
    free. What is found there is never kept nor followed (see the module docstring): it is replaced by the
    staged file itself, a rename that swaps the entry and leaves a link's target alone."""
    try:
        os.link(data, final)
    except FileExistsError:
        found = os.lstat(final)
        if stat.S_ISDIR(found.st_mode):
            raise BadInputError(f"{final} is a directory, and OUT's data file would take its name") from None
        same_bytes = stat.S_ISREG(found.st_mode) and file_digest(final) == file_digest(data)
        if not (force or same_bytes):
            raise BadInputError(f"{final} exists, and OUT's data file would take its name; "
                                f"pass --force to replace it") from None
        os.replace(data, final)
        return False
    data.unlink()
    return True


def _link_exclusively(staged: Path, out: Path) -> None:
    try:
        os.link(staged, out)
    except FileExistsError:
        raise BadInputError(f"{out} exists (it appeared during the run); pass --force to overwrite it") from None
    staged.unlink()


_OUR_DATA_FILE = re.compile(r"\.[0-9a-f]{12}\.data$")


def _remove_earlier_data_files(out: Path, keep: set[str]) -> None:
    """Data files an earlier model at OUT was placed with (OUT.<hash>.data): nothing refers to them now."""
    for path in out.parent.glob(f"{glob_escape(out.name)}.*.data"):
        if path.name not in keep and _OUR_DATA_FILE.fullmatch(path.name[len(out.name):]):
            path.unlink(missing_ok=True)


def _place_directory(staged: Path, out: Path, force: bool) -> None:
    if force:
        if out.is_dir() and not out.is_symlink():
            _check_replaceable_directory(out)
        move_into_place(staged, out)
        return
    if out.exists() or out.is_symlink():
        raise BadInputError(f"{out} exists (it appeared during the run); pass --force to overwrite it")
    rename_exclusively(staged, out)


def _check_replaceable_directory(out: Path) -> None:
    if not (out / "saved_model.pb").exists() and any(out.iterdir()):
        raise BadInputError(f"{out} is a non-empty directory that is not a SavedModel; refusing to replace it")


def rename_exclusively(source: Path, target: Path) -> None:
    """Rename that fails when `target` exists, even as an empty directory (plain rename would replace one):
    renameat2(RENAME_NOREPLACE) where the system has it, else an empty directory claimed with mkdir first."""
    try:
        _renameat2_noreplace(source, target)
        return
    except FileExistsError:
        raise BadInputError(f"{target} exists (it appeared during the run); pass --force to overwrite it") from None
    except (NotImplementedError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise
    try:
        os.mkdir(target)
    except FileExistsError:
        raise BadInputError(f"{target} exists (it appeared during the run); pass --force to overwrite it") from None
    try:
        os.rename(source, target)  # replaces the empty directory just made; fails if anything was put in it
    except OSError:
        if not any(target.iterdir()):
            target.rmdir()
        raise BadInputError(f"{target} was written to during the run; pass --force to overwrite it") from None


def _renameat2_noreplace(source: Path, target: Path) -> None:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        raise NotImplementedError("renameat2") from None
    at_fdcwd, rename_noreplace = -100, 1
    if renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_noreplace) != 0:
        code = ctypes.get_errno()
        raise (FileExistsError if code == errno.EEXIST else OSError)(code, os.strerror(code), str(target))
