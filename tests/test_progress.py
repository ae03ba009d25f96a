"""Progress bars: shown on an interactive terminal, absent from pipes, logs, --quiet and --json.

The command-line tests run the real `safeconvert check` on a small ONNX model, once with stderr on a
pseudo-terminal (the bars must appear: this is what makes the absence tests meaningful) and with pipes.
"""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from safeconvert import progress
from safeconvert.timing import Stopwatch

ESCAPE = "\x1b["
HIDE_CURSOR = "\x1b[?25l"  # rich's live display hides the cursor while it draws


def terminal_console(buffer: io.StringIO) -> Console:
    return Console(file=buffer, force_terminal=True, width=100, color_system="standard")


def test_tasks_cost_nothing_without_a_display():
    assert not progress.active()
    with progress.task("anything", total=3) as advance:
        advance(2)
    with progress.shown(False):
        assert not progress.active()


def test_a_display_draws_bars_and_stage_names():
    buffer = io.StringIO()
    with progress.shown(True, console=terminal_console(buffer)):
        assert progress.active()
        with Stopwatch().stage("validate"), progress.task("running model.onnx", total=4) as advance:
            advance(4)
            time.sleep(0.4)  # the display refreshes ten times a second
    text = buffer.getvalue()
    assert HIDE_CURSOR in text and "validating on the calibration images" in text and "running model.onnx" in text
    assert "4/4" in text and not progress.active()


def test_stage_labels():
    assert progress.stage_label("convert:tf2onnx") == "converting with tf2onnx"
    assert progress.stage_label("activations").startswith("building both models in TVM")
    assert progress.stage_label("some_new_stage") == "some new stage"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small real ONNX classifier (conv, pooling, dense), batch dimension dynamic."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w", (8, 3, 3, 3)), ("fc", (8, 10)), ("bias", (10,)))]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "bias"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every ONNX Runtime release reads
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, path)
    return path


def run_check(model: Path, *flags: str, stderr_tty: bool) -> tuple[int, str, str]:
    """`safeconvert check MODEL MODEL`; stderr on a pseudo-terminal or a pipe. Returns (code, stdout, stderr)."""
    command = [sys.executable, "-m", "safeconvert", "check", str(model), str(model), *flags]
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100")
    env.pop("NO_COLOR", None), env.pop("FORCE_COLOR", None), env.pop("TTY_COMPATIBLE", None)
    if not stderr_tty:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, env=env) as process:
        os.close(slave)
        stderr = _drain(master)
        stdout = process.stdout.read().decode()
        code = process.wait(timeout=300)
    return code, stdout, stderr


def _drain(master: int) -> str:
    """Everything written to the pseudo-terminal until the child closes it."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child has exited and closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_terminal_run_shows_progress(tiny_onnx: Path):
    code, stdout, stderr = run_check(tiny_onnx, stderr_tty=True)
    assert code == 0, stderr
    assert HIDE_CURSOR in stderr, "no live progress display on an interactive stderr"
    assert "verified" in stdout


@pytest.mark.parametrize("flags", [(), ("--quiet",), ("--json",)])
def test_piped_run_has_no_escape_codes(tiny_onnx: Path, flags: tuple[str, ...]):
    code, stdout, stderr = run_check(tiny_onnx, *flags, stderr_tty=False)
    assert code == 0, stderr
    assert ESCAPE not in stdout and ESCAPE not in stderr


@pytest.mark.parametrize("flags", [("--quiet",), ("--json",)])
def test_quiet_and_json_have_no_progress_even_on_a_terminal(tiny_onnx: Path, flags: tuple[str, ...]):
    code, stdout, stderr = run_check(tiny_onnx, *flags, stderr_tty=True)
    assert code == 0, stderr
    assert ESCAPE not in stderr and ESCAPE not in stdout
