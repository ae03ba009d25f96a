"""Tests of the TVM bridge (safeconvert.ir): import, normalise, layers, alignment, taps.

Models are built here: a seeded small Keras CNN (exported to ONNX with tf2onnx and to float TFLite) and,
marked slow, the real MobileNetV2 (Keras twin -> ONNX / TFLite, torch -> torch.export). Faults are injected
into copies of the ONNX export with the onnx package, and each must show up exactly where it was made.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OUTPUT_TOLERANCE = 1e-4  # normalised Relax module vs the format's own runtime
WEIGHT_TOLERANCE = 1e-5  # effective parameters of two correct conversions
CALIB = Path(__file__).resolve().parents[1] / "safeconvert" / "data" / "calib"


# ---------------------------------------------------------------- model builders


def build_small_keras():
    """A seeded CNN covering what converters treat differently: explicit zero pad, conv+BN, depthwise+BN,
    ReLU6, residual add, max/avg pool, conv with fused ReLU, global average pool, dense, softmax."""
    from safeconvert.runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="input")
    x = layers.ZeroPadding2D(1, name="pad0")(inputs)
    x = layers.Conv2D(8, 3, 2, padding="valid", name="conv0")(x)
    x = layers.BatchNormalization(name="bn0")(x)
    x = layers.ReLU(6.0, name="relu0")(x)
    y = layers.DepthwiseConv2D(3, 1, padding="same", use_bias=False, name="dw1")(x)
    y = layers.BatchNormalization(name="bn1")(y)
    y = layers.ReLU(6.0, name="relu1")(y)
    y = layers.Conv2D(8, 1, use_bias=False, name="pw1")(y)
    y = layers.BatchNormalization(name="bn2")(y)
    x = layers.Add(name="add1")([x, y])
    x = layers.MaxPooling2D(2, name="maxpool")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.AveragePooling2D(2, name="avgpool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(10, name="fc")(x)
    outputs = layers.Softmax(name="softmax")(x)
    model = keras.Model(inputs, outputs, name="small_cnn")
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial BatchNorm statistics and biases, so folding matters
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape), rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)]
            )
        elif isinstance(layer, (layers.Conv2D, layers.Dense)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
    return model


def keras_to_onnx(model, path: Path, size: int) -> Path:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))
    return path


def calibration_batch(count: int, size: int = 224, layout: str = "NHWC") -> np.ndarray:
    """Real photos, resized and ImageNet-normalised (what MobileNetV2 expects)."""
    from PIL import Image

    files = sorted(p for p in CALIB.glob("*.jpg"))[:count]
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    images = []
    for file in files:
        image = Image.open(file).convert("RGB").resize((size, size), Image.BILINEAR)
        images.append((np.asarray(image, np.float32) / 255.0 - mean) / std)
    batch = np.stack(images).astype(np.float32)
    return batch.transpose(0, 3, 1, 2).copy() if layout == "NCHW" else batch


def small_batch(count: int = 2) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (count, 32, 32, 3)).astype(np.float32)


def run_onnxruntime(path: Path, batch: np.ndarray) -> np.ndarray:
    from safeconvert.runners import load_runner

    return load_runner(path).run(batch)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    from safeconvert.ir import relative_error

    return relative_error(a, b)


# ---------------------------------------------------------------- fixtures: small CNN


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    from safeconvert.ir.keras_reference import keras_to_tflite

    root = tmp_path_factory.mktemp("small")
    model = build_small_keras()
    onnx_path = keras_to_onnx(model, root / "small.onnx", 32)
    tflite_path = root / "small.tflite"
    tflite_path.write_bytes(keras_to_tflite(model))
    return {"keras": model, "onnx": onnx_path, "tflite": tflite_path, "root": root}


@pytest.fixture(scope="session")
def small_reference(small):
    """The Keras model's reference IR (through unoptimised float TFLite)."""
    from safeconvert.ir import load_ir

    return load_ir(small["keras"])


@pytest.fixture(scope="session")
def small_onnx_ir(small):
    from safeconvert.ir import load_ir

    return load_ir(small["onnx"])


@pytest.fixture(scope="session")
def small_tflite_ir(small):
    from safeconvert.ir import load_ir

    return load_ir(small["tflite"])


# ---------------------------------------------------------------- small CNN: import, normalise, layers


def test_facade_is_lazy():
    import subprocess
    import sys

    code = "import sys, safeconvert.ir as ir; assert 'tvm' not in sys.modules; ir.Layer; assert 'tvm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_small_onnx_normalised_matches_onnxruntime(small, small_onnx_ir):
    batch = small_batch(3)
    expected = run_onnxruntime(small["onnx"], batch)
    assert rel(expected, small_onnx_ir.run(batch)) < OUTPUT_TOLERANCE


def test_small_tflite_normalised_matches_litert(small, small_tflite_ir):
    from safeconvert.runners import load_runner

    batch = small_batch(3)
    expected = load_runner(small["tflite"]).run(batch)
    assert rel(expected, small_tflite_ir.run(batch)) < OUTPUT_TOLERANCE


def test_normalised_modules_are_nchw_without_opaque_kernels(small_onnx_ir, small_tflite_ir):
    from safeconvert.ir.rebuild import flat_bindings

    for model in (small_onnx_ir, small_tflite_ir):
        ops = [getattr(b.value.op, "name", "") for b in flat_bindings(model.module["main"]) if hasattr(b.value, "op")]
        assert "relax.call_tir" not in ops  # Clip/Pad emitted as visible relax ops
        assert ops.count("relax.permute_dims") == 1  # only the NHWC input -> NCHW; clip transposes cancelled
        for layer in model.layers:
            if layer.kind == "conv2d":
                assert layer.in_shape[1] == layer.attrs["in_channels"]  # NCHW activations, OIHW kernels


def test_small_onnx_and_tflite_layers_align_with_equal_effective_weights(small_onnx_ir, small_tflite_ir):
    from safeconvert.ir import align_layers, diff_alignment, diff_pair

    alignment = align_layers(small_tflite_ir.layers, small_onnx_ir.layers)
    assert alignment.source_only == [] and alignment.target_only == []
    assert all(pair.exact for pair in alignment.pairs)
    assert [p.source.kind for p in alignment.pairs] == [
        "conv2d", "clip", "conv2d", "clip", "conv2d", "add", "max_pool2d", "conv2d", "relu", "avg_pool2d", "mean", "dense", "softmax",
    ]  # fmt: skip
    assert diff_alignment(alignment, WEIGHT_TOLERANCE) == []
    worst = max(err for pair in alignment.pairs for err in diff_pair(pair).params.values())
    assert worst < WEIGHT_TOLERANCE
    # The converters disagree on form, not substance: TFLite keeps the zero pad, tf2onnx moves it into
    # the conv; tf2onnx keeps depthwise BatchNorm as Mul+Add, TFLite pre-scales the weights.
    first = alignment.pairs[0]
    assert "pad" in first.source.absorbed and "pad" not in first.target.absorbed
    assert first.source.attrs["padding"] == first.target.attrs["padding"] == (1, 1, 1, 1)
    depthwise = alignment.pairs[2]
    assert depthwise.target.attrs["depthwise"] and depthwise.target.absorbed == ("multiply", "add")


def test_layers_keep_their_origins(small_onnx_ir, small_tflite_ir):
    onnx_conv3 = next(l for l in small_onnx_ir.layers if l.kind == "conv2d" and l.weight_shape == (16, 8, 3, 3))
    assert any(o.op_type == "Conv" and "conv3" in o.name for o in onnx_conv3.origins)
    tflite_conv3 = next(l for l in small_tflite_ir.layers if l.kind == "conv2d" and l.weight_shape == (16, 8, 3, 3))
    assert any(o.op_type == "CONV_2D" and "conv3" in o.name for o in tflite_conv3.origins)
    onnx_bn = next(l for l in small_onnx_ir.layers if l.kind == "conv2d" and l.attrs["depthwise"])
    assert {o.op_type for o in onnx_bn.origins} >= {"Conv", "Mul", "Add"}  # absorbed BN nodes map back too


def test_keras_reference_parameters_match_keras_weights(small, small_reference, small_onnx_ir):
    from safeconvert.ir import check_keras_parameters

    check = check_keras_parameters(small["keras"], small_reference.layers)
    assert check.ok, check.mismatches
    assert check.compared == 5 and check.largest_error < WEIGHT_TOLERANCE
    assert check_keras_parameters(small["keras"], small_onnx_ir.layers).ok


def test_savedmodel_goes_through_the_reference_path(small, small_onnx_ir):
    import contextlib
    import io

    from safeconvert.formats import Format
    from safeconvert.ir import align_layers, diff_alignment, load_ir

    directory = small["root"] / "saved_model"
    with contextlib.redirect_stdout(io.StringIO()):
        small["keras"].export(str(directory))
    model = load_ir(directory)
    assert model.format is Format.SAVEDMODEL
    alignment = align_layers(model.layers, small_onnx_ir.layers)
    assert alignment.clean and diff_alignment(alignment, WEIGHT_TOLERANCE) == []


# ---------------------------------------------------------------- fault injection (small CNN)


def _node(model, op_type: str, contains: str):
    return next(n for n in model.graph.node if n.op_type == op_type and contains in n.name)


def _replace_initializer(model, node, position: int, transform) -> None:
    """Give `node` its own modified copy of input `position` (initializers can be shared)."""
    from onnx import numpy_helper

    source = next(t for t in model.graph.initializer if t.name == node.input[position])
    values = transform(numpy_helper.to_array(source).copy())
    name = f"{source.name}__faulty"
    model.graph.initializer.append(numpy_helper.from_array(values.astype(numpy_helper.to_array(source).dtype), name))
    node.input[position] = name


def _remove_node(model, node) -> None:
    for other in model.graph.node:
        for i, name in enumerate(other.input):
            if name == node.output[0]:
                other.input[i] = node.input[0]
    model.graph.node.remove(node)


def inject(path: Path, fault: str, out: Path) -> Path:
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    if fault == "weight":
        conv = _node(model, "Conv", "conv3")
        _replace_initializer(model, conv, 1, lambda w: w + 0.05 * np.sign(w) * np.abs(w).max())
    elif fault == "pads":
        conv = _node(model, "Conv", "dw1")
        for attr in conv.attribute:
            if attr.name == "pads":
                conv.attribute.remove(attr)
                break
        conv.attribute.append(helper.make_attribute("pads", [0, 0, 2, 2]))
    elif fault == "bn_constant":
        add = _node(model, "Add", "bn1")
        _replace_initializer(model, add, 1, lambda c: c + np.where(np.arange(c.size).reshape(c.shape) == 3, 0.5, 0.0))
    elif fault == "remove_relu":
        _remove_node(model, _node(model, "Relu", "conv3"))
    elif fault == "remove_clip":
        _remove_node(model, _node(model, "Clip", "relu1"))
    else:
        raise ValueError(fault)
    onnx.save(model, str(out))
    return out


# fault -> (kind and weight shape of the source layer where it must show, what must differ)
FAULTS = {
    "weight": (("conv2d", (16, 8, 3, 3)), "param:weight"),
    "pads": (("conv2d", (8, 1, 3, 3)), "attr:padding"),
    "bn_constant": (("conv2d", (8, 1, 3, 3)), "param:bias"),
    "remove_relu": (("relu", None), "source_only"),
    "remove_clip": (("clip", None), "source_only"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_injected_fault_shows_exactly_at_its_layer(fault, small, small_reference, tmp_path):
    from safeconvert.ir import align_layers, diff_alignment, first_divergence, load_ir

    faulty = load_ir(inject(small["onnx"], fault, tmp_path / f"{fault}.onnx"))
    alignment = align_layers(small_reference.layers, faulty.layers)
    (kind, shape), evidence = FAULTS[fault]
    expected = next(l for l in small_reference.layers if l.key == (kind, shape) and (fault != "remove_clip" or l.index > 2))
    diffs = diff_alignment(alignment, WEIGHT_TOLERANCE)

    if evidence == "source_only":
        assert [l.index for l in alignment.source_only] == [expected.index]
        assert alignment.target_only == [] and diffs == []
    else:
        assert alignment.source_only == [] and alignment.target_only == []
        assert [d.pair.source.index for d in diffs] == [expected.index]
        (what, name), diff = evidence.split(":"), diffs[0]
        if what == "param":
            assert set(n for n, e in diff.params.items() if e > WEIGHT_TOLERANCE) == {name} and not diff.attrs
        else:
            assert set(diff.attrs) == {name} and not diff.weight_differs(WEIGHT_TOLERANCE)

    # Activations: the first diverging aligned layer is the faulty one (or, for a removed op, the
    # first layer after it).
    batch = small_batch(2)
    source_out = small_reference.run_taps(batch, [p.source.index for p in alignment.pairs])
    target_out = faulty.run_taps(batch, [p.target.index for p in alignment.pairs])
    errors = [rel(source_out[p.source.index], target_out[p.target.index]) for p in alignment.pairs]
    first = first_divergence(errors)
    assert first is not None, errors
    if evidence == "source_only":
        assert alignment.pairs[first].source.index == expected.index + 1
    else:
        assert alignment.pairs[first].source.index == expected.index
    assert max(errors[:first], default=0.0) < 1e-5


def test_clean_small_models_do_not_diverge(small_reference, small_onnx_ir):
    from safeconvert.ir import align_layers, first_divergence

    alignment = align_layers(small_reference.layers, small_onnx_ir.layers)
    batch = small_batch(2)
    a = small_reference.run_taps(batch, [p.source.index for p in alignment.pairs])
    b = small_onnx_ir.run_taps(batch, [p.target.index for p in alignment.pairs])
    errors = [rel(a[p.source.index], b[p.target.index]) for p in alignment.pairs]
    assert first_divergence(errors) is None and max(errors) < 1e-5


# ---------------------------------------------------------------- MobileNetV2 (real weights)


@pytest.fixture(scope="session")
def mobilenet(tmp_path_factory):
    import torch

    from safeconvert.ir.keras_reference import keras_to_tflite
    from safeconvert.models.mobilenet_v2 import keras_mobilenet_v2, torch_mobilenet_v2

    root = tmp_path_factory.mktemp("mobilenet")
    torch_model = torch_mobilenet_v2()
    keras_model = keras_mobilenet_v2(torch_model)
    onnx_path = keras_to_onnx(keras_model, root / "mnv2.onnx", 224)
    tflite_path = root / "mnv2.tflite"
    tflite_path.write_bytes(keras_to_tflite(keras_model))
    program = torch.export.export(torch_model, (torch.zeros(1, 3, 224, 224),))
    pt2_path = root / "mnv2.pt2"
    torch.export.save(program, str(pt2_path))
    return {"keras": keras_model, "torch": torch_model, "onnx": onnx_path, "tflite": tflite_path, "pt2": pt2_path, "root": root}


@pytest.fixture(scope="session")
def mobilenet_ir(mobilenet):
    from safeconvert.ir import load_ir

    return {fmt: load_ir(mobilenet[fmt]) for fmt in ("tflite", "onnx", "pt2")}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite", "pt2"])
def test_mobilenet_normalised_matches_own_runtime(fmt, mobilenet, mobilenet_ir):
    from safeconvert.runners import load_runner

    layout = "NCHW" if fmt == "pt2" else "NHWC"
    batch = calibration_batch(2, layout=layout)
    expected = load_runner(mobilenet[fmt]).run(batch)
    assert rel(expected, mobilenet_ir[fmt].run(batch)) < OUTPUT_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_mobilenet_layers_align_with_reference(fmt, mobilenet_ir):
    from safeconvert.ir import align_layers, diff_alignment

    alignment = align_layers(mobilenet_ir["tflite"].layers, mobilenet_ir[fmt].layers)
    assert len(alignment.pairs) == 99  # 52 conv, 35 clip, 10 add, mean, dense
    assert alignment.source_only == [] and alignment.target_only == [] and all(p.exact for p in alignment.pairs)
    assert diff_alignment(alignment, WEIGHT_TOLERANCE) == []
    if fmt == "pt2":  # torch layers map back to fx nodes and their nn.Module paths, BatchNorm included
        first = alignment.pairs[0].target
        assert [(o.op_type.split(".")[0], o.scope) for o in first.origins] == [
            ("convolution", "features.0.0"),
            ("_native_batch_norm_legit_no_training", "features.0.1"),
        ]


@pytest.mark.slow
def test_mobilenet_keras_reference_parameters(mobilenet, mobilenet_ir):
    from safeconvert.ir import check_keras_parameters

    check = check_keras_parameters(mobilenet["keras"], mobilenet_ir["tflite"].layers)
    assert check.ok, check.mismatches[:3]
    assert check.compared == 53


@pytest.mark.slow
def test_mobilenet_pads_fault_is_localised(mobilenet, mobilenet_ir, tmp_path):
    import onnx
    from safeconvert.ir import align_layers, diff_alignment, first_divergence, load_ir

    model = onnx.load(str(mobilenet["onnx"]))
    # tf2onnx keeps the ZeroPadding2D of this block as a Pad node: shift its padding to bottom/right.
    pad = next(n for n in model.graph.node if n.op_type == "Pad" and "block8_dw" in n.name)

    def shift(pads: np.ndarray) -> np.ndarray:
        half = pads.size // 2
        begin, end = pads[:half].copy(), pads[half:].copy()
        moved = (begin == 1) & (end == 1)
        begin[moved], end[moved] = 0, 2
        return np.concatenate([begin, end])

    _replace_initializer(model, pad, 1, shift)
    onnx.save(model, str(tmp_path / "faulty.onnx"))
    faulty = load_ir(tmp_path / "faulty.onnx")
    reference = mobilenet_ir["tflite"]
    alignment = align_layers(reference.layers, faulty.layers)
    diffs = diff_alignment(alignment, WEIGHT_TOLERANCE)
    assert len(diffs) == 1 and set(diffs[0].attrs) == {"padding"}
    culprit = diffs[0].pair.source
    assert any("block8_dw" in o.name for o in diffs[0].pair.target.origins)

    batch = calibration_batch(1)
    a = reference.run_taps(batch, [p.source.index for p in alignment.pairs])
    b = faulty.run_taps(batch, [p.target.index for p in alignment.pairs])
    errors = [rel(a[p.source.index], b[p.target.index]) for p in alignment.pairs]
    first = first_divergence(errors)
    assert first is not None and alignment.pairs[first].source.index == culprit.index
    assert max(errors[:first]) < 1e-4
