"""A model that hangs ONNX Runtime in native code: SIGTERM still ends `safeconvert check` promptly, with 143
and one line; the load probe runs models on a random input too, so one that explodes on non-zero values is
caught in the probe's child.

The Loop's trip count comes from the input's values or the batch size, so it is zero on the probe's zero
input of batch 1 and about 1e12 where it matters; ONNX Runtime never returns to Python meanwhile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .cli_runs import two_photo_calibration

pytestmark = pytest.mark.timeout(300)
BIG = 1e12


def _save(path: Path, nodes: list, initializers: list) -> Path:
    """A [N,3,32,32] -> `logits` [N,10] model: a pooled linear head whose output `raw` the `nodes` finish."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    weights = nh.from_array(np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32), "W")
    head = [h.make_node("GlobalAveragePool", ["x"], ["pooled"]), h.make_node("Flatten", ["pooled"], ["flat"]),
            h.make_node("Gemm", ["flat", "W"], ["raw"], transB=1)]
    graph = h.make_graph(head + nodes, "g",
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 32, 32])],
                         [h.make_tensor_value_info("logits", T.FLOAT, ["N", 10])], [weights, *initializers])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _looping(path: Path, trip_nodes: list, trip_inits: list) -> Path:
    """`logits` = the head's output passed through a Loop whose trip count the `trip_nodes` compute."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    value = h.make_tensor_value_info
    body = h.make_graph([h.make_node("Identity", ["c_in"], ["c_out"]), h.make_node("Identity", ["v_in"], ["v_out"])],
                        "body", [value("i", T.INT64, []), value("c_in", T.BOOL, []), value("v_in", T.FLOAT, None)],
                        [value("c_out", T.BOOL, []), value("v_out", T.FLOAT, None)])
    nodes = [*trip_nodes, h.make_node("Cast", ["trip_float"], ["trip"], to=T.INT64),
             h.make_node("Loop", ["trip", "TRUE", "raw"], ["logits"], body=body)]
    return _save(path, nodes, [*trip_inits, nh.from_array(np.array(True), "TRUE")])


def _value_dependent_loop(path: Path) -> Path:
    """Trip count max|x| * 1e12: zero on a zero input, endless on photos."""
    from onnx import helper as h
    from onnx import numpy_helper as nh

    nodes = [h.make_node("Abs", ["x"], ["ax"]), h.make_node("ReduceMax", ["ax"], ["mx"], keepdims=0),
             h.make_node("Mul", ["mx", "BIG"], ["trip_float"])]
    return _looping(path, nodes, [nh.from_array(np.array(BIG, np.float32), "BIG")])


def _batch_dependent_loop(path: Path) -> Path:
    """Trip count (batch - 1) * 1e12: zero for the probe's single image, whatever its values; endless when
    validation runs a batch of photos."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    nodes = [h.make_node("Shape", ["x"], ["shape"]), h.make_node("Gather", ["shape", "ZERO"], ["batch"], axis=0),
             h.make_node("Cast", ["batch"], ["batch_float"], to=T.FLOAT),
             h.make_node("Sub", ["batch_float", "ONE"], ["extra"]),
             h.make_node("Mul", ["extra", "BIG"], ["trip_float"])]
    inits = [nh.from_array(np.array(0, np.int64), "ZERO"), nh.from_array(np.array(1.0, np.float32), "ONE"),
             nh.from_array(np.array(BIG, np.float32), "BIG")]
    return _looping(path, nodes, inits)


def _plain(path: Path) -> Path:
    from onnx import helper as h

    return _save(path, [h.make_node("Identity", ["raw"], ["logits"])], [])


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    return two_photo_calibration(tmp_path_factory.mktemp("calib_hang"))


def _check_process(target: Path, source: Path, calib: Path, tmp_path: Path) -> subprocess.Popen:
    environment = dict(os.environ, SAFECONVERT_CACHE_DIR="off")
    command = [sys.executable, "-c", "import sys; from safeconvert.cli import main; main(sys.argv[1:])",
               "check", str(target), str(source), "--calib", str(calib)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=tmp_path, env=environment, text=True)


def _wait_until_probes_ended(process: subprocess.Popen, quiet_seconds: float = 3.0, limit: float = 120.0) -> None:
    """Return once the run has started a probe child, all its children have ended, and `quiet_seconds` passed:
    it is then running the models in its own process."""
    import psutil

    parent, seen_child, quiet_since, started = psutil.Process(process.pid), False, None, time.monotonic()
    while time.monotonic() - started < limit:
        assert process.poll() is None, process.communicate()
        if parent.children(recursive=True):
            seen_child, quiet_since = True, None
        elif seen_child:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_seconds:
                return
        time.sleep(0.1)
    pytest.fail("the probes did not end")


def _terminate_and_collect(process: subprocess.Popen, within: float = 15.0) -> tuple[int, str, float]:
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"SIGTERM did not end the run within {within:.0f} s")
    return process.returncode, stderr, time.monotonic() - sent


def _assert_one_line(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines


@pytest.mark.slow  # start-up, two probes, a few seconds inside the loop, then the watchdog's grace period
def test_sigterm_ends_a_run_stuck_in_native_code(tmp_path: Path, calib):
    """The probes pass (batch 1), then ONNX Runtime loops in the main process: the watchdog ends it."""
    target, source = _batch_dependent_loop(tmp_path / "hang.onnx"), _plain(tmp_path / "src.onnx")
    process = _check_process(target, source, calib, tmp_path)
    _wait_until_probes_ended(process)
    code, stderr, seconds = _terminate_and_collect(process)
    lines = _assert_one_line(stderr)
    assert code == 143 and "terminated" in lines[0] and "native call" in lines[0], (code, stderr)
    assert seconds < 15


def test_sigterm_ends_check_of_the_value_dependent_loop(tmp_path: Path, calib):
    """The adversarial repro: `check` on a Loop whose trip count is max|x| * 1e12 answers SIGTERM."""
    target, source = _value_dependent_loop(tmp_path / "hang.onnx"), _plain(tmp_path / "src.onnx")
    process = _check_process(target, source, calib, tmp_path)
    time.sleep(10)
    assert process.poll() is None, process.communicate()
    code, stderr, _ = _terminate_and_collect(process)
    lines = _assert_one_line(stderr)
    assert code == 143 and "terminated" in lines[0], (code, stderr)


def test_probe_runs_a_random_input_too(tmp_path: Path):
    """A model that allocates max|x| * 1e10 floats: nothing on zeros, 40 GB on any other input. The probe's
    child refuses it under its address-space limit."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from safeconvert.safety import probe_child

    nodes = [h.make_node("Abs", ["x"], ["ax"]), h.make_node("ReduceMax", ["ax"], ["mx"], keepdims=1, axes=[0, 1, 2, 3]),
             h.make_node("Reshape", ["mx", "ONE_D"], ["mx1"]), h.make_node("Mul", ["mx1", "SCALE"], ["count_float"]),
             h.make_node("Cast", ["count_float"], ["count"], to=T.INT64),
             h.make_node("ConstantOfShape", ["count"], ["filler"], value=nh.from_array(np.array([1.0], np.float32))),
             h.make_node("ReduceSum", ["filler"], ["total"], keepdims=0),
             h.make_node("Mul", ["total", "ZERO"], ["nothing"]), h.make_node("Add", ["raw", "nothing"], ["logits"])]
    inits = [nh.from_array(np.array([1], np.int64), "ONE_D"), nh.from_array(np.array([1e10], np.float32), "SCALE"),
             nh.from_array(np.array(0.0, np.float32), "ZERO")]
    model = _save(tmp_path / "explodes.onnx", nodes, inits)
    result = subprocess.run([sys.executable, "-I", probe_child.__file__, "onnx", str(model)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == probe_child.REFUSED, (result.returncode, result.stdout, result.stderr)
    assert "memory" in result.stdout
