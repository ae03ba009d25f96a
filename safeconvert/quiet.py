"""Silence the native (C++) chatter frameworks print on stderr at import/initialisation time.

TensorFlow's absl logging ("All log messages before absl::InitializeLog()...", CUDA stubs) and LiteRT's
"Created TensorFlow Lite XNNPACK delegate" bypass Python logging and TF_CPP_MIN_LOG_LEVEL. Users read
safeconvert's own one-line messages, so file descriptor 2 is pointed at /dev/null around those calls.
Python exceptions still propagate normally.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator


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
