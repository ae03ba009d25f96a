"""A corpus of real, silent mistranslations by the converters safeconvert runs, each with a clean control.

Every entry is a converter bug that is live in the pinned versions: the converter writes a model without an
error, and that model disagrees with the source's own runtime (ONNX Runtime for ONNX sources, Keras for Keras
sources, PyTorch eager for .pt2 sources) far beyond float noise. Its control is the same small model without the
triggering attribute or condition, which the same converter translates correctly. The builders write small
image-input models (3 channels, so the shipped calibration photos feed them) into a folder; nothing is
downloaded. docs/real-bugs.md lists every candidate tried, live or not, with the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ONNX2TORCH = "onnx2torch"
ONNX_TF = "onnx-tf"
ONNX2TF = "onnx2tf-tflite"
TF2ONNX = "tf2onnx"
TORCH_ONNX = "torch.onnx-dynamo"

Builder = Callable[[Path], Path]


@dataclass(frozen=True)
class RealBug:
    """One live converter bug: how to build it, its control, and where upstream it comes from."""

    name: str
    converter: str  # safeconvert's name for the converter (wrappers/*.py)
    route: str  # source format -> target format
    op: str  # the source op that is mistranslated
    trigger: str  # the attribute or condition that makes the translation wrong
    citation: str  # upstream issue, or file:line in the installed converter
    build_bug: Builder
    build_control: Builder
    target_suffix: str  # what `safeconvert convert -o` is given ("" for a SavedModel directory)
    route_default: bool = True  # the route planner picks this converter first for the route
    slow: bool = False  # the converter runs in its own interpreter (onnx-tf): over 20 s per conversion


# ---------------------------------------------------------------- builders: ONNX one-op models


def _onnx_one_op(folder: Path, name: str, op: str, attrs: dict, inits: dict, inputs: list[str],
                 x_shape=(1, 3, 32, 32), opset: int = 13, tie_break: bool = False, flatten: bool = False) -> Path:
    """A model of one `op` reading input "x" (and the named initialisers), writing "y".

    With flatten, the output is flattened to (1, C*H*W): onnx2tf writes 4-D outputs in NHWC while the source
    is NCHW, and safeconvert compares outputs as they are, so a 4-D output would disagree with a correct model.
    With tie_break, the (flattened) output gets a fixed seeded offset (+-0.005): a linearly upsampled photo
    repeats its saturated pixels exactly, so the output's top-1 "label" ties, and a 1e-7 difference between
    two correct implementations swaps it (such controls were not verified for that reason alone). Off by
    default: onnx2tf mislays a 4-D constant's layout, and ConvTranspose's wrong output shape must stay silent.
    """
    from onnx import helper

    nodes = [helper.make_node(op, ["x", *inputs], ["op_out"], **attrs)]
    if flatten:
        nodes.append(helper.make_node("Flatten", ["op_out"], ["flat"], axis=1))
    inits = {**inits}
    if tie_break:
        last = nodes[-1].output[0]
        probe = _model(nodes, inits, last, x_shape, opset)
        inits["tie_break"] = np.random.default_rng(7).uniform(-0.005, 0.005, _inferred_shape(probe)).astype(np.float32)
        nodes.append(helper.make_node("Add", [last, "tie_break"], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    return _save_checked(_model(nodes, inits, "y", x_shape, opset), folder, name)


def _model(nodes: list, inits: dict, output: str, x_shape, opset: int):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "realbug", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _save_checked(model, folder: Path, name: str) -> Path:
    import onnx

    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    path = Path(folder) / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _inferred_shape(model) -> list[int]:
    """The op's output shape as ONNX Runtime computes it (the reference runtime decides, not shape inference)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [int(d) for d in session.get_inputs()[0].shape]
    return list(session.run(None, {"x": np.zeros(shape, np.float32)})[0].shape)


def _resize(folder: Path, name: str, x_size: int, out_size: int, tie_break: bool = False, flatten: bool = False,
            **attrs) -> Path:
    """Resize-13 to a fixed output size, from a 3-channel x_size^2 image."""
    inits = {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
             "sizes": np.array([1, 3, out_size, out_size], np.int64)}
    return _onnx_one_op(folder, name, "Resize", attrs, inits, ["roi", "scales", "sizes"], (1, 3, x_size, x_size),
                        tie_break=tie_break, flatten=flatten)


def _seeded_weights(*shape: int) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(shape) * 0.3).astype(np.float32)


def _slice(folder: Path, name: str, start: int, end: int, axis: int, step: int, flatten: bool = False) -> Path:
    inits = {"starts": np.array([start], np.int64), "ends": np.array([end], np.int64),
             "axes": np.array([axis], np.int64), "steps": np.array([step], np.int64)}
    return _onnx_one_op(folder, name, "Slice", {}, inits, ["starts", "ends", "axes", "steps"], flatten=flatten)


def _avgpool(folder: Path, name: str, **attrs) -> Path:
    return _onnx_one_op(folder, name, "AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], **attrs), {}, [])


def _cumsum(folder: Path, name: str, **attrs) -> Path:
    return _onnx_one_op(folder, name, "CumSum", attrs, {"axis": np.array(3, np.int64)}, ["axis"])


def _conv_transpose(folder: Path, name: str, **attrs) -> Path:
    return _onnx_one_op(folder, name, "ConvTranspose", dict(kernel_shape=[3, 3], strides=[2, 2], **attrs),
                        {"W": _seeded_weights(3, 8, 3, 3)}, ["W"])


def _softmax11(folder: Path, name: str, axis: int) -> Path:
    """Softmax at opset 11, where axis means "flatten from here", so the last axis is the only one on which
    opset 11 and opset 13 agree."""
    return _onnx_one_op(folder, name, "Softmax", dict(axis=axis), {}, [], opset=11, flatten=True)


def _upsample9_linear(folder: Path, name: str, flatten: bool = False) -> Path:
    return _onnx_one_op(folder, name, "Upsample", dict(mode="linear"),
                        {"scales": np.array([1, 1, 2, 2], np.float32)}, ["scales"], (1, 3, 16, 16), opset=9,
                        tie_break=True, flatten=flatten)


def _resize13_linear_asymmetric_x2(folder: Path, name: str, flatten: bool = False) -> Path:
    """What Upsample-9 "linear" means, written as Resize-13 (asymmetric coordinates, scale 2)."""
    inits = {"roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 2, 2], np.float32)}
    return _onnx_one_op(folder, name, "Resize", dict(mode="linear", coordinate_transformation_mode="asymmetric"),
                        inits, ["roi", "scales"], (1, 3, 16, 16), tie_break=True, flatten=flatten)


# ---------------------------------------------------------------- builders: Keras and PyTorch models


def _keras_resizing(folder: Path, name: str, interpolation: str) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), batch_size=1)
    model = keras.Model(inputs, keras.layers.Resizing(11, 11, interpolation=interpolation)(inputs))
    path = Path(folder) / f"{name}.keras"
    model.save(path)
    return path


def _torch_avgpool(folder: Path, name: str, divisor_override: int | None) -> Path:
    import torch

    from safeconvert.models.files import save_torch_export

    module = torch.nn.AvgPool2d(3, 2, 1, divisor_override=divisor_override)
    return save_torch_export(module.eval(), Path(folder) / f"{name}.pt2", (1, 3, 32, 32))


def _named(fn: Callable[..., Path], name: str, **kwargs) -> Builder:
    return lambda folder: fn(folder, name, **kwargs)


_O2T = "onnx2torch/node_converters"
_ONNX_TF = "onnx_tf/handlers/backend"

CORPUS: list[RealBug] = [
    RealBug("onnx2torch-resize-nearest-mode", ONNX2TORCH, "onnx -> torchscript", "Resize",
            "mode=nearest, nearest_mode=round_prefer_floor (torch's nearest always floors)",
            f"{_O2T}/resize.py:135-141 (warns, converts anyway)",
            _named(_resize, "resize_nearest_round", x_size=16, out_size=24, mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="round_prefer_floor"),
            _named(_resize, "resize_nearest_floor", x_size=16, out_size=24, mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor"), ".pt"),
    RealBug("onnx2torch-resize-nearest-half-pixel", ONNX2TORCH, "onnx -> torchscript", "Resize",
            "mode=nearest, coordinate_transformation_mode=half_pixel (torch's nearest is asymmetric)",
            f"{_O2T}/resize.py:142-146 (warns, converts anyway)",
            _named(_resize, "resize_nearest_half_pixel", x_size=16, out_size=24, mode="nearest",
                   coordinate_transformation_mode="half_pixel", nearest_mode="floor"),
            _named(_resize, "resize_nearest_asymmetric", x_size=16, out_size=24, mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor"), ".pt"),
    RealBug("onnx2torch-resize-linear-asymmetric", ONNX2TORCH, "onnx -> torchscript", "Resize",
            "mode=linear, coordinate_transformation_mode=asymmetric (translated as half_pixel)",
            f"{_O2T}/resize.py:148-152, 29-33 (align_corners=False means half_pixel in torch)",
            _named(_resize, "resize_linear_asymmetric", x_size=16, out_size=32, mode="linear",
                   coordinate_transformation_mode="asymmetric", tie_break=True),
            _named(_resize, "resize_linear_half_pixel", x_size=16, out_size=32, mode="linear",
                   coordinate_transformation_mode="half_pixel", tie_break=True), ".pt"),
    RealBug("onnx2torch-resize-cubic-coeff", ONNX2TORCH, "onnx -> torchscript", "Resize",
            "mode=cubic, cubic_coeff_a=-0.5 (TensorFlow's Keys kernel; torch's bicubic is fixed at -0.75)",
            f"{_O2T}/resize.py:154-155 (warns, converts anyway)",
            _named(_resize, "resize_cubic_a05", x_size=16, out_size=32, mode="cubic", cubic_coeff_a=-0.5),
            _named(_resize, "resize_cubic_a075", x_size=16, out_size=32, mode="cubic", cubic_coeff_a=-0.75), ".pt"),
    RealBug("onnx2torch-resize-cubic-exclude-outside", ONNX2TORCH, "onnx -> torchscript", "Resize",
            "mode=cubic, exclude_outside=1 (ignored)",
            f"{_O2T}/resize.py:157-158 (warns, converts anyway)",
            _named(_resize, "resize_cubic_exclude_outside", x_size=16, out_size=32, mode="cubic", exclude_outside=1),
            _named(_resize, "resize_cubic_include_outside", x_size=16, out_size=32, mode="cubic", exclude_outside=0),
            ".pt"),
    RealBug("onnx2torch-cumsum-default-reverse", ONNX2TORCH, "onnx -> torchscript", "CumSum",
            "no reverse attribute (onnx2torch defaults it to 1; ONNX's default is 0)",
            f"{_O2T}/cumsum.py:83 (node_attributes.get('reverse', 1))",
            _named(_cumsum, "cumsum_default"), _named(_cumsum, "cumsum_reverse0", reverse=0), ".pt"),
    RealBug("onnx2torch-convtranspose-output-shape", ONNX2TORCH, "onnx -> torchscript", "ConvTranspose",
            "output_shape attribute (ignored: the output is 65x65, not 64x64)",
            f"{_O2T}/conv.py:47-74 (output_shape never read)",
            _named(_conv_transpose, "convtranspose_output_shape", output_shape=[64, 64]),
            _named(_conv_transpose, "convtranspose_output_padding", pads=[1, 1, 1, 1], output_padding=[1, 1]), ".pt"),
    RealBug("onnx-tf-avgpool-ceil-count-include-pad", ONNX_TF, "onnx -> savedmodel", "AveragePool",
            "ceil_mode=1 with count_include_pad=1 and pads (the ceil-mode extra pad is counted as padding)",
            f"{_ONNX_TF}/dilated_pooling.py:479-487, 749-751",
            _named(_avgpool, "avgpool_ceil_count_pad", pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
            _named(_avgpool, "avgpool_floor_count_pad", pads=[1, 1, 1, 1], ceil_mode=0, count_include_pad=1),
            "", route_default=False, slow=True),
    RealBug("onnx-tf-upsample-linear", ONNX_TF, "onnx -> savedmodel", "Upsample",
            "Upsample-9 mode=linear (asymmetric coordinates) translated as tf.image.resize bilinear (half-pixel)",
            f"{_ONNX_TF}/upsample.py:49-56",
            _named(_upsample9_linear, "upsample9_linear"),
            _named(_resize13_linear_asymmetric_x2, "resize13_linear_asymmetric"),
            "", route_default=False, slow=True),
    RealBug("onnx-tf-slice-negative-step-end", ONNX_TF, "onnx -> savedmodel", "Slice",
            "negative step whose end normalises to -1 (end=-4 on 3 channels): read as 'to the end', output empty",
            f"{_ONNX_TF}/slice.py:96-97, 114-116 (an end of -1 after normalising means 'whole axis')",
            _named(_slice, "slice_reverse_channels_end_m4", start=2, end=-4, axis=1, step=-1),
            _named(_slice, "slice_reverse_channels_end_min", start=2, end=-(2**62), axis=1, step=-1),
            "", route_default=False, slow=True),
    RealBug("onnx2tf-resize-nearest-half-pixel", ONNX2TF, "onnx -> tflite", "Resize",
            "mode=nearest, coordinate_transformation_mode=half_pixel, nearest_mode=round_prefer_floor",
            "onnx2tf/ops/Resize.py:447-457 (half_pixel goes to tf_resize with half_pixel_centers; nearest_mode never read)",
            _named(_resize, "resize_nearest_half_pixel_round", x_size=16, out_size=24, mode="nearest",
                   coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor", flatten=True),
            _named(_resize, "resize_nearest_asymmetric_floor", x_size=16, out_size=24, mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor", flatten=True), ".tflite"),
    RealBug("onnx2tf-upsample-linear", ONNX2TF, "onnx -> tflite", "Upsample",
            "Upsample-9 mode=linear (asymmetric coordinates) translated with half-pixel centres",
            "onnx2tf/ops/Upsample.py:122 (tf.image.resize: TF2's half-pixel centres, not Upsample's asymmetric ones)",
            _named(_upsample9_linear, "upsample9_linear_flat", flatten=True),
            _named(_resize13_linear_asymmetric_x2, "resize13_linear_asymmetric_flat", flatten=True), ".tflite"),
    RealBug("onnx2tf-slice-negative-step", ONNX2TF, "onnx -> tflite", "Slice",
            "step=-1 over the width axis (a horizontal flip)",
            "onnx2tf/ops/Slice.py:368-387 with utils/common_functions.py:2853 (ends rewritten for positive steps)",
            _named(_slice, "slice_flip_width", start=-1, end=-1000, axis=3, step=-1, flatten=True),
            _named(_slice, "slice_crop_width", start=2, end=30, axis=3, step=1, flatten=True), ".tflite"),
    RealBug("onnx2tf-softmax-opset11-axis", ONNX2TF, "onnx -> tflite", "Softmax",
            "Softmax-11 with axis=1 on a 4-D tensor (opset <13: softmax over the flattened C*H*W, not over C)",
            "onnx2tf/ops/Softmax.py:95-98 (the opset is never read: every Softmax gets opset-13 per-axis semantics)",
            _named(_softmax11, "softmax11_axis1", axis=1), _named(_softmax11, "softmax11_axis3", axis=3), ".tflite"),
    RealBug("tf2onnx-resize-area", TF2ONNX, "keras -> onnx", "ResizeArea",
            "Resizing(interpolation='area') translated as Resize mode=nearest",
            "tf2onnx/onnx_opset/nn.py:1356, 1397-1398 (every op but ResizeBilinear/ResizeBicubic becomes nearest)",
            _named(_keras_resizing, "resizing_area", interpolation="area"),
            _named(_keras_resizing, "resizing_bilinear", interpolation="bilinear"), ".onnx"),
    RealBug("torch-onnx-avgpool-divisor-override", TORCH_ONNX, "pt2 -> onnx", "avg_pool2d",
            "divisor_override (dropped: ONNX AveragePool divides by the window size)",
            "onnxscript/function_libs/torch_lib/ops/nn.py:188 (dynamo; 'TODO: divisor_override'), "
            "torch/onnx/_internal/torchscript_exporter/symbolic_helper.py:1570 (TorchScript-based: only a non-constant one is refused)",
            _named(_torch_avgpool, "avgpool_divisor_override", divisor_override=4),
            _named(_torch_avgpool, "avgpool_plain", divisor_override=None), ".onnx"),
]


def by_name(name: str) -> RealBug:
    return next(bug for bug in CORPUS if bug.name == name)
