"""Repair edit primitives: break a real converted model the way a conversion fault would, apply the
primitive with the known-correct values, and check the repaired model computes what the clean one does
(ONNX Runtime / LiteRT)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from safeconvert.repair import onnx_edit as ox
from safeconvert.repair import tflite_edit as tx

INT64_MIN = -(2**63)


# ---------------------------------------------------------------- shared models


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("repair")


@pytest.fixture(scope="module")
def keras_file(workdir) -> Path:
    from safeconvert.models.small import keras_small_cnn

    path = workdir / "small.keras"
    keras_small_cnn().save(path)
    return path


@pytest.fixture(scope="module")
def keras_onnx(keras_file, workdir):
    return _tf2onnx(keras_file, workdir / "small.onnx")


@pytest.fixture(scope="module")
def flatten_onnx(workdir):
    """Conv -> ReLU -> Flatten -> Dense, where the flatten order (NHWC) matters."""
    from safeconvert.runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3), name="input")
    x = layers.Conv2D(8, 3, strides=2, name="conv")(inputs)
    x = layers.ReLU(name="relu")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(10, name="logits")(x)
    path = workdir / "flatten.keras"
    keras.Model(inputs, outputs).save(path)
    return _tf2onnx(path, workdir / "flatten.onnx")


@pytest.fixture(scope="module")
def tflite_models(keras_file, workdir) -> dict[str, bytes]:
    from safeconvert.formats import Format
    from safeconvert.wrappers.base import ConversionOptions
    from safeconvert.wrappers.tflite_wrapper import TfliteConverter

    recipes = {
        "float": ConversionOptions(),
        "dynamic": ConversionOptions(tflite_optimizations=["DEFAULT"]),
        "float16": ConversionOptions(tflite_supported_types=["float16"]),
        "int8": ConversionOptions(tflite_int8=True, representative_data=_images(16, 32, 32, seed=5)),
    }
    models = {}
    for name, options in recipes.items():
        out = workdir / f"small_{name}.tflite"
        TfliteConverter().convert(keras_file, Format.KERAS, out, options)
        models[name] = out.read_bytes()
    return models


@pytest.fixture(scope="module")
def torch_onnx(workdir):
    """(dynamo export: BatchNorm folded into the convs, legacy opset-17 export: BatchNormalization kept)."""
    import onnx

    from safeconvert.formats import Format
    from safeconvert.models.files import save_torch_export
    from safeconvert.models.small import torch_small_cnn
    from safeconvert.wrappers.base import ConversionOptions
    from safeconvert.wrappers.torch_onnx_wrapper import TorchOnnxConverter

    pt2 = save_torch_export(torch_small_cnn(), workdir / "small.pt2", (1, 3, 32, 32))
    TorchOnnxConverter().convert(pt2, Format.TORCH_EXPORT, workdir / "dynamo.onnx", ConversionOptions())
    TorchOnnxConverter().convert(pt2, Format.TORCH_EXPORT, workdir / "legacy.onnx", ConversionOptions(opset=17, torch_dynamo=False))
    return onnx.load(str(workdir / "dynamo.onnx")), onnx.load(str(workdir / "legacy.onnx"))


def _tf2onnx(src: Path, out: Path):
    import onnx

    from safeconvert.formats import Format
    from safeconvert.wrappers.base import ConversionOptions
    from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter

    Tf2OnnxConverter().convert(src, Format.KERAS, out, ConversionOptions())
    return onnx.load(str(out))


# ---------------------------------------------------------------- running and comparing


def _images(count: int, height: int, width: int, channels: int = 3, seed: int = 0, nchw: bool = False) -> np.ndarray:
    images = np.random.default_rng(seed).standard_normal((count, height, width, channels)).astype(np.float32)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if nchw else images


def _copy(model):
    import onnx

    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def run_onnx(model, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def run_tflite(model, batch: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    content = model if isinstance(model, bytes) else tx.model_bytes(model)
    interpreter = Interpreter(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for image in batch:
        interpreter.set_tensor(detail["index"], image[np.newaxis])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def assert_same(got: np.ndarray, want: np.ndarray, rel: float = 1e-5) -> None:
    scale = max(float(np.abs(want).max()), 1e-6)
    diff = float(np.abs(got - want).max())
    assert got.shape == want.shape and diff <= rel * scale, f"max abs diff {diff:.3g} (output scale {scale:.3g})"


def assert_differs(got: np.ndarray, want: np.ndarray) -> None:
    """The break must really change the outputs, or the repair proves nothing."""
    assert got.shape != want.shape or float(np.abs(got - want).max()) > 1e-3 * float(np.abs(want).max())


def _nodes(model, op_type: str) -> list:
    return [n for n in model.graph.node if n.op_type == op_type]


def _reader(model, tensor: str):
    (node, _), = ox.consumers(model, tensor)
    return node


# ---------------------------------------------------------------- ONNX: constants


def _quantise_weight(model, node, position: int = 1) -> None:
    """Replace a node's float weight by int8 per-output-channel values behind a DequantizeLinear."""
    from onnx import helper, numpy_helper

    weight = ox.constant_value(model, node.input[position])
    axis = 0 if node.op_type == "Conv" else 1  # MatMul (in, out): per output column
    reduce_axes = tuple(a for a in range(weight.ndim) if a != axis)
    scale = (np.abs(weight).max(axis=reduce_axes) / 127).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    name = node.input[position]
    model.graph.initializer.extend([numpy_helper.from_array(q, name + "_q"), numpy_helper.from_array(scale, name + "_scale"),
                                    numpy_helper.from_array(np.zeros_like(scale, np.int8), name + "_zp")])
    dq = helper.make_node("DequantizeLinear", [name + "_q", name + "_scale", name + "_zp"], [name + "_dq"], name=name + "_DQ", axis=axis)
    model.graph.node.insert(list(model.graph.node).index(node), dq)
    node.input[position] = name + "_dq"


def _float16_weight(model, node, position: int = 1) -> None:
    """Replace a node's float weight by a float16 initializer and a Cast to float."""
    from onnx import TensorProto, helper, numpy_helper

    name = node.input[position]
    weight = ox.constant_value(model, name)
    model.graph.initializer.append(numpy_helper.from_array(weight.astype(np.float16), name + "_fp16"))
    cast = helper.make_node("Cast", [name + "_fp16"], [name + "_cast"], name=name + "_Cast", to=TensorProto.FLOAT)
    model.graph.node.insert(list(model.graph.node).index(node), cast)
    node.input[position] = name + "_cast"


def test_constant_value_reads_quantised_and_float16_chains(keras_onnx):
    model = _copy(keras_onnx)
    conv, matmul = _nodes(model, "Conv")[-1], _nodes(model, "MatMul")[0]
    weight, dense = ox.constant_value(model, conv.input[1]), ox.constant_value(model, matmul.input[1])
    _quantise_weight(model, conv)
    _float16_weight(model, matmul)
    step = np.abs(weight).max(axis=(1, 2, 3), keepdims=True) / 127
    assert np.all(np.abs(ox.constant_value(model, conv.input[1]) - weight) <= step / 2 + 1e-7)
    np.testing.assert_array_equal(ox.constant_value(model, matmul.input[1]), dense.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError):
        ox.constant_value(model, conv.input[0])


def test_quantised_and_float16_weights_restored_to_float(keras_onnx):
    images = _images(4, 32, 32)
    clean = run_onnx(keras_onnx, images)
    model = _copy(keras_onnx)
    conv, matmul = _nodes(model, "Conv")[-1], _nodes(model, "MatMul")[0]
    weight, dense = ox.constant_value(model, conv.input[1]), ox.constant_value(model, matmul.input[1])
    _quantise_weight(model, conv)
    _float16_weight(model, matmul)
    assert_differs(run_onnx(model, images), clean)

    ox.set_layer_parameters(model, conv.name, weight)
    ox.set_constant(model, matmul.input[1], dense)
    assert_same(run_onnx(model, images), clean)
    assert not _nodes(model, "DequantizeLinear") and not _nodes(model, "Cast")
    assert not any(init.name.endswith(("_q", "_fp16")) for init in model.graph.initializer)


def test_shared_constant_is_cloned_not_changed(keras_onnx):
    images = _images(4, 32, 32)
    clean = run_onnx(keras_onnx, images)
    model = _copy(keras_onnx)
    dw = next(n for n in _nodes(model, "Conv") if ox._attr(n, "group", 1) > 1)
    mul = _reader(model, dw.output[0])
    add = _reader(model, mul.output[0])
    shift = ox.constant_value(model, add.input[1])
    add.input[1] = mul.input[1]  # the Add now reads the Mul's scale: one constant, two readers
    assert_differs(run_onnx(model, images), clean)

    name = ox.set_input_constant(model, add.name, 1, shift)
    assert name != mul.input[1]
    assert_same(run_onnx(model, images), clean)


# ---------------------------------------------------------------- ONNX: layer parameters


def test_conv_parameters_absorb_tf2onnx_depthwise_mul_add(keras_onnx):
    images = _images(4, 32, 32)
    clean = run_onnx(keras_onnx, images)
    model = _copy(keras_onnx)
    dw = next(n for n in _nodes(model, "Conv") if ox._attr(n, "group", 1) > 1)
    mul = _reader(model, dw.output[0])
    add = _reader(model, mul.output[0])
    scale = ox.constant_value(model, mul.input[1]).reshape(-1)
    weight = ox.constant_value(model, dw.input[1]) * scale.reshape(-1, 1, 1, 1)  # the effective layer
    bias = ox.constant_value(model, add.input[1]).reshape(-1)
    assert len(dw.input) == 2
    ox.set_input_constant(model, dw.name, 1, np.zeros_like(weight))
    assert_differs(run_onnx(model, images), clean)

    ox.set_layer_parameters(model, dw.name, weight, bias, neutralise_nodes=[mul.name, add.name])
    assert_same(run_onnx(model, images), clean)
    assert len(ox.find_node(model, dw.name).input) == 3
    np.testing.assert_array_equal(ox.constant_value(model, mul.input[1]), 1.0)
    np.testing.assert_array_equal(ox.constant_value(model, add.input[1]), 0.0)


def test_gemm_parameters_with_and_without_transb(torch_onnx):
    dynamo, _ = torch_onnx
    images = _images(4, 32, 32, nchw=True)
    clean = run_onnx(dynamo, images)
    model = _copy(dynamo)
    gemm = _nodes(model, "Gemm")[0]
    assert ox._attr(gemm, "transB") == 1
    weight, bias = ox.constant_value(model, gemm.input[1]), ox.constant_value(model, gemm.input[2])
    ox.set_input_constant(model, gemm.name, 1, weight[::-1])
    ox.set_input_constant(model, gemm.name, 2, np.zeros_like(bias))
    assert_differs(run_onnx(model, images), clean)
    ox.set_layer_parameters(model, gemm.name, weight, bias)
    assert_same(run_onnx(model, images), clean)

    ox._set_attr(gemm, "transB", 0)  # stored as (in, out) now
    ox.set_input_constant(model, gemm.name, 1, np.zeros_like(weight.T))
    ox.set_layer_parameters(model, gemm.name, weight, bias)
    assert_same(run_onnx(model, images), clean)


def test_matmul_parameters_write_the_following_add(keras_onnx):
    images = _images(4, 32, 32)
    clean = run_onnx(keras_onnx, images)
    model = _copy(keras_onnx)
    matmul = _nodes(model, "MatMul")[0]
    weight = ox.constant_value(model, matmul.input[1]).T  # (out, in)
    ox.set_input_constant(model, matmul.name, 1, np.zeros_like(weight.T))
    assert_differs(run_onnx(model, images), clean)

    bias = np.linspace(-1, 1, weight.shape[0])
    ox.set_layer_parameters(model, matmul.name, weight, bias)  # no Add yet: one is inserted on the graph output
    assert [o.name for o in model.graph.output] == ["logits"]
    assert_same(run_onnx(model, images), clean + bias.astype(np.float32))
    ox.set_layer_parameters(model, matmul.name, weight, np.zeros_like(bias))  # now the Add is updated
    assert len(_nodes(model, "Add")) == len(_nodes(keras_onnx, "Add")) + 1
    assert_same(run_onnx(model, images), clean)


def test_batchnorm_folded_into_conv_and_neutralised(torch_onnx):
    dynamo, legacy = torch_onnx
    assert not _nodes(dynamo, "BatchNormalization") and len(_nodes(legacy, "BatchNormalization")) == 2
    images = _images(4, 32, 32, nchw=True)
    clean = run_onnx(legacy, images)
    model = _copy(legacy)
    conv = _nodes(model, "Conv")[0]
    bn = _reader(model, conv.output[0])
    assert bn.op_type == "BatchNormalization"
    gamma, beta, mean, var = (ox.constant_value(model, name).astype(np.float64) for name in bn.input[1:5])
    factor = gamma / np.sqrt(var + ox._attr(bn, "epsilon"))
    weight = ox.constant_value(model, conv.input[1]) * factor.reshape(-1, 1, 1, 1)
    bias = beta - mean * factor

    ox.set_layer_parameters(model, conv.name, weight, bias, neutralise_nodes=[bn.name])
    assert_same(run_onnx(model, images), clean)
    ox.set_attributes(model, bn.name, {"epsilon": 0.5})  # a wrong epsilon now changes nothing...
    ox.set_attributes(model, bn.name, {"epsilon": 0.0})
    assert_same(run_onnx(model, images), clean)

    other = _copy(legacy)  # ...but does on an un-neutralised BatchNormalization
    second = _nodes(other, "BatchNormalization")[1]
    ox.set_attributes(other, second.name, {"epsilon": 0.5})
    assert_differs(run_onnx(other, images), clean)
    ox.set_attributes(other, second.name, {"epsilon": float(ox._attr(bn, "epsilon"))})
    assert_same(run_onnx(other, images), clean)


# ---------------------------------------------------------------- ONNX: attributes


def test_conv_padding_strides_and_clip_bounds(keras_onnx):
    images = _images(4, 32, 32)
    clean = run_onnx(keras_onnx, images)
    model = _copy(keras_onnx)
    stem, conv2 = _nodes(model, "Conv")[0], _nodes(model, "Conv")[-1]
    clip = _nodes(model, "Clip")[0]
    ox._set_attr(stem, "pads", [0, 0, 0, 0])
    ox._set_attr(conv2, "strides", [2, 2])
    ox.set_input_constant(model, clip.name, 2, np.float32(1e9))
    assert_differs(run_onnx(model, images), clean)

    assert ox.set_attributes(model, stem.name, {"padding": (1, 1, 1, 1), "kernel_size": (3, 3), "in_channels": 3}) == ["pads", "kernel_shape"]
    ox.set_attributes(model, conv2.name, {"strides": (1, 1), "dilation": (1, 1), "groups": 1})
    ox.set_attributes(model, clip.name, {"min": 0.0, "max": 6.0})
    assert_same(run_onnx(model, images), clean)
    with pytest.raises(ValueError):
        ox.set_attributes(model, stem.name, {"no_such_attribute": 1})


def test_constant_nodes_softmax_axis_and_pool_flags(torch_onnx):
    _, legacy = torch_onnx
    images = _images(4, 32, 32, nchw=True) * 20
    clean = run_onnx(legacy, images)
    model = _copy(legacy)
    clip = _nodes(model, "Clip")[0]
    assert ox.producer(model, clip.input[2]).op_type == "Constant"
    ox.set_constant(model, clip.input[2], np.float32(1e9))  # a ReLU6 that no longer clips
    assert_differs(run_onnx(model, images), clean)
    assert ox.set_attributes(model, clip.name, {"min": 0.0, "max": 6.0}) == ["input min", "input max"]
    assert_same(run_onnx(model, images), clean)
    assert ox.producer(model, clip.input[2]).op_type == "Constant"  # edited where it was

    softmax = ox.insert_after(model, "output", "Softmax", attrs={"axis": 0})
    wrong = run_onnx(model, images)
    ox.set_attributes(model, softmax, {"axis": 1})
    assert_differs(wrong, run_onnx(model, images))
    assert_same(run_onnx(model, images), _softmax(clean))

    pool = _nodes(model, "MaxPool")[0]
    with pytest.raises(ValueError):  # MaxPool has no count_include_pad; nothing is changed
        ox.set_attributes(model, pool.name, {"ceil_mode": True, "count_include_pad": True})
    assert ox._attr(pool, "ceil_mode") == 0
    assert ox.set_attributes(model, pool.name, {"ceil_mode": False, "count_include_pad": True}, strict=False) == ["ceil_mode"]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_average_pool_flags():
    from onnx import TensorProto, helper

    def pool(**attrs):
        node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], **attrs)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    images = _images(1, 2, 8, 8, seed=4)
    clean = run_onnx(pool(count_include_pad=1, ceil_mode=1), images)
    model = pool()
    assert_differs(run_onnx(model, images), clean)
    ox.set_attributes(model, "pool", {"count_include_pad": True, "ceil_mode": True, "pool_size": (3, 3), "padding": (1, 1, 1, 1)})
    assert_same(run_onnx(model, images), clean)


def test_zero_pad_node_undoes_double_padding(keras_onnx):
    images = _images(4, 32, 32)
    clean = run_onnx(keras_onnx, images)
    model = _copy(keras_onnx)
    stem = _nodes(model, "Conv")[0]
    name = ox.insert_after(model, stem.input[0], "Pad", constants=[np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)])
    assert_differs(run_onnx(model, images), clean)
    ox.zero_pad_node(model, name)
    assert_same(run_onnx(model, images), clean)


def test_resize_mode_and_coordinate_mapping():
    from onnx import TensorProto, helper, numpy_helper

    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 10, 10])], [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    images = _images(1, 2, 5, 5, seed=1)
    broken = run_onnx(model, images)
    clean = _copy(model)
    ox._set_attr(clean.graph.node[0], "mode", "linear")
    ox._set_attr(clean.graph.node[0], "coordinate_transformation_mode", "half_pixel")
    assert_differs(broken, run_onnx(clean, images))
    ox.set_attributes(model, "up", {"method": "linear", "coordinate_transformation_mode": "half_pixel", "rounding_method": "round_prefer_ceil"})
    assert_same(run_onnx(model, images), run_onnx(clean, images))


# ---------------------------------------------------------------- ONNX: graph structure


def test_missing_relu_inserted_and_extra_op_removed(keras_onnx):
    images = _images(4, 32, 32)
    clean = run_onnx(keras_onnx, images)
    model = _copy(keras_onnx)
    relu = _nodes(model, "Relu")[0]
    data = relu.input[0]
    ox.remove_node(model, relu.name)
    assert_differs(run_onnx(model, images), clean)
    ox.insert_after(model, data, "Relu")
    assert_same(run_onnx(model, images), clean)

    extra = ox.insert_after(model, "logits", "Sigmoid")  # an op on the graph output
    assert [o.name for o in model.graph.output] == ["logits"]
    assert_differs(run_onnx(model, images), clean)
    ox.remove_node(model, extra)
    assert_same(run_onnx(model, images), clean)
    assert [o.name for o in model.graph.output] == ["logits"]


def test_replace_op_restores_relu6(keras_onnx):
    images = _images(4, 32, 32) * 20  # large enough for the ReLU6 to clip
    clean = run_onnx(keras_onnx, images)
    model = _copy(keras_onnx)
    clip = _nodes(model, "Clip")[0]
    ox.replace_op(model, clip.name, "Relu", constants=[])
    assert_differs(run_onnx(model, images), clean)
    ox.replace_op(model, clip.name, "Clip", constants={"min": 0.0, "max": 6.0})
    assert_same(run_onnx(model, images), clean)
    inserted = ox.insert_after(model, clip.output[0], "Clip", constants={"max": 1.0})  # optional min left out
    assert list(ox.find_node(model, inserted).input)[1] == ""


# ---------------------------------------------------------------- ONNX: input transforms


def test_input_transforms_undo_input_faults(keras_onnx):
    images = _images(4, 32, 32)
    clean = run_onnx(keras_onnx, images)
    mean, std = np.array([0.4, 0.5, 0.6], np.float32), np.array([0.2, 0.25, 0.3], np.float32)
    faults = {
        "hw swap": ([("Transpose", {"perm": [0, 2, 1, 3]}, None)], [ox.InputTransform.permute((0, 2, 1, 3))]),
        "bgr": ([("Slice", None, [np.array([-1]), np.array([INT64_MIN]), np.array([3]), np.array([-1])])],
                [ox.InputTransform.channel_reverse(axis=3)]),
        "x255": ([("Mul", None, [np.float32(255)])], [ox.InputTransform.affine(1 / 255, 0.0, axis=3)]),
        "normalise": ([("Sub", None, [mean]), ("Div", None, [std])], [ox.InputTransform.affine(std, mean, axis=3)]),
    }
    for fault, (ops, repair) in faults.items():
        model = _copy(keras_onnx)
        for op, attrs, constants in reversed(ops):  # each insert lands right after the input
            ox.insert_after(model, "input", op, attrs=attrs, constants=[np.asarray(c) for c in constants or []])
        assert_differs(run_onnx(model, images), clean)
        ox.insert_input_transform(model, repair)
        assert_same(run_onnx(model, images), clean, rel=1e-4), fault
        assert [i.name for i in model.graph.input] == ["input"]


def test_reinterpret_compensates_reshape_instead_of_transpose(keras_onnx):
    images = _images(4, 32, 32)
    clean = run_onnx(keras_onnx, images)
    model = _copy(keras_onnx)
    transpose = _reader(model, "input")
    assert transpose.op_type == "Transpose"
    ox.replace_op(model, transpose.name, "Reshape", constants=[np.array([-1, 3, 32, 32], np.int64)])
    assert_differs(run_onnx(model, images), clean)
    ox.insert_input_transform(model, ox.InputTransform.reinterpret("NHWC", "NCHW"))
    assert_same(run_onnx(model, images), clean)
    declared = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert declared[1:] == [32, 32, 3]


def test_gather_restores_flatten_order(flatten_onnx):
    images = _images(4, 12, 12, seed=2)
    clean = run_onnx(flatten_onnx, images)
    model = _copy(flatten_onnx)
    to_nhwc = next(n for n in _nodes(model, "Transpose") if list(ox._attr(n, "perm")) == [0, 2, 3, 1])
    ox.remove_node(model, to_nhwc.name)  # the flatten now reads NCHW order
    assert_differs(run_onnx(model, images), clean)

    channels, height, width = 8, 5, 5
    h, w, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    indices = (c * height * width + h * width + w).reshape(-1)  # Keras feature k = (h, w, c) sits here in NCHW
    ox.insert_gather(model, _nodes(model, "MatMul")[0].name, 0, indices, axis=1)
    assert_same(run_onnx(model, images), clean)


# ---------------------------------------------------------------- TFLite


def test_tensor_array_reads_every_storage_type(tflite_models):
    reference = {op.op_index: tx.layer_parameters(tx.load_model(tflite_models["float"]), op.op_index)[0]
                 for op in tx.weight_ops(tx.load_model(tflite_models["float"]))}
    for kind in ("dynamic", "float16", "int8"):
        model = tx.load_model(tflite_models[kind])
        ops = tx.weight_ops(model)
        assert len(ops) == len(reference)
        for op, (index, want) in zip(ops, reference.items()):
            got = tx.layer_parameters(model, op.op_index)[0]
            tolerance = {"FLOAT32": 1e-7, "FLOAT16": 1e-3 * np.abs(want).max()}.get(op.weight_type, np.abs(want).max() / 100)
            assert np.abs(got - want).max() <= tolerance, (kind, op.op, op.weight_type)
    types = {op.weight_type for op in tx.weight_ops(tx.load_model(tflite_models["dynamic"]))}
    assert types == {"FLOAT32", "INT8"}  # small weights stay float under dynamic range


def test_dynamic_range_weights_restored_to_float(tflite_models):
    images = _images(3, 32, 32)
    reference_model = tx.load_model(tflite_models["float"])
    want = run_tflite(tflite_models["float"], images)
    model = tx.load_model(tflite_models["dynamic"])
    assert_differs(run_tflite(model, images), want)
    ops = tx.weight_ops(model)
    growth = sum(op.float_cost_bytes for op in ops)
    for op in ops:
        if op.quantised:  # the stored weight itself, in TFLite layout
            weight = tx.tensor_array(reference_model, int(reference_model.subgraphs[0].operators[op.op_index].inputs[1]))
            assert tx.set_float_tensor(model, op.weight_tensor, weight) == op.weight_tensor
    tx.check_model(model)
    assert not any(op.quantised for op in tx.weight_ops(model))
    assert_same(run_tflite(model, images), want)
    assert growth > 0
    assert [m.name for m in model.metadata] == [m.name for m in tx.load_model(tflite_models["dynamic"]).metadata]
    assert all(model.buffers[m.buffer].data is not None for m in model.metadata)
    size = len(tx.model_bytes(model))
    assert abs(size - (len(tflite_models["dynamic"]) + growth)) < 2048


def test_float16_weights_restored_to_float(tflite_models):
    images = _images(3, 32, 32)
    reference_model = tx.load_model(tflite_models["float"])
    want = run_tflite(tflite_models["float"], images)
    model = tx.load_model(tflite_models["float16"])
    pairs = list(zip(tx.weight_ops(model), tx.weight_ops(reference_model)))  # same layers, other op indices
    for op, reference in pairs[1:]:
        assert op.weight_type == "FLOAT16"
        tx.set_layer_parameters(model, op.op_index, *tx.layer_parameters(reference_model, reference.op_index))
    first, reference = pairs[0]  # through the DEQUANTIZE output the op reads: all its readers are rewired
    read = int(model.subgraphs[0].operators[first.op_index].inputs[1])
    weight = tx.tensor_array(reference_model, int(reference_model.subgraphs[0].operators[reference.op_index].inputs[1]))
    assert tx.set_float_tensor(model, read, weight) != read
    bias = tx.tensor_array(reference_model, int(reference_model.subgraphs[0].operators[reference.op_index].inputs[2]))
    tx.set_op_input_float(model, first.op_index, 2, bias)
    tx.check_model(model)
    assert_same(run_tflite(model, images), want)
    removed = tx.remove_dead_ops(model)
    assert removed == 9 and "DEQUANTIZE" not in {tx.op_name(model, i) for i in range(len(model.subgraphs[0].operators))}
    assert_same(run_tflite(model, images), want)
    assert len(tx.model_bytes(model)) < len(tflite_models["float16"]) + len(tflite_models["float"])


def test_layouts_match_keras_and_broken_weights_restore(tflite_models, keras_file):
    from safeconvert.runners.tf_runner import load_keras_model

    keras_model = load_keras_model(keras_file)
    images = _images(3, 32, 32)
    clean = run_tflite(tflite_models["float"], images)
    model = tx.load_model(tflite_models["float"])
    conv2 = tx.find_op(model, "small_cnn_1/conv2_1/Relu;small_cnn_1/conv2_1/convolution")
    kernel, bias = keras_model.get_layer("conv2").get_weights()
    dense_kernel, _ = keras_model.get_layer("logits").get_weights()
    oihw = kernel.transpose(3, 2, 0, 1)  # Keras HWIO -> OIHW
    np.testing.assert_array_equal(tx.layer_parameters(model, conv2)[0], oihw)
    dense = next(op.op_index for op in tx.weight_ops(model) if op.op == "FULLY_CONNECTED")
    np.testing.assert_array_equal(tx.layer_parameters(model, dense)[0], dense_kernel.T)

    saved = {op.op_index: tx.layer_parameters(model, op.op_index) for op in tx.weight_ops(model)}
    for index, (weight, _) in saved.items():
        tx.set_layer_parameters(model, index, np.zeros_like(weight))
    assert_differs(run_tflite(model, images), clean)
    for index, (weight, stored_bias) in saved.items():
        tx.set_layer_parameters(model, index, weight, stored_bias)
    tx.set_layer_parameters(model, conv2, oihw, bias)
    assert_same(run_tflite(model, images), clean)


def test_builtin_options_restore_padding_activation_stride(tflite_models):
    images = _images(3, 32, 32)
    clean = run_tflite(tflite_models["float"], images)
    model = tx.load_model(tflite_models["float"])
    ops = {op.op: op.op_index for op in tx.weight_ops(model)}
    dw, stem = ops["DEPTHWISE_CONV_2D"], tx.weight_ops(model)[0].op_index
    assert tx.builtin_options(model, dw)["padding"] == "SAME"
    tx.set_builtin_options(model, dw, padding="VALID", stride_w=2)
    tx.set_builtin_options(model, stem, fused_activation_function="NONE")
    assert_differs(run_tflite(model, images), clean)

    assert tx.set_attributes(model, dw, {"padding": (1, 1, 1, 1), "strides": (1, 1), "dilation": (1, 1), "groups": 16}) == {
        "stride_h": 1, "stride_w": 1, "dilation_h_factor": 1, "dilation_w_factor": 1, "padding": "SAME"}
    tx.set_builtin_options(model, stem, fused_activation_function="RELU6")
    assert_same(run_tflite(model, images), clean)
    with pytest.raises(ValueError):
        tx.set_attributes(model, dw, {"padding": (2, 2, 2, 2)})


def test_keep_op_float_in_full_integer_model(tflite_models):
    from ai_edge_litert.interpreter import Interpreter

    images = _images(3, 32, 32)
    reference_model = tx.load_model(tflite_models["float"])
    model = tx.load_model(tflite_models["int8"])
    ops = tx.weight_ops(model)
    assert all(op.activation_type == "INT8" and op.weight_type == "INT8" for op in ops)
    fc = ops[-1]
    weight, bias = tx.layer_parameters(reference_model, tx.weight_ops(reference_model)[-1].op_index)
    assert bias is None  # Keras' zero bias is dropped: keep_op_float adds the input
    bias = np.linspace(-0.1, 0.1, weight.shape[0]).astype(np.float32)
    with pytest.raises(ValueError):
        tx.set_layer_parameters(model, fc.op_index, weight, bias)
    assert tx.keep_op_float(model, fc.op_index, weight, bias) == fc.op_index + 1
    conv2 = tx.find_op(model, ops[-2].output)  # unmoved: it comes before the FC
    tx.keep_op_float(model, conv2)  # its own int8 weights, dequantised; the FC moves down by two
    new_index = tx.find_op(model, fc.output + "/float")
    tx.check_model(model)
    kept = {op.output: op for op in tx.weight_ops(model)}
    for op in (fc, ops[-2]):
        assert kept[op.output + "/float"].weight_type == "FLOAT32" and kept[op.output + "/float"].activation_type == "FLOAT32"
    assert all(op.weight_type == "INT8" for op in kept.values() if not op.output.endswith("/float"))

    # The float FC must compute exactly: requantised float(dequantised int8 input) @ W.T + b.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preserve_all_tensors is "for debugging": that is what this is
        interpreter = Interpreter(model_content=tx.model_bytes(model), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    sg = model.subgraphs[0]
    fc_op = sg.operators[new_index]
    source = sg.operators[new_index - 1].inputs[0]
    target = sg.operators[new_index + 1].outputs[0]
    quant = {d["index"]: d["quantization"] for d in interpreter.get_tensor_details()}
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[np.newaxis])
        interpreter.invoke()
        s_in, z_in = quant[int(source)]
        s_out, z_out = quant[int(target)]
        x = (interpreter.get_tensor(int(source)).astype(np.float32) - z_in) * s_in
        expected = np.clip(np.round((x @ weight.T + bias) / s_out) + z_out, -128, 127)
        got = interpreter.get_tensor(int(target)).astype(np.float32)
        assert np.abs(got - expected).max() <= 1, "float FC disagrees with its numpy reference"
        assert fc_op.outputs[0] != target


def test_convert_with_float_layers_keeps_named_layers_float(tflite_models, keras_file):
    float_model = tx.load_model(tflite_models["float"])
    names = [op.output for op in tx.weight_ops(float_model) if op.op == "CONV_2D"][-1:]
    content = tx.convert_with_float_layers(keras_file, _images(8, 32, 32, seed=5), names)
    model = tx.load_model(content)
    ops = tx.weight_ops(model)
    floats = [op for op in ops if op.weight_type == "FLOAT32"]
    assert [op.output for op in floats] == names and floats[0].activation_type == "FLOAT32"
    assert all(op.weight_type == "INT8" for op in ops if op.output not in names)
    tx.check_model(model)


# ---------------------------------------------------------------- PyTorch through ONNX


def test_torchscript_round_trip_and_repair(torch_onnx, workdir):
    import onnx

    from safeconvert.repair import torch_roundtrip as rt
    from safeconvert.runners import load_runner

    _, legacy = torch_onnx
    images = _images(3, 32, 32, nchw=True)
    onnx.save(legacy, str(workdir / "clean.onnx"))
    clean_pt = rt.onnx_to_torchscript(workdir / "clean.onnx", workdir / "clean.pt")
    want = load_runner(clean_pt).run(images)
    assert_same(want, run_onnx(legacy, images))
    exported = rt.torchscript_to_onnx(clean_pt, workdir / "exported.onnx")
    assert_same(run_onnx(onnx.load(str(exported)), images), want)

    broken = _copy(legacy)
    conv = next(n for n in _nodes(broken, "Conv") if ox.constant_value(broken, n.input[1]).shape == (32, 24, 3, 3))
    weight = ox.constant_value(broken, conv.input[1])
    ox.set_input_constant(broken, conv.name, 1, -weight)
    onnx.save(broken, str(workdir / "broken.onnx"))
    broken_pt = rt.onnx_to_torchscript(workdir / "broken.onnx", workdir / "broken.pt")
    assert_differs(load_runner(broken_pt).run(images), want)

    def fix(model) -> None:
        target = next(n for n in _nodes(model, "Conv") if ox.constant_value(model, n.input[1]).shape == weight.shape)
        ox.set_layer_parameters(model, target.name, weight)

    fixed = rt.repair_torchscript(broken_pt, workdir / "fixed.pt", fix, workdir / "roundtrip")
    assert_same(load_runner(fixed).run(images), want)
