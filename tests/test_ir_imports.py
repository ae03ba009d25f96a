"""Import paths of the TVM bridge beyond the plain float models of test_ir.py.

- Keras Flatten (a reshape whose shape is computed in the graph) through the Keras reference path and
  through tf2onnx;
- torch.export archives saved with a dynamic batch, against the same model's ONNX exports;
- quantised TFLite (dynamic-range int8, float16, full-integer int8) and tf2onnx's QDQ ONNX of an int8
  TFLite, imported as float models that carry their quantised weights.
All models are built here from the seeded small CNNs; each side is imported once per session.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OUTPUT_TOLERANCE = 1e-4  # normalised Relax module vs the format's own runtime
WEIGHT_TOLERANCE = 1e-5  # effective parameters of two correct conversions
TAP_TOLERANCE = 1e-5  # activations of two correct float conversions
INT8_STEP = 1 / 254  # symmetric int8: |error| <= scale / 2 = max|w| / 254
FLOAT16_STEP = 2.0**-11  # float16 rounding, relative


def batch_nhwc(count: int = 2) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (count, 32, 32, 3)).astype(np.float32)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    from safeconvert.ir import relative_error

    return relative_error(a, b)


def tap_errors(source, target, alignment) -> list[float]:
    batch = batch_nhwc(2) if source.input_layout == "NHWC" else batch_nhwc(2).transpose(0, 3, 1, 2).copy()
    a = source.run_taps(batch, [p.source.index for p in alignment.pairs])
    b = target.run_taps(batch, [p.target.index for p in alignment.pairs])
    return [rel(a[p.source.index], b[p.target.index]) for p in alignment.pairs]


def weight_errors(alignment) -> dict[int, float]:
    """Relative weight error of each aligned conv/dense pair, keyed by source layer index."""
    from safeconvert.ir import diff_pair

    return {p.source.index: diff_pair(p).params["weight"] for p in alignment.pairs if "weight" in p.source.params}


def assert_clean(alignment) -> None:
    assert alignment.source_only == [] and alignment.target_only == []
    assert alignment.pairs and all(p.exact for p in alignment.pairs)


# ---------------------------------------------------------------- Keras Flatten


@pytest.fixture(scope="session")
def flatten(tmp_path_factory):
    from safeconvert.formats import Format
    from safeconvert.ir import load_ir
    from safeconvert.ir.keras_reference import keras_to_tflite
    from safeconvert.models.small import keras_small_flatten_cnn
    from safeconvert.wrappers.base import ConversionOptions
    from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter

    root = tmp_path_factory.mktemp("flatten")
    model = keras_small_flatten_cnn()
    model.save(root / "flatten.keras")
    (root / "flatten.tflite").write_bytes(keras_to_tflite(model))
    Tf2OnnxConverter().convert(root / "flatten.keras", Format.KERAS, root / "flatten.onnx", ConversionOptions())
    return {"keras": model, "root": root, "reference": load_ir(model), "onnx": load_ir(root / "flatten.onnx")}


def test_flatten_keras_reference_runs_like_litert(flatten):
    from safeconvert.runners import load_runner

    reference = flatten["reference"]
    reshape = next(layer for layer in reference.layers if layer.kind == "reshape")
    assert reshape.out_shape == (1, 216) and reshape.role == "compute"
    batch = batch_nhwc(3)
    assert rel(load_runner(flatten["root"] / "flatten.tflite").run(batch), reference.run(batch)) < OUTPUT_TOLERANCE


def test_flatten_tf2onnx_aligns_with_keras_reference(flatten):
    from safeconvert.ir import align_layers, diff_alignment
    from safeconvert.runners import load_runner

    target = flatten["onnx"]
    batch = batch_nhwc(3)
    assert rel(load_runner(flatten["root"] / "flatten.onnx").run(batch), target.run(batch)) < OUTPUT_TOLERANCE
    alignment = align_layers(flatten["reference"].layers, target.layers)
    assert_clean(alignment)
    assert [p.source.kind for p in alignment.pairs] == ["conv2d", "clip", "avg_pool2d", "conv2d", "relu", "max_pool2d", "reshape", "dense"]
    assert diff_alignment(alignment, WEIGHT_TOLERANCE) == []
    assert max(tap_errors(flatten["reference"], target, alignment)) < TAP_TOLERANCE


def test_keras_reference_conversion_matches_from_keras_model(flatten):
    """The traced-and-frozen conversion computes exactly what TFLiteConverter.from_keras_model gives."""
    import contextlib
    import io

    import tensorflow as tf

    from safeconvert.ir.keras_reference import keras_to_tflite
    from safeconvert.runners import load_runner

    converter = tf.lite.TFLiteConverter.from_keras_model(flatten["keras"])
    with contextlib.redirect_stdout(io.StringIO()):
        documented = converter.convert()
    (flatten["root"] / "documented.tflite").write_bytes(documented)
    (flatten["root"] / "fast.tflite").write_bytes(keras_to_tflite(flatten["keras"]))
    batch = batch_nhwc(3)
    expected = load_runner(flatten["root"] / "documented.tflite").run(batch)
    assert np.array_equal(expected, load_runner(flatten["root"] / "fast.tflite").run(batch))


# ---------------------------------------------------------------- torch.export with a dynamic batch


@pytest.fixture(scope="session")
def torch_dynamic(tmp_path_factory):
    """Per small torch model: its dynamic-batch .pt2, imported, and the directory for its ONNX exports."""
    from safeconvert.ir import load_ir
    from safeconvert.models.files import save_torch_export
    from safeconvert.models.small import torch_small_cnn, torch_small_pool_cnn

    root = tmp_path_factory.mktemp("torch_dynamic")
    built = {}
    for name, factory in (("pool", torch_small_pool_cnn), ("cnn", torch_small_cnn)):
        path = save_torch_export(factory(), root / f"{name}.pt2", (1, 3, 32, 32))  # dynamic batch by default
        built[name] = {"pt2": path, "ir": load_ir(path), "model": factory()}
    return {"root": root, **built}


def test_dynamic_batch_torch_export_imports_with_batch_one(torch_dynamic):
    import torch

    for name in ("pool", "cnn"):
        model = torch_dynamic[name]["ir"]
        assert model.input_shape == (1, 3, 32, 32) and model.input_layout == "NCHW"
        batch = batch_nhwc(3).transpose(0, 3, 1, 2).copy()
        with torch.no_grad():
            expected = torch_dynamic[name]["model"](torch.from_numpy(batch)).numpy()
        assert rel(expected, model.run(batch)) < OUTPUT_TOLERANCE
        first = model.compute_layers()[0]  # origins are the fx nodes and their module paths
        assert [(o.op_type.split(".")[0], o.scope) for o in first.origins] == [
            ("convolution", "0"),
            ("_native_batch_norm_legit_no_training", "1"),
        ]


@pytest.mark.parametrize("name", ["pool", "cnn"])
@pytest.mark.parametrize("legacy", [False, True], ids=["dynamo", "opset17-torchscript"])
def test_dynamic_batch_torch_export_aligns_with_its_onnx_export(name, legacy, torch_dynamic):
    import onnx

    from safeconvert.formats import Format
    from safeconvert.ir import align_layers, diff_alignment, load_ir
    from safeconvert.wrappers.base import ConversionOptions
    from safeconvert.wrappers.torch_onnx_wrapper import TorchOnnxConverter

    options = ConversionOptions(opset=17, torch_dynamo=False) if legacy else ConversionOptions()
    out = torch_dynamic["root"] / f"{name}_{'legacy' if legacy else 'dynamo'}.onnx"
    TorchOnnxConverter().convert(torch_dynamic[name]["pt2"], Format.TORCH_EXPORT, out, options)
    if legacy:
        assert "BatchNormalization" in {n.op_type for n in onnx.load(str(out)).graph.node}
    source, target = torch_dynamic[name]["ir"], load_ir(out)
    alignment = align_layers(source.layers, target.layers)
    assert_clean(alignment)
    assert diff_alignment(alignment, WEIGHT_TOLERANCE) == []
    assert max(tap_errors(source, target, alignment)) < TAP_TOLERANCE


# ---------------------------------------------------------------- quantised targets


@pytest.fixture(scope="session")
def quantised(tmp_path_factory, small_keras_file):
    """The small Keras CNN's float reference and its quantised TFLite (and QDQ ONNX) conversions."""
    from safeconvert.formats import Format
    from safeconvert.ir import load_ir
    from safeconvert.wrappers.base import ConversionOptions
    from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter
    from safeconvert.wrappers.tflite_wrapper import TfliteConverter

    root = tmp_path_factory.mktemp("quantised")
    recipes = {
        "dynamic_range": ConversionOptions(tflite_optimizations=["DEFAULT"]),
        "float16": ConversionOptions(tflite_optimizations=["DEFAULT"], tflite_supported_types=["float16"]),
        "int8": ConversionOptions(tflite_int8=True, representative_data=batch_nhwc(8)),
    }
    paths = {}
    for name, options in recipes.items():
        paths[name] = root / f"{name}.tflite"
        TfliteConverter().convert(small_keras_file, Format.KERAS, paths[name], options)
    paths["int8_onnx"] = root / "int8.onnx"
    Tf2OnnxConverter().convert(paths["int8"], Format.TFLITE, paths["int8_onnx"], ConversionOptions())
    return {"paths": paths, "reference": load_ir(small_keras_file), "ir": {}}


def quantised_ir(quantised, name: str):
    from safeconvert.ir import load_ir

    if name not in quantised["ir"]:
        quantised["ir"][name] = load_ir(quantised["paths"][name])
    return quantised["ir"][name]


def test_dynamic_range_tflite_shows_its_int8_weights(quantised):
    from safeconvert.ir import align_layers, diff_alignment
    from safeconvert.runners import load_runner

    target = quantised_ir(quantised, "dynamic_range")
    assert "int8 weights" in target.imported.quantisation
    alignment = align_layers(quantised["reference"].layers, target.layers)
    assert_clean(alignment)
    errors = weight_errors(alignment)
    # TFLite quantises only weights of at least 1024 elements (here the 32x24x3x3 conv); the rest stay float.
    big = {p.source.index for p in alignment.pairs if "weight" in p.source.params and p.source.params["weight"].size >= 1024}
    assert big and {i for i, e in errors.items() if e > WEIGHT_TOLERANCE} == big
    assert all(0.3 * INT8_STEP < errors[i] <= 1.001 * INT8_STEP for i in big)
    assert {d.pair.source.index for d in diff_alignment(alignment, WEIGHT_TOLERANCE)} == big
    # Hybrid ops quantise activations on the fly, which the float import does not: close, not equal.
    batch = batch_nhwc(3)
    assert rel(load_runner(quantised["paths"]["dynamic_range"]).run(batch), target.run(batch)) < 1e-2


def test_float16_tflite_weights_are_float_constants_with_fp16_rounding(quantised):
    from safeconvert.ir import align_layers
    from safeconvert.runners import load_runner

    target = quantised_ir(quantised, "float16")
    assert target.imported.quantisation == "dequantised at import: float16 weights"
    alignment = align_layers(quantised["reference"].layers, target.layers)
    assert_clean(alignment)
    errors = weight_errors(alignment)
    assert len(errors) == 5 and all(0 < e <= FLOAT16_STEP for e in errors.values())
    batch = batch_nhwc(3)
    assert rel(load_runner(quantised["paths"]["float16"]).run(batch), target.run(batch)) < OUTPUT_TOLERANCE


def test_full_integer_tflite_imports_as_float_with_int8_weights(quantised):
    from safeconvert.ir import align_layers
    from safeconvert.runners import load_runner

    target = quantised_ir(quantised, "int8")
    assert "int8 activations" in target.imported.quantisation and "not modelled" in target.imported.quantisation
    alignment = align_layers(quantised["reference"].layers, target.layers)
    assert_clean(alignment)
    errors = weight_errors(alignment)
    assert len(errors) == 5 and all(0.3 * INT8_STEP < e <= 1.001 * INT8_STEP for e in errors.values())
    taps = tap_errors(quantised["reference"], target, alignment)
    assert len(taps) == len(alignment.pairs) and max(taps) < 0.05  # weight quantisation only
    batch = batch_nhwc(3)  # LiteRT also rounds activations to int8: a few percent apart
    assert rel(load_runner(quantised["paths"]["int8"]).run(batch), target.run(batch)) < 0.1


def test_qdq_onnx_of_int8_tflite_folds_dequantised_weights(quantised):
    from safeconvert.ir import align_layers, diff_alignment
    from safeconvert.ir.rebuild import flat_bindings

    target = quantised_ir(quantised, "int8_onnx")
    ops = {getattr(b.value.op, "name", "") for b in flat_bindings(target.module["main"]) if hasattr(b.value, "op")}
    assert not ops & {"relax.quantize", "relax.dequantize"}
    from_source = align_layers(quantised["reference"].layers, target.layers)
    assert_clean(from_source)
    errors = weight_errors(from_source)
    assert len(errors) == 5 and all(0.3 * INT8_STEP < e <= 1.001 * INT8_STEP for e in errors.values())
    # The same int8 weights as the TFLite it was converted from: nothing differs, activations agree.
    tflite = quantised_ir(quantised, "int8")
    from_tflite = align_layers(tflite.layers, target.layers)
    assert_clean(from_tflite)
    assert diff_alignment(from_tflite, WEIGHT_TOLERANCE) == []
    assert max(tap_errors(tflite, target, from_tflite)) < TAP_TOLERANCE


# ---------------------------------------------------------------- MobileNetV2 files (slow)


@pytest.mark.slow
def test_mobilenet_files_keras_reference_and_dynamic_pt2_align(mobilenet_files):
    from safeconvert.ir import align_layers, diff_alignment, load_ir

    reference, torch_ir = load_ir(mobilenet_files["keras"]), load_ir(mobilenet_files["pt2"])
    alignment = align_layers(reference.layers, torch_ir.layers)
    assert len(alignment.pairs) == 99
    assert_clean(alignment)
    assert diff_alignment(alignment, WEIGHT_TOLERANCE) == []


# ---------------------------------------------------------------- ONNX constants computed in the graph


def sorted_squeeze_onnx(path: Path) -> Path:
    """Conv -> ReduceMean -> Squeeze -> MatMul whose squeeze axes are sorted at run time (TopK on an
    initializer), as onnx2torch round trips export them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([2], np.int64), "k"),
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 10)).astype(np.float32), "fc_w"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("ReduceMean", ["relu"], ["mean"], name="mean", axes=[2, 3], keepdims=1),
        helper.make_node("TopK", ["axes", "k"], ["sorted", "order"], name="sort_axes", axis=-1),
        helper.make_node("Squeeze", ["mean", "sorted"], ["squeezed"], name="squeeze"),
        helper.make_node("MatMul", ["squeezed", "fc_w"], ["output"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "sorted_squeeze", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the installed ONNX Runtime reads
    onnx.save(model, str(path))
    return path


def test_onnx_nodes_computed_from_constants_are_folded(tmp_path):
    from safeconvert.ir import load_ir
    from safeconvert.runners import load_runner

    path = sorted_squeeze_onnx(tmp_path / "sorted_squeeze.onnx")
    model = load_ir(path)
    assert [layer.kind for layer in model.compute_layers()] == ["conv2d", "relu", "mean", "dense"]
    batch = np.random.default_rng(2).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    assert rel(load_runner(path).run(batch), model.run(batch)) < OUTPUT_TOLERANCE
