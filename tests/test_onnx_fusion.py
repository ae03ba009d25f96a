"""ONNX Runtime's basic simplification, used when onnx2tf fails on a graph as written (tf2onnx's depthwise BN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safeconvert.errors import ConverterFailedError
from safeconvert.wrappers.onnx_fusion import fuse_in_place


def _conv_mul_add(path: Path) -> None:
    """A depthwise Conv followed by a per-channel Mul and Add, as tf2onnx writes a depthwise BatchNorm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, (1, 4, 1, 1)).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.normal(size=(1, 4, 1, 1)).astype(np.float32), "shift")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], group=4, pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "scale"], ["m"]),
             helper.make_node("Add", ["m", "shift"], ["y"])]
    graph = helper.make_graph(nodes, "dw_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8), str(path))


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_mul_and_add_fold_into_the_convolution_and_the_function_stays(tmp_path: Path):
    import onnx

    model = tmp_path / "m.onnx"
    _conv_mul_add(model)
    x = np.random.default_rng(1).normal(size=(1, 4, 8, 8)).astype(np.float32)
    before = _run(model, x)
    fuse_in_place(model, "onnx2tf-fused")
    proto = onnx.load(str(model))
    assert [n.op_type for n in proto.graph.node] == ["Conv"]
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    onnx.checker.check_model(proto)
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_a_model_onnxruntime_cannot_load_fails_as_the_converter(tmp_path: Path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not onnx")
    with pytest.raises(ConverterFailedError, match="onnx2tf-fused failed: ONNX Runtime cannot simplify"):
        fuse_in_place(model, "onnx2tf-fused")
