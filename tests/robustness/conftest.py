"""Real model files the robustness corpus mutates, built once per session, and a small calibration set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CALIB_PHOTOS = ("dog.jpg", "fruits.jpg", "baboon.jpg", "chelsea.jpg")


@pytest.fixture(scope="session")
def base_models(small_keras_file: Path, small_pt2_file: Path, tmp_path_factory) -> dict[str, Path]:
    """The small seeded CNNs in every readable format.

    keras/onnx/tflite hold the same Keras model; pt2/pt/torch_onnx the same PyTorch model, so each mutant
    can be checked against an intact file of its own family.
    """
    from model_factories import keras_to_tflite, save_torchscript, tiny_torch_cnn

    from safeconvert.formats import Format
    from safeconvert.models.small import INPUT_SIZE
    from safeconvert.wrappers.base import ConversionOptions
    from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter
    from safeconvert.wrappers.torch_onnx_wrapper import TorchOnnxConverter

    directory = tmp_path_factory.mktemp("base_models")
    files = {"keras": small_keras_file, "pt2": small_pt2_file}
    files["onnx"] = directory / "small.onnx"
    Tf2OnnxConverter().convert(small_keras_file, Format.KERAS, files["onnx"], ConversionOptions())
    files["tflite"] = keras_to_tflite(small_keras_file, directory / "small.tflite")
    files["torch_onnx"] = directory / "small_torch.onnx"
    TorchOnnxConverter().convert(small_pt2_file, Format.TORCH_EXPORT, files["torch_onnx"], ConversionOptions(torch_dynamo=False))
    files["pt"] = save_torchscript(tiny_torch_cnn(), directory / "small.pt", (None, 3, INPUT_SIZE, INPUT_SIZE))
    return files


@pytest.fixture(scope="session")
def absurd_models(base_models, tmp_path_factory) -> dict[str, Path]:
    """Models declaring a 40000x40000x3 input (4.8e9 values per image): refused before any allocation."""
    import onnx
    from onnx import TensorProto, helper

    directory = tmp_path_factory.mktemp("absurd")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["logits"])],
        "absurd", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 40000, 40000])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    files = {"onnx": directory / "absurd.onnx", "tflite": directory / "absurd.tflite"}
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), files["onnx"])
    files["tflite"].write_bytes(_with_input_shape(base_models["tflite"], (1, 40000, 40000, 3)))
    return files


def _with_input_shape(tflite_file: Path, shape: tuple[int, int, int, int]) -> bytes:
    """The .tflite file with its input tensor's shape vector overwritten in place (what a corrupt header does)."""
    import struct

    import tflite

    data = bytearray(tflite_file.read_bytes())
    subgraph = tflite.Model.GetRootAs(data, 0).Subgraphs(0)
    tensor = subgraph.Tensors(int(subgraph.InputsAsNumpy()[0]))
    start = tensor._tab.Vector(tensor._tab.Offset(4))  # field 0 of Tensor: shape, a vector of int32
    struct.pack_into("<4i", data, start, *shape)
    return bytes(data)


@pytest.fixture(scope="session")
def small_calib(tmp_path_factory) -> Path:
    """Four of the packaged photos: enough to exercise validation, fast enough for hundreds of runs."""
    from safeconvert.validators.calibration import default_calibration_dir

    directory = tmp_path_factory.mktemp("calib4")
    for name in CALIB_PHOTOS:
        shutil.copy(default_calibration_dir() / name, directory / name)
    return directory
