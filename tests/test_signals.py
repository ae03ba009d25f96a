"""Interruptions are not lost when library code swallows the exception they raise, and an ignored Ctrl-C
(a background job's) stays ignored."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from safeconvert.atomic import move_into_place
from safeconvert.safety import signals


def _swallowed(number: int) -> None:
    """Deliver a signal where a library's catch-all `except BaseException: pass` eats its exception."""
    try:
        os.kill(os.getpid(), number)
        time.sleep(0.5)  # the handler runs here, in the main thread
    except BaseException:
        pass


@pytest.mark.parametrize("number,expected", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, signals.Terminated)])
def test_a_swallowed_signal_still_stops_the_output_from_being_written(number, expected, tmp_path: Path):
    built, out = tmp_path / "built.onnx", tmp_path / "out.onnx"
    built.write_bytes(b"model")
    with signals.signals_unwind():
        _swallowed(number)
        with pytest.raises(expected):
            move_into_place(built, out)
    assert not out.exists()


def test_the_record_ends_with_the_run(tmp_path: Path):
    """A later in-process call (the Python API) is not stopped by an earlier run's interruption."""
    with signals.signals_unwind():
        _swallowed(signal.SIGINT)
    built, out = tmp_path / "built.onnx", tmp_path / "out.onnx"
    built.write_bytes(b"model")
    move_into_place(built, out)
    assert out.read_bytes() == b"model"


def test_an_ignored_interrupt_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals.signals_unwind():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is signals._raise_terminated
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
