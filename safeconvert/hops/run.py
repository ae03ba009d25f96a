"""One converter call in a child process: write the request, run the child under limits, read the answer.

Whatever goes wrong in the child (an exception, a native crash, a hang, a memory blow-up) comes back as a
HopFailedError carrying what kind of failure it was and the child's last lines, and nothing is left at the
hop's output path. The request directory is removed on every path out, an interruption included.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError, ConverterFailedError
from ..formats import Format
from ..wrappers.base import ConversionOptions, Converter
from .envs import ChildCommand, child_command
from .isolate import ChildResult, LimitedChild
from .protocol import ERROR_BAD_INPUT, HopRequest, HopResponse, options_to_json
from .settings import Isolation

CRASH, HANG, MEMORY, ERROR = "crash", "hang", "memory", "error"


class HopFailedError(ConverterFailedError):
    """A converter failed in its child: `failure` says how (crash, hang, memory, error)."""

    def __init__(self, tool: str, failure: str, message: str, log_tail: list[str] | None = None,
                 status: int | None = None, seconds: float = 0.0):
        super().__init__(tool, message)
        self.failure = failure
        self.log_tail = list(log_tail or [])
        self.status = status
        self.seconds = seconds


@dataclass
class HopRun:
    """A hop that wrote its model: for the report."""

    tool_version: str | None
    seconds: float
    peak_rss: int
    interpreter: str
    standalone: bool


def convert_isolated(converter: Converter, src: Path, src_format: Format, out: Path, options: ConversionOptions,
                     isolation: Isolation) -> HopRun:
    """Run `converter` on `src` into `out` in a child process; raise HopFailedError (or BadInputError)."""
    if not isolation.active:
        return _convert_in_process(converter, src, src_format, out, options)
    return PendingHop(converter, src, src_format, out, options, isolation).finish()


class PendingHop:
    """A hop whose child is running: the caller can do other work (load the source model) meanwhile.

    `finish()` waits for the answer; `abandon()` kills the child when the caller's own work failed. Either
    removes the request directory, and a failed hop leaves nothing at `out`.
    """

    def __init__(self, converter: Converter, src: Path, src_format: Format, out: Path, options: ConversionOptions,
                 isolation: Isolation):
        self.converter, self.out, self.isolation = converter, Path(out), isolation
        self.command = child_command(converter, isolation.envs)
        # In the temporary directory, not beside OUT: when OUT's disk is full the child must still be able to
        # answer, so that the failure is reported as the full disk it is (exit code 2), not as a crash.
        self.folder = Path(tempfile.mkdtemp(prefix="safeconvert-hop-"))
        try:
            _request(converter, src, src_format, self.out, options, self.folder, self.command).write(
                self.folder / "request.json")
            self.child = LimitedChild([*self.command.argv, str(self.folder / "request.json"),
                                       str(self.folder / "response.json")], self.folder / "child.log",
                                      isolation.limits, env=self.command.env, cwd=self.folder)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def finish(self) -> HopRun:
        try:
            result = self.child.wait()
            response = HopResponse.read(self.folder / "response.json") if result.status == 0 else None
            _raise_for_failure(self.converter.name, result, response, self.isolation)
            if not self.out.exists():
                raise HopFailedError(self.converter.name, ERROR, "finished without writing a model",
                                     list(result.log_tail), result.status, result.seconds)
        except BaseException:
            remove(self.out)
            raise
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        version = response.tool_version or (None if self.command.standalone else self.converter.version())
        return HopRun(version, result.seconds, result.peak_rss, self.command.interpreter, self.command.standalone)

    def abandon(self) -> None:
        try:
            self.child.kill()
        finally:
            remove(self.out)
            shutil.rmtree(self.folder, ignore_errors=True)


def _request(converter: Converter, src: Path, src_format: Format, out: Path, options: ConversionOptions,
             folder: Path, command: ChildCommand) -> HopRequest:
    encoded, representative = options_to_json(options, folder)
    cls = type(converter)
    return HopRequest(converter=converter.name, source=str(Path(src).absolute()), source_format=src_format.value,
                      target_format=converter.target.value, output=str(Path(out).absolute()), options=encoded,
                      representative_data=representative,
                      converter_class=None if command.standalone else f"{cls.__module__}:{cls.__qualname__}",
                      converter_arguments=dict(getattr(converter, "child_arguments", {}) or {}))


def _raise_for_failure(name: str, result: ChildResult, response: HopResponse | None, isolation: Isolation) -> None:
    """Turn a child that did not answer ok into the error that says why, with its last lines."""
    tail = list(result.log_tail)
    if result.timed_out:
        raise HopFailedError(name, HANG, f"no result within {isolation.limits.timeout:g} s (hung or too slow; "
                             f"raise --hop-timeout){_last(tail)}", tail, None, result.seconds)
    if result.over_memory:
        limit_mb = isolation.limits.memory_bytes() >> 20
        raise HopFailedError(name, MEMORY, f"used more than {limit_mb} MB of memory (raise --hop-memory)"
                             f"{_last(tail)}", tail, None, result.seconds)
    if response is None:
        raise HopFailedError(name, CRASH, f"crashed ({describe_status(result.status)}){_last(tail)}", tail,
                             result.status, result.seconds)
    if not response.ok:
        if response.error_kind == ERROR_BAD_INPUT:
            raise BadInputError(f"{name}: {response.error}")
        lines = response.log_tail or tail
        raise HopFailedError(name, ERROR, response.error or "failed without a message", lines, result.status,
                             result.seconds)


def describe_status(status: int | None) -> str:
    """'exit code 3', 'killed by SIGSEGV', or 'no exit status'."""
    if status is None:
        return "no exit status"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit code {status}" if status else "exited without an answer"


def _last(tail: list[str]) -> str:
    return f": {tail[-1][:200]}" if tail else ""


def remove(path: Path) -> None:
    """Delete a partial output (file or SavedModel directory)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _convert_in_process(converter: Converter, src: Path, src_format: Format, out: Path,
                        options: ConversionOptions) -> HopRun:
    """No executable to start children with (embedded Python): the converter runs here, unisolated."""
    import sys

    from ..safety.framework_imports import import_for_converter

    started = time.perf_counter()
    import_for_converter(converter.name)  # with Ctrl-C held: see safety.framework_imports
    converter.convert(src, src_format, out, options)
    return HopRun(converter.version(), time.perf_counter() - started, 0, sys.executable or "", False)
