"""Run one child process under a wall-clock and a resident-memory limit, and kill its whole process group.

The child starts in its own session (process group): the terminal's Ctrl-C reaches safeconvert alone, which
then kills the group, and a converter's own helper processes die with it. Memory is limited by polling the
resident set of the child's process tree (psutil) rather than with RLIMIT_AS: TensorFlow reserves tens of GB
of address space it never touches, so an address-space limit fails it long before real memory runs short.

A safeconvert that is itself SIGKILLed (or OOM-killed) cannot kill the group; a tiny watchdog process beside the
child does it instead, the moment safeconvert is gone (see ORPHAN_WATCH).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..safety.signals import raise_if_signalled, signals_deferred

DEFAULT_TIMEOUT = 900.0  # seconds: ResNet50 through tf2onnx takes ~15 s here; a hang is something else
DEFAULT_MEMORY_SHARE = 0.8  # of physical memory, when no limit is given
POLL_SECONDS = 0.2
LOG_TAIL_LINES = 40

# The watchdog: a child of safeconvert that notices it was orphaned (its parent id changes the moment
# safeconvert dies, before anyone reaps it) and then kills the hop's process group. PR_SET_PDEATHSIG cannot
# do this: it fires when the *thread* that started the child ends, and hops start from worker threads. A
# thread inside the hop child cannot either: a converter holding the GIL in native code would starve it.
ORPHAN_WATCH = """
import os, signal, sys, time
parent, group = os.getppid(), int(sys.argv[1])
while os.getppid() == parent:
    time.sleep(0.5)
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        sys.exit(0)
try:
    os.killpg(group, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


@dataclass
class Limits:
    """Per-hop limits; memory_mb None means DEFAULT_MEMORY_SHARE of this machine's RAM."""

    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int | None = None

    def memory_bytes(self) -> int:
        if self.memory_mb is not None:
            return int(self.memory_mb) << 20
        import psutil

        return int(psutil.virtual_memory().total * DEFAULT_MEMORY_SHARE)


@dataclass
class ChildResult:
    """How the child ended. `status` is the exit code, negative for a signal (as subprocess reports it)."""

    status: int | None
    seconds: float
    timed_out: bool = False
    over_memory: bool = False
    peak_rss: int = 0
    log_tail: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.timed_out and not self.over_memory


def run_limited(command: list[str], log_path: Path, limits: Limits, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> ChildResult:
    """Run `command` with stdout and stderr going to `log_path`; kill its group at a limit or an interruption."""
    return LimitedChild(command, log_path, limits, env, cwd).wait()


class LimitedChild:
    """A started child whose limits a watcher thread enforces while the caller does other work.

    The caller must end with `wait()` (or `kill()`, e.g. when its own work failed): both kill the process
    group and reap the child, also when interrupted.
    """

    def __init__(self, command: list[str], log_path: Path, limits: Limits, env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.log_path = Path(log_path)
        self.limits = limits
        self.started = time.perf_counter()
        self.result = ChildResult(None, 0.0)
        self.process: subprocess.Popen | None = None
        self.orphan_watch: subprocess.Popen | None = None
        try:
            with open(log_path, "wb") as log, signals_deferred():  # a Ctrl-C right after Popen would orphan the child
                self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                env=env, cwd=cwd, start_new_session=True)
                self.orphan_watch = _start_orphan_watch(self.process.pid)
                self.watcher = threading.Thread(target=self._watch, args=(limits.memory_bytes(),), daemon=True)
                self.watcher.start()
        except BaseException:  # a Ctrl-C held during the start is raised at the block's end: no caller has us yet
            if self.process is not None:
                self.kill()
            raise

    def _watch(self, memory_limit: int) -> None:
        """Poll until the child exits; past the time or memory limit, kill its group and say which."""
        while True:
            try:
                self.result.status = self.process.wait(timeout=POLL_SECONDS)
                self.result.seconds = time.perf_counter() - self.started  # when it ended, not when it was asked
                return
            except subprocess.TimeoutExpired:
                pass
            rss = tree_rss(self.process.pid)
            self.result.peak_rss = max(self.result.peak_rss, rss)
            if rss > memory_limit:
                self.result.over_memory = True
            elif time.perf_counter() - self.started > self.limits.timeout:
                self.result.timed_out = True
            else:
                continue
            _kill_group(self.process)
            self.result.seconds = time.perf_counter() - self.started
            return

    def wait(self) -> ChildResult:
        """Block until the child has ended (interruptible: Ctrl-C kills the group, then propagates)."""
        try:
            while self.watcher.is_alive():
                self.watcher.join(POLL_SECONDS)
                raise_if_signalled()  # Ctrl-C whose exception was swallowed elsewhere still ends the hop
        finally:
            self.kill()
        self.result.seconds = self.result.seconds or time.perf_counter() - self.started
        self.result.log_tail = tuple(read_tail(self.log_path))
        return self.result

    def kill(self) -> None:
        """End the child's whole process group now (its helpers too) and reap it."""
        _kill_group(self.process)
        if self.orphan_watch is not None:
            _kill_group(self.orphan_watch)
            self.orphan_watch = None
        self.result.status = self.process.returncode if self.result.status is None else self.result.status


def _start_orphan_watch(group: int) -> subprocess.Popen | None:
    """The watchdog for one child's process group (None if it cannot start: the hop still runs, unguarded)."""
    try:
        return subprocess.Popen([sys.executable, "-I", "-S", "-c", ORPHAN_WATCH, str(group)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return None


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the child's process group (helpers included) and reap the child; uninterruptible."""
    with signals_deferred():  # (does nothing outside the main thread, where no signal handler runs anyway)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()


def read_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 << 10) -> list[str]:
    """The last non-empty lines of a log file (reading only its end: a converter can log megabytes)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
