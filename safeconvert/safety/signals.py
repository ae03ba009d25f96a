"""Interruptions: SIGTERM unwinds like Ctrl-C, and cleanup is not cut short by a second signal.

Python turns SIGINT into KeyboardInterrupt, so `finally` blocks remove scratch directories; SIGTERM (what
`kill`, timeouts and CI cancellations send) would end the process on the spot and leave them behind. While
safeconvert runs, SIGTERM raises `Terminated` instead, which unwinds the same way. Handlers run in the main
thread between bytecodes: inside a long native call (a converter) they take effect when the call returns.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
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


def _raise_interrupted(signum, frame) -> None:
    _RECEIVED.append(signum)
    raise KeyboardInterrupt


def _raise_terminated(signum, frame) -> None:
    _RECEIVED.append(signum)
    raise Terminated()


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
    try:
        yield
    finally:
        for number, handler in previous.items():
            _restore(number, handler)
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
    previous = {number: signal.signal(number, lambda signum, frame: pending.append(signum)) for number in DEFERRED}
    try:
        yield
    finally:
        for number, handler in previous.items():
            _restore(number, handler)
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
