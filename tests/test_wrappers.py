"""Integration tests: each converter wrapper runs the real converter, and the result matches the source.

Fast tests use tiny seeded CNNs; tests marked slow convert the real MobileNetV2 (ImageNet weights).
Each comparison loads source and result with safeconvert's runners and feeds the same seeded images,
transposed to each model's layout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_factories import (
    TINY_SIZE,
    assert_outputs_match,
    compare_outputs,
    keras_to_tflite,
    save_torch_export,
    save_torchscript,
    tiny_keras_cnn,
    tiny_torch_cnn,
)
from safeconvert.errors import BadInputError, ConverterFailedError
from safeconvert.formats import Format
from safeconvert.runners import load_runner
from safeconvert.runners.torch_runner import SPEC_EXTRA_FILE
from safeconvert.wrappers.base import ConversionOptions
from safeconvert.wrappers.onnx2torch_wrapper import Onnx2TorchConverter
from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter
from safeconvert.wrappers.tflite_wrapper import TfliteConverter
from safeconvert.wrappers.torch_onnx_wrapper import TorchOnnxConverter

FLOAT_REL = 1e-4  # float32 conversions: max abs diff within 1e-4 of the output range
DEFAULTS = ConversionOptions()


def onnx_opset(path: Path) -> int:
    import onnx

    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def torch_outputs(module, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(batch)).numpy()


# ---------------------------------------------------------------------------------------------------------
# Tiny models, built once per session


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_keras(tiny_dir) -> Path:
    path = tiny_dir / "tiny.keras"
    tiny_keras_cnn().save(path)
    return path


@pytest.fixture(scope="session")
def tiny_savedmodel(tiny_dir, tiny_keras) -> Path:
    from safeconvert.runners.tf_runner import load_keras_model

    path = tiny_dir / "tiny_savedmodel"
    load_keras_model(tiny_keras).export(str(path), verbose=False)
    return path


@pytest.fixture(scope="session")
def tiny_tflite(tiny_dir, tiny_keras) -> Path:
    return keras_to_tflite(tiny_keras, tiny_dir / "tiny.tflite")


@pytest.fixture(scope="session")
def tiny_onnx_from_keras(tiny_dir, tiny_keras) -> Path:
    out = tiny_dir / "tiny_keras.onnx"
    Tf2OnnxConverter().convert(tiny_keras, Format.KERAS, out, DEFAULTS)
    return out


@pytest.fixture(scope="session")
def tiny_torch():
    return tiny_torch_cnn()


@pytest.fixture(scope="session")
def tiny_pt2(tiny_dir, tiny_torch) -> Path:
    return save_torch_export(tiny_torch, tiny_dir / "tiny_dynamic.pt2", (1, 3, TINY_SIZE, TINY_SIZE))


@pytest.fixture(scope="session")
def tiny_pt2_static(tiny_dir, tiny_torch) -> Path:
    return save_torch_export(tiny_torch, tiny_dir / "tiny_static.pt2", (1, 3, TINY_SIZE, TINY_SIZE), dynamic_batch=False)


@pytest.fixture(scope="session")
def tiny_onnx_from_torch(tiny_dir, tiny_pt2) -> Path:
    """The default (dynamo) exporter's output: opset 20, with ReduceMean-18 for the global pooling."""
    out = tiny_dir / "tiny_torch.onnx"
    TorchOnnxConverter().convert(tiny_pt2, Format.TORCH_EXPORT, out, DEFAULTS)
    return out


# ---------------------------------------------------------------------------------------------------------
# tf2onnx


def test_tf2onnx_keras(tiny_keras, tiny_onnx_from_keras):
    assert_outputs_match(tiny_keras, tiny_onnx_from_keras, FLOAT_REL)
    spec = load_runner(tiny_onnx_from_keras).spec
    assert spec.shape == (None, TINY_SIZE, TINY_SIZE, 3) and spec.layout == "NHWC"


def test_tf2onnx_savedmodel(tiny_savedmodel, tmp_path):
    out = tmp_path / "sm.onnx"
    Tf2OnnxConverter().convert(tiny_savedmodel, Format.SAVEDMODEL, out, DEFAULTS)
    assert_outputs_match(tiny_savedmodel, out, FLOAT_REL)


def test_tf2onnx_tflite(tiny_tflite, tmp_path):
    out = tmp_path / "tfl.onnx"
    Tf2OnnxConverter().convert(tiny_tflite, Format.TFLITE, out, DEFAULTS)
    assert_outputs_match(tiny_tflite, out, FLOAT_REL)


def test_tf2onnx_honours_opset(tiny_keras, tmp_path):
    out = tmp_path / "opset13.onnx"
    Tf2OnnxConverter().convert(tiny_keras, Format.KERAS, out, ConversionOptions(opset=13))
    assert onnx_opset(out) == 13
    assert_outputs_match(tiny_keras, out, FLOAT_REL)


def test_tf2onnx_failure_is_one_line_converter_error(tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    with pytest.raises(ConverterFailedError) as info:
        Tf2OnnxConverter().convert(broken, Format.TFLITE, tmp_path / "x.onnx", DEFAULTS)
    assert info.value.tool == "tf2onnx" and "\n" not in str(info.value)
    assert not (tmp_path / "x.onnx").exists()


# ---------------------------------------------------------------------------------------------------------
# TFLite converter


def test_tflite_from_keras_float(tiny_keras, tmp_path):
    out = tmp_path / "float.tflite"
    converter = TfliteConverter()
    converter.convert(tiny_keras, Format.KERAS, out, DEFAULTS)
    assert_outputs_match(tiny_keras, out, FLOAT_REL)
    assert converter.numeric_options(DEFAULTS) == []


def test_tflite_from_savedmodel_optimize_default(tiny_savedmodel, tmp_path):
    out = tmp_path / "dynamic_range.tflite"
    options = ConversionOptions(tflite_optimizations=["DEFAULT"])
    converter = TfliteConverter()
    converter.convert(tiny_savedmodel, Format.SAVEDMODEL, out, options)
    assert converter.numeric_options(options) == ["Optimize.DEFAULT (dynamic-range weight quantisation)"]
    assert_outputs_match(tiny_savedmodel, out, rel=0.05)  # int8 weights: close, not exact
    assert _tensor_types(out) & {"INT8"}, "Optimize.DEFAULT should store int8 weights"


def test_tflite_float16(tiny_keras, tmp_path):
    out = tmp_path / "f16.tflite"
    options = ConversionOptions(tflite_supported_types=["float16"])
    converter = TfliteConverter()
    converter.convert(tiny_keras, Format.KERAS, out, options)
    assert converter.numeric_options(options) == ["float16 weights (Optimize.DEFAULT with supported_types float16)"]
    assert "FLOAT16" in _tensor_types(out)
    assert_outputs_match(tiny_keras, out, rel=0.01)


def test_tflite_int8_full_integer(tiny_keras, tmp_path):
    out = tmp_path / "int8.tflite"
    data = np.random.default_rng(3).standard_normal((16, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
    options = ConversionOptions(tflite_int8=True, representative_data=data)
    converter = TfliteConverter()
    converter.convert(tiny_keras, Format.KERAS, out, options)
    assert converter.numeric_options(options)[0].startswith("int8 full-integer quantisation")
    runner = load_runner(out)
    assert runner.spec.dtype == "float32", "input stays float; the model quantises it itself"
    assert "INT8" in _tensor_types(out)
    assert_outputs_match(tiny_keras, out, rel=0.1)


def test_tflite_int8_needs_representative_data(tiny_keras, tmp_path):
    with pytest.raises(BadInputError, match="representative data"):
        TfliteConverter().convert(tiny_keras, Format.KERAS, tmp_path / "x.tflite", ConversionOptions(tflite_int8=True))


def test_tflite_rejects_unknown_optimization(tiny_keras, tmp_path):
    with pytest.raises(BadInputError, match="unknown TFLite optimization"):
        TfliteConverter().convert(tiny_keras, Format.KERAS, tmp_path / "x.tflite", ConversionOptions(tflite_optimizations=["FASTEST"]))


def _tensor_types(path: Path) -> set[str]:
    """The tensor element types stored in a .tflite file."""
    from tensorflow.lite.tools import flatbuffer_utils
    from tensorflow.lite.python import schema_py_generated as schema

    names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    model = flatbuffer_utils.read_model(str(path))
    return {names[t.type] for g in model.subgraphs for t in g.tensors}


# ---------------------------------------------------------------------------------------------------------
# onnx2torch


def test_onnx2torch_keeps_dynamic_batch(tiny_onnx_from_keras, tmp_path):
    out = tmp_path / "tiny.pt"
    Onnx2TorchConverter().convert(tiny_onnx_from_keras, Format.ONNX, out, DEFAULTS)
    assert_outputs_match(tiny_onnx_from_keras, out, FLOAT_REL)
    spec = load_runner(out).spec
    assert spec.shape == (None, TINY_SIZE, TINY_SIZE, 3) and spec.layout == "NHWC" and spec.dtype == "float32"
    for count in (1, 5):  # the traced archive really runs at other batch sizes
        diff, spread = compare_outputs(tiny_onnx_from_keras, out, count=count, seed=count)
        assert diff <= FLOAT_REL * spread


def test_onnx2torch_output_loads_without_safeconvert_or_onnx2torch(tiny_onnx_from_keras, tmp_path):
    out = tmp_path / "standalone.pt"
    Onnx2TorchConverter().convert(tiny_onnx_from_keras, Format.ONNX, out, DEFAULTS)
    script = (
        "import sys, json\n"
        "sys.modules['onnx2torch'] = None; sys.modules['safeconvert'] = None\n"
        "import torch\n"
        f"extra = {{{SPEC_EXTRA_FILE!r}: ''}}\n"
        f"module = torch.jit.load({str(out)!r}, _extra_files=extra).eval()\n"
        f"spec = json.loads(extra[{SPEC_EXTRA_FILE!r}])\n"
        "shape = [3 if d is None else d for d in spec['shape']]\n"
        "print(tuple(module(torch.zeros(shape)).shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(3, 10)"


def test_onnx2torch_opset18_reducemean_is_a_converter_error(tiny_onnx_from_torch, tmp_path):
    assert onnx_opset(tiny_onnx_from_torch) >= 18
    out = tmp_path / "never.pt"
    with pytest.raises(ConverterFailedError) as info:
        Onnx2TorchConverter().convert(tiny_onnx_from_torch, Format.ONNX, out, DEFAULTS)
    assert info.value.tool == "onnx2torch"
    assert "ReduceMean" in info.value.detail and "\n" not in str(info.value)
    assert not out.exists()


def test_onnx2torch_stand_in_torchvision_does_not_linger(tiny_onnx_from_keras, tmp_path):
    import importlib.util

    Onnx2TorchConverter().convert(tiny_onnx_from_keras, Format.ONNX, tmp_path / "t.pt", DEFAULTS)
    torchvision = sys.modules.get("torchvision")
    assert torchvision is None or "stand-in" not in (torchvision.__doc__ or "")
    importlib.util.find_spec("torchvision")  # would raise ValueError on a spec-less stand-in


# ---------------------------------------------------------------------------------------------------------
# torch.onnx


def test_torch_onnx_pt2_dynamic_batch(tiny_pt2, tiny_torch, tiny_onnx_from_torch):
    assert_outputs_match(tiny_pt2, tiny_onnx_from_torch, FLOAT_REL)
    assert load_runner(tiny_onnx_from_torch).spec.shape[0] is None
    for batch in (1, 4):  # ONNX Runtime really runs both batch sizes
        images = np.random.default_rng(batch).standard_normal((batch, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
        np.testing.assert_allclose(run_onnx(tiny_onnx_from_torch, images), torch_outputs(tiny_torch, images), atol=1e-5)


def test_torch_onnx_pt2_fixed_batch_stays_fixed(tiny_pt2_static, tmp_path):
    out = tmp_path / "static.onnx"
    TorchOnnxConverter().convert(tiny_pt2_static, Format.TORCH_EXPORT, out, DEFAULTS)
    assert load_runner(out).spec.shape[0] == 1  # honest: the program specialised its batch
    assert_outputs_match(tiny_pt2_static, out, FLOAT_REL)


def test_torch_onnx_pt2_torchscript_exporter(tiny_pt2, tiny_torch, tmp_path):
    out = tmp_path / "legacy.onnx"
    TorchOnnxConverter().convert(tiny_pt2, Format.TORCH_EXPORT, out, ConversionOptions(torch_dynamo=False))
    assert_outputs_match(tiny_pt2, out, FLOAT_REL)
    images = np.random.default_rng(4).standard_normal((4, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(out, images), torch_outputs(tiny_torch, images), atol=1e-5)


def test_torch_onnx_opset17_then_onnx2torch(tiny_pt2, tmp_path):
    """The dynamo exporter cannot write opset 17 here; the wrapper falls back so the onnx2torch hop works."""
    onnx_path, torchscript = tmp_path / "o17.onnx", tmp_path / "o17.pt"
    TorchOnnxConverter().convert(tiny_pt2, Format.TORCH_EXPORT, onnx_path, ConversionOptions(opset=17))
    assert onnx_opset(onnx_path) == 17
    Onnx2TorchConverter().convert(onnx_path, Format.ONNX, torchscript, DEFAULTS)
    assert_outputs_match(tiny_pt2, torchscript, FLOAT_REL)
    assert load_runner(torchscript).spec.shape[0] is None


def test_torch_onnx_torchscript_with_spec(tiny_torch, tmp_path):
    source = save_torchscript(tiny_torch, tmp_path / "ts.pt", (None, 3, TINY_SIZE, TINY_SIZE))
    out = tmp_path / "ts.onnx"
    TorchOnnxConverter().convert(source, Format.TORCHSCRIPT, out, DEFAULTS)  # dynamo requested: falls back
    assert_outputs_match(source, out, FLOAT_REL)
    for batch in (1, 4):
        images = np.random.default_rng(batch).standard_normal((batch, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
        np.testing.assert_allclose(run_onnx(out, images), torch_outputs(tiny_torch, images), atol=1e-5)


def test_torch_onnx_torchscript_needs_a_shape(tiny_torch, tmp_path):
    source = save_torchscript(tiny_torch, tmp_path / "bare.pt", (1, 3, TINY_SIZE, TINY_SIZE), with_spec=False)
    with pytest.raises(BadInputError, match="input-shape"):
        TorchOnnxConverter().convert(source, Format.TORCHSCRIPT, tmp_path / "x.onnx", DEFAULTS)
    out = tmp_path / "shaped.onnx"
    TorchOnnxConverter().convert(source, Format.TORCHSCRIPT, out, ConversionOptions(input_shape=(1, 3, TINY_SIZE, TINY_SIZE)))
    images = np.random.default_rng(0).standard_normal((1, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(out, images), torch_outputs(tiny_torch, images), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# All wrappers


def test_wrappers_import_no_framework():
    """Listing routes must not start TensorFlow or torch: heavy imports live inside convert()."""
    script = (
        "import sys\n"
        "from safeconvert.routes import registered_converters\n"
        "[c.availability() for c in registered_converters()]\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'onnx', 'tf2onnx', 'onnx2torch', 'onnxruntime') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("converter", [Tf2OnnxConverter(), TfliteConverter(), Onnx2TorchConverter(), TorchOnnxConverter()])
def test_wrappers_are_available_and_reject_other_sources(converter, tmp_path):
    assert converter.availability() == (True, "ok")
    other = next(f for f in Format if f not in converter.sources)
    with pytest.raises(BadInputError):
        converter.convert(tmp_path / "x", other, tmp_path / "y", DEFAULTS)


# ---------------------------------------------------------------------------------------------------------
# The real MobileNetV2 (slow)


@pytest.fixture(scope="session")
def mnv2_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mobilenet_v2")


@pytest.fixture(scope="session")
def mnv2_torch():
    from safeconvert.models.mobilenet_v2 import torch_mobilenet_v2

    return torch_mobilenet_v2()


@pytest.fixture(scope="session")
def mnv2_keras(mnv2_dir, mnv2_torch) -> Path:
    from safeconvert.models.mobilenet_v2 import keras_mobilenet_v2

    path = mnv2_dir / "mobilenet_v2.keras"
    keras_mobilenet_v2(mnv2_torch).save(path)
    return path


@pytest.fixture(scope="session")
def mnv2_savedmodel(mnv2_dir, mnv2_keras) -> Path:
    from safeconvert.runners.tf_runner import load_keras_model

    path = mnv2_dir / "mobilenet_v2_savedmodel"
    load_keras_model(mnv2_keras).export(str(path), verbose=False)
    return path


@pytest.fixture(scope="session")
def mnv2_pt2(mnv2_dir, mnv2_torch) -> Path:
    return save_torch_export(mnv2_torch, mnv2_dir / "mobilenet_v2.pt2", (1, 3, 224, 224))


@pytest.fixture(scope="session")
def mnv2_onnx_from_keras(mnv2_dir, mnv2_keras) -> Path:
    out = mnv2_dir / "from_keras.onnx"
    Tf2OnnxConverter().convert(mnv2_keras, Format.KERAS, out, DEFAULTS)
    return out


@pytest.fixture(scope="session")
def mnv2_tflite(mnv2_dir, mnv2_keras) -> Path:
    out = mnv2_dir / "float.tflite"
    TfliteConverter().convert(mnv2_keras, Format.KERAS, out, DEFAULTS)
    return out


@pytest.mark.slow
def test_mobilenet_keras_to_onnx(mnv2_keras, mnv2_onnx_from_keras):
    assert_outputs_match(mnv2_keras, mnv2_onnx_from_keras, FLOAT_REL)
    assert load_runner(mnv2_onnx_from_keras).spec.shape == (None, 224, 224, 3)


@pytest.mark.slow
def test_mobilenet_keras_to_tflite_float(mnv2_keras, mnv2_tflite):
    assert_outputs_match(mnv2_keras, mnv2_tflite, FLOAT_REL)


@pytest.mark.slow
def test_mobilenet_keras_to_tflite_optimize_default(mnv2_keras, mnv2_dir):
    out = mnv2_dir / "dynamic_range.tflite"
    options = ConversionOptions(tflite_optimizations=["DEFAULT"])
    converter = TfliteConverter()
    converter.convert(mnv2_keras, Format.KERAS, out, options)
    assert "Optimize.DEFAULT (dynamic-range weight quantisation)" in converter.numeric_options(options)
    assert out.stat().st_size < mnv2_keras.stat().st_size / 2  # int8 weights
    assert_outputs_match(mnv2_keras, out, rel=0.1)  # quantised on purpose: close, not float-exact


@pytest.mark.slow
def test_mobilenet_onnx_to_torchscript(mnv2_onnx_from_keras, mnv2_dir):
    import torch

    out = mnv2_dir / "from_onnx.pt"
    Onnx2TorchConverter().convert(mnv2_onnx_from_keras, Format.ONNX, out, DEFAULTS)
    assert_outputs_match(mnv2_onnx_from_keras, out, FLOAT_REL)
    extra = {SPEC_EXTRA_FILE: ""}
    torch.jit.load(str(out), _extra_files=extra)  # the spec travels inside the archive, for users and later hops
    name = load_runner(mnv2_onnx_from_keras).spec.name
    assert json.loads(extra[SPEC_EXTRA_FILE]) == {"name": name, "shape": [None, 224, 224, 3], "layout": "NHWC", "dtype": "float32"}


@pytest.mark.slow
def test_mobilenet_pt2_to_onnx(mnv2_pt2, mnv2_torch, mnv2_dir):
    out = mnv2_dir / "from_pt2.onnx"
    TorchOnnxConverter().convert(mnv2_pt2, Format.TORCH_EXPORT, out, DEFAULTS)
    assert_outputs_match(mnv2_pt2, out, FLOAT_REL)
    for batch in (1, 4):
        images = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        expected = torch_outputs(mnv2_torch, images)
        assert np.abs(run_onnx(out, images) - expected).max() <= FLOAT_REL * np.ptp(expected)


@pytest.mark.slow
def test_mobilenet_savedmodel_to_onnx(mnv2_savedmodel, mnv2_dir):
    out = mnv2_dir / "from_savedmodel.onnx"
    Tf2OnnxConverter().convert(mnv2_savedmodel, Format.SAVEDMODEL, out, DEFAULTS)
    assert_outputs_match(mnv2_savedmodel, out, FLOAT_REL)


@pytest.mark.slow
def test_mobilenet_tflite_to_onnx(mnv2_tflite, mnv2_dir):
    out = mnv2_dir / "from_tflite.onnx"
    Tf2OnnxConverter().convert(mnv2_tflite, Format.TFLITE, out, DEFAULTS)
    assert_outputs_match(mnv2_tflite, out, FLOAT_REL)
