"""A target whose output has another shape than the source's (a converter that ignores ConvTranspose's
output_shape, or drops a Pad) is a structural fault: localize and repair must say so, never crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np


def _conv_model(path: Path, pad: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    size = 32 + 2 * pad - 2
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["features"], pads=[pad] * 4),
         helper.make_node("Flatten", ["features"], ["scores"])],
        "conv", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4 * size * size])],
        [numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _safeconvert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safeconvert", *args], capture_output=True, text=True, timeout=600)


def test_localize_and_repair_of_a_target_with_another_output_shape_do_not_crash(tmp_path: Path):
    source, target = _conv_model(tmp_path / "source.onnx", pad=1), _conv_model(tmp_path / "target.onnx", pad=0)
    out = tmp_path / "fixed.onnx"
    for args in (["localize", str(source), str(target)], ["repair", str(source), str(target), "-o", str(out)]):
        done = _safeconvert(*args)
        assert done.returncode in (0, 1), f"{args[0]}: exit {done.returncode}: {done.stderr[-500:]}"
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert done.returncode == 0 or not out.exists()  # never an unverified file at OUT
