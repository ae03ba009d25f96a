"""Interruptions: SIGTERM unwinds like Ctrl-C, and cleanup is not cut short by a second signal.

Python turns SIGINT into KeyboardInterrupt, so `finally` blocks remove scratch directories; SIGTERM (what
`kill`, timeouts and CI cancellations send) would end the process on the spot and leave them behind. While
safeconvert runs, SIGTERM raises `Terminated` instead, which unwinds the same way.

Python handlers run in the main thread between bytecodes, so inside a long native call (ONNX Runtime running
a hostile Loop, a converter) they would wait for the call to return, possibly forever. A watchdog thread
therefore learns of each signal through `signal.set_wakeup_fd`; when the main thread has not run the handler
within GRACE_SECONDS, it removes the scratch paths registered with `scratch_tracked`, prints one line and
ends the process with the conventional code (130 or 143) through os._exit. It never does so while a
deferred section (`signals_deferred`: placing OUT, cleanup) is running: it waits for the section to end.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
DEFERRED = {signal.SIGINT, signal.SIGTERM}


class Terminated(BaseException):
    """SIGTERM arrived; a BaseException so that `except Exception` in library code does not swallow it."""


# Signals received while safeconvert ran. The exception a handler raises can be lost: library code that
# catches everything (`except:` around an import or a callback) swallows it, and when the handler happens to run
# inside a finalizer (__del__, a weakref callback) Python reports it as "unraisable" and carries on, which
# unraisable_silenced() then hides. Under load a Ctrl-C was lost that way about once per test-suite run. The
# record keeps the interruption alive until a checkpoint acts on it again (raise_if_signalled): waiting for a
# hop, placing the output, the end of the command.
_RECEIVED: list[int] = []


GRACE_SECONDS = 3.0  # how long the main thread has to act on a signal before the watchdog ends the process
_EXIT_CODES = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class _State:
    """What the watchdog reads from the main thread: signals its handlers saw, deferred sections open, scratch
    paths. `lock` makes "no deferred section is open, so end the process" one step: a section cannot start
    between the check and os._exit."""

    lock = threading.Lock()
    handled = 0  # SIGINT/SIGTERM the main thread's unwinding handlers have run
    deferring = 0  # deferred sections open in the main thread
    scratch: dict[Path, int] = {}  # scratch paths to remove if the process is ended from outside the main thread
    wakeup_fd: int | None = None  # the watchdog's pipe, while one runs


def _after_fork_in_child() -> None:
    """A child forked without exec (by a library) must not write its signals into the parent's watchdog pipe,
    nor inherit a lock another thread held at the fork."""
    _State.lock = threading.Lock()
    if _State.wakeup_fd is None:
        return
    try:
        current = signal.set_wakeup_fd(-1)
        if current != _State.wakeup_fd:
            signal.set_wakeup_fd(current)
    except (ValueError, OSError):
        pass
    _State.wakeup_fd = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _note_handled() -> None:
    with _State.lock:
        _State.handled += 1


def _raise_interrupted(signum, frame) -> None:
    _note_handled()
    _RECEIVED.append(signum)
    raise KeyboardInterrupt


def _raise_terminated(signum, frame) -> None:
    _note_handled()
    _RECEIVED.append(signum)
    raise Terminated()


@contextmanager
def scratch_tracked(path: Path) -> Iterator[Path]:
    """Register a scratch file or directory for the watchdog to remove if it has to end the process; the
    caller still removes it itself on every normal path."""
    path = Path(path)
    with _State.lock:
        _State.scratch[path] = _State.scratch.get(path, 0) + 1
    try:
        yield path
    finally:
        with _State.lock:
            count = _State.scratch.pop(path, 1) - 1
            if count > 0:
                _State.scratch[path] = count


def raise_if_signalled() -> None:
    """Raise again for a signal that arrived earlier (its first exception may have been swallowed)."""
    if _RECEIVED:
        raise Terminated() if _RECEIVED[0] == signal.SIGTERM else KeyboardInterrupt


@contextmanager
def signals_unwind() -> Iterator[None]:
    """Within the block, SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated, and both are recorded;
    the previous handlers are restored afterwards. A signal the process was started ignoring stays ignored."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    _RECEIVED.clear()
    previous = {number: signal.signal(number, handler)
                for number, handler in ((signal.SIGINT, _raise_interrupted), (signal.SIGTERM, _raise_terminated))
                if signal.getsignal(number) is not signal.SIG_IGN}  # a background job's ignored Ctrl-C stays so
    watchdog = _Watchdog.start() if previous else None
    try:
        yield
    finally:
        for number, handler in previous.items():
            _restore(number, handler)
        if watchdog is not None:
            watchdog.stop()
        _RECEIVED.clear()  # the run is over: later in-process calls start without it


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, so cleanup runs to completion; they are acted on after.

    The Python-level handlers are swapped rather than the signals masked: a signal can be delivered to any
    thread (TensorFlow and ONNX Runtime start many), but its Python handler always runs in the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum, frame) -> None:  # not counted as handled: the watchdog waits for the section anyway, and
        pending.append(signum)  # the delivery afterwards runs (and counts) the unwinding handler

    with _State.lock:  # waits if the watchdog is ending the process: the section then never starts
        _State.deferring += 1
    try:
        previous = {number: signal.signal(number, hold) for number in DEFERRED}
        try:
            yield
        finally:
            for number, handler in previous.items():
                _restore(number, handler)
    finally:
        with _State.lock:
            _State.deferring -= 1
    if pending:
        _deliver(pending[0], previous[pending[0]])


def _deliver(number: int, handler) -> None:
    """Act on a held signal as its own handler would have."""
    if callable(handler):
        handler(number, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), number)


def _restore(number: int, handler) -> None:
    """Put a handler back; None means one installed outside Python, which cannot be reinstalled from here."""
    signal.signal(number, handler if handler is not None else signal.SIG_DFL)


class _Watchdog:
    """A daemon thread that ends the process when the main thread does not act on SIGINT/SIGTERM in time.

    The C-level signal handler writes the signal's number to a pipe (signal.set_wakeup_fd) whatever the main
    thread is doing; the thread reads it, gives the Python handler GRACE_SECONDS to run, waits for deferred
    sections to end, and otherwise removes the tracked scratch paths and calls os._exit. A second signal
    counts on its own: a handler whose exception library code swallowed does not disarm the next one.
    """

    def __init__(self, read_fd: int, write_fd: int, previous_fd: int):
        self.read_fd, self.write_fd, self.previous_fd = read_fd, write_fd, previous_fd
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="safeconvert-signal-watchdog", daemon=True)

    @classmethod
    def start(cls) -> "_Watchdog | None":
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # the signal handler must never block on a full pipe
        try:
            previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):  # not the main thread of the main interpreter
            os.close(read_fd)
            os.close(write_fd)
            return None
        watchdog = cls(read_fd, write_fd, previous_fd)
        _State.wakeup_fd = write_fd
        # The real stderr, kept now: around native calls fd 2 may be pointed at a log or /dev/null.
        watchdog.stderr_fd = os.dup(2)
        with _State.lock:
            watchdog.baseline = _State.handled
        watchdog.thread.start()
        return watchdog

    def stop(self) -> None:
        """The run is over: restore the previous wakeup fd and let the thread end (closing the pipe wakes it)."""
        self.stopping.set()
        signal.set_wakeup_fd(self.previous_fd)
        _State.wakeup_fd = None
        os.close(self.write_fd)
        self.thread.join(timeout=1.0)
        os.close(self.stderr_fd)

    def _run(self) -> None:
        received = 0
        try:
            while not self.stopping.is_set():
                data = os.read(self.read_fd, 64)
                if not data:
                    return
                for number in data:
                    if number in _EXIT_CODES:
                        received += 1
                        self._await_handler(received, number)
        finally:
            os.close(self.read_fd)

    def _await_handler(self, received: int, number: int) -> None:
        """Return once the main thread ran the handler for the `received`-th signal, or end the process."""
        deadline = time.monotonic() + GRACE_SECONDS
        while not self.stopping.wait(0.05):
            with _State.lock:
                if _State.handled - self.baseline >= received:
                    return
                if _State.deferring:  # placing OUT or cleaning up: never cut it; act once it has ended
                    deadline = max(deadline, time.monotonic() + 1.0)
                elif time.monotonic() >= deadline:
                    _end_process(number, self.stderr_fd)  # holds the lock: no deferred section can start meanwhile


def _end_process(number: int, stderr_fd: int) -> None:
    """Remove tracked scratch paths, say so in one line, and exit with the conventional code."""
    for path in list(_State.scratch):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
    message = (f"safeconvert: {_WORDS[number]} (stopped inside a native call); "
               "nothing was written at the output path\n")
    try:
        os.write(stderr_fd, message.encode())
    except OSError:
        pass
    os._exit(_EXIT_CODES[number])
