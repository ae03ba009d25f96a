"""Silence the native (C++) chatter frameworks print on stderr at import/initialisation time.

TensorFlow's absl logging ("All log messages before absl::InitializeLog()...", CUDA stubs) and LiteRT's
"Created TensorFlow Lite XNNPACK delegate" bypass Python logging and TF_CPP_MIN_LOG_LEVEL. Users read
safeconvert's own one-line messages, so file descriptor 2 is pointed at /dev/null around those calls.
Python exceptions still propagate normally.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager, suppress
from typing import Iterator, TextIO


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    if os.environ.get("SAFECONVERT_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextmanager
def unraisable_silenced() -> Iterator[None]:
    """Hide "Exception ignored in ..." tracebacks Python prints for errors in __del__ and finalizers.

    A run interrupted while TensorFlow is importing leaves half-built objects whose __del__ fails when they are
    collected; Python prints a traceback for each, after the run's own one-line message. Such errors cannot
    change a result, and users are promised one line, so they are dropped (shown with SAFECONVERT_VERBOSE=1).
    """
    if os.environ.get("SAFECONVERT_VERBOSE"):
        yield
        return
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


VERBOSE_VARIABLE = "SAFECONVERT_VERBOSE"


@contextmanager
def framework_output_captured(verbose: bool = False) -> Iterator[TextIO]:
    """Keep what frameworks print during a run off the terminal; yield a stream that still reaches it.

    Python warnings (a torch FutureWarning), records that reach logging's last-resort handler, and native
    lines written straight to file descriptor 2 (ONNX Runtime's `[E:onnxruntime:...]` while a repair
    candidate fails to load, absl, XNNPACK) would otherwise sit between safeconvert's own one-line messages
    and progress bars, where they read like errors of the run. They go to a scratch file instead, dropped
    when the run ends. The yielded stream writes to the real stderr, for the progress display. With
    `verbose` (--verbose or SAFECONVERT_VERBOSE=1) nothing is redirected: everything is shown as it comes.
    """
    if verbose or os.environ.get(VERBOSE_VARIABLE):
        with _verbose_set():
            yield sys.stderr
        return
    try:
        sys.stderr.flush()
        terminal_fd = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter): nothing reaches a terminal anyway
        yield sys.stderr
        return
    terminal = os.fdopen(terminal_fd, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                         errors="backslashreplace")
    with tempfile.TemporaryFile("w+", prefix="safeconvert-framework-", encoding="utf-8", errors="replace") as log:
        os.dup2(log.fileno(), 2)
        try:
            with _python_messages_to(log):
                yield terminal
        finally:
            with suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(terminal_fd, 2)
            terminal.close()


@contextmanager
def _python_messages_to(log: TextIO) -> Iterator[None]:
    """Warnings and last-resort log records into `log` (also when sys.stderr is not file descriptor 2)."""
    import logging
    import warnings

    previous_show, previous_last_resort = warnings.showwarning, logging.lastResort
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: log.write(
        warnings.formatwarning(message, category, filename, lineno, line))
    last_resort = logging.StreamHandler(log)
    last_resort.setLevel(logging.WARNING)
    logging.lastResort = last_resort
    try:
        yield
    finally:
        warnings.showwarning, logging.lastResort = previous_show, previous_last_resort


@contextmanager
def _verbose_set() -> Iterator[None]:
    """--verbose reaches the code that reads SAFECONVERT_VERBOSE (the native silencing above) for this run."""
    previous = os.environ.get(VERBOSE_VARIABLE)
    os.environ[VERBOSE_VARIABLE] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(VERBOSE_VARIABLE, None)
        else:
            os.environ[VERBOSE_VARIABLE] = previous
