"""Keras and SavedModel sources: import through an unoptimised float32 TFLite export, then verify it.

TVM has no TensorFlow/Keras frontend. TFLite is the closest faithful path: TFLiteConverter without
optimisations keeps float32 weights and the same ops (it only folds BatchNorm and fuses activations,
which the effective-parameter view of layers.py undoes). But if that export itself were wrong, the
reference would silently inherit the very fault we look for, so `check_keras_parameters` recomputes each
conv/dense layer's effective weights from the Keras model's own variables (folding a following
BatchNormalization the same way) and compares them with the imported layers.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInputError, one_line
from ..formats import Format

PARAMETER_TOLERANCE = 1e-5


def keras_to_tflite(model) -> bytes:
    """Float32 TFLite flatbuffer of a Keras model, with no optimisations (no quantisation, no fp16).

    TFLiteConverter.from_keras_model exports a temporary SavedModel and loads it back before converting,
    which is most of its time (13 of 15 s for MobileNetV2 on 2 busy cores). Converting the model's
    inference function, traced at batch 1 with its variables frozen, gives the same ops and weights and
    bit-identical outputs in under a third of the time; only tensor names outside the layers differ
    (input "input" instead of "serving_default_input:0"). Models that do not fit (several inputs, unknown
    spatial size) or fail there take the from_keras_model path.
    """
    from ..runners.tf_runner import quiet_tensorflow

    tf = quiet_tensorflow()
    converter = _frozen_converter(model, tf)
    if converter is not None:
        try:
            return converter.convert()
        except Exception:  # an op the traced path handles differently: the documented path decides
            pass
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = []
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Keras prints its temporary export's signature
            return converter.convert()
    except Exception as exc:
        raise BadInputError(f"cannot export the Keras model to float TFLite for the reference path ({one_line(exc)})") from exc


def _frozen_converter(model, tf):
    """A TFLiteConverter for the model's batch-1 inference function with constants for variables, or None."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        inputs = list(model.inputs or [])
    except Exception:  # a model that was never built has no inputs yet
        return None
    if len(inputs) != 1:
        return None
    shape = tuple(inputs[0].shape)[1:]
    if any(d is None for d in shape):
        return None
    spec = tf.TensorSpec((1, *shape), inputs[0].dtype, name=_input_name(inputs[0]))
    try:
        function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(function)])
    except Exception:
        return None
    converter.optimizations = []
    return converter


def _input_name(tensor) -> str:
    name = str(getattr(tensor, "name", "") or "input").split(":")[0]
    return name or "input"


def savedmodel_to_tflite(path: Path) -> bytes:
    """Float32 TFLite flatbuffer of a SavedModel, with no optimisations."""
    from ..runners.tf_runner import quiet_tensorflow

    tf = quiet_tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
    converter.optimizations = []
    try:
        return converter.convert()
    except Exception as exc:
        raise BadInputError(f"cannot export the SavedModel to float TFLite for the reference path ({one_line(exc)})") from exc


def import_keras(model_or_path, fmt: Format | None = None):
    """ImportedModel of a Keras model (object or file) or SavedModel directory, via float TFLite.

    For files the export is cached by content (reference_cache.py): checking the same source again skips
    loading it and exporting it."""
    from .importers import import_tflite

    if not isinstance(model_or_path, (str, Path)):
        imported = import_tflite(keras_to_tflite(model_or_path))
        imported.format, imported.path = Format.KERAS, None
        return imported
    from ..runners.tf_runner import load_keras_model
    from .reference_cache import cached_float_tflite

    path = Path(model_or_path)
    if fmt is Format.SAVEDMODEL or path.is_dir():
        imported = import_tflite(cached_float_tflite(path, lambda: savedmodel_to_tflite(path)))
        imported.format, imported.path = Format.SAVEDMODEL, path
        return imported
    imported = import_tflite(cached_float_tflite(path, lambda: keras_to_tflite(load_keras_model(path))))
    imported.format, imported.path = Format.KERAS, path
    return imported


@dataclass(frozen=True)
class KerasParameters:
    """Effective parameters of one Keras conv/dense layer (OIHW or (out, in)), BatchNorm folded in."""

    layer: str
    kind: str
    weight: np.ndarray
    bias: np.ndarray
    folded_batchnorm: str | None = None


@dataclass
class ParameterCheck:
    """Outcome of comparing Keras's own weights with the imported reference's layers."""

    compared: int = 0
    mismatches: list[str] = field(default_factory=list)
    largest_error: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches


def keras_effective_parameters(model) -> list[KerasParameters]:
    """Effective conv/dense parameters computed from the Keras model's variables, in layer order."""
    import keras

    consumers: dict[str, list] = {}
    for layer in model.layers:
        for tensor in _inbound(layer):
            producer = getattr(tensor, "_keras_history", None)
            if producer is not None:
                consumers.setdefault(producer[0].name, []).append(layer)
    found: list[KerasParameters] = []
    for layer in model.layers:
        entries = _own_parameters(layer, keras)
        if not entries:
            continue
        # Fold a BatchNormalization that is the sole consumer of a layer with a linear activation.
        after = consumers.get(layer.name, [])
        activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
        if len(after) == 1 and isinstance(after[0], keras.layers.BatchNormalization) and activation == "linear":
            bn = after[0]
            kind, weight, bias, name = entries[-1]
            scale, shift = _batchnorm_affine(bn)
            shape = (weight.shape[0],) + (1,) * (weight.ndim - 1)
            entries[-1] = (kind, weight * scale.reshape(shape), bias * scale + shift, bn.name)
        for kind, weight, bias, folded in entries:
            found.append(KerasParameters(layer.name, kind, weight, bias, folded))
    return found


def _inbound(layer) -> list:
    try:
        tensors = layer.input
    except (AttributeError, ValueError):
        return []
    if isinstance(tensors, dict):
        tensors = list(tensors.values())
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def _own_parameters(layer, keras) -> list[tuple[str, np.ndarray, np.ndarray, str | None]]:
    """[(kind, weight, bias, None)] for conv/dense layers (two entries for separable convs)."""
    layers = keras.layers

    def vec(variable, size: int) -> np.ndarray:
        return np.zeros(size) if variable is None else np.asarray(variable, dtype=np.float64)

    if isinstance(layer, layers.DepthwiseConv2D):
        kernel = np.asarray(layer.kernel, dtype=np.float64)  # (kh, kw, C, M)
        kh, kw, c, m = kernel.shape
        weight = kernel.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
        return [("conv2d", weight, vec(getattr(layer, "bias", None), c * m), None)]
    if isinstance(layer, layers.SeparableConv2D):
        depth = np.asarray(layer.depthwise_kernel, dtype=np.float64)
        kh, kw, c, m = depth.shape
        point = np.asarray(layer.pointwise_kernel, dtype=np.float64)  # (1, 1, C*M, out)
        out = point.shape[-1]
        return [
            ("conv2d", depth.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw), np.zeros(c * m), None),
            ("conv2d", point.transpose(3, 2, 0, 1), vec(getattr(layer, "bias", None), out), None),
        ]
    if isinstance(layer, layers.Conv2D):
        kernel = np.asarray(layer.kernel, dtype=np.float64)  # (kh, kw, in/groups, out)
        return [("conv2d", kernel.transpose(3, 2, 0, 1), vec(getattr(layer, "bias", None), kernel.shape[-1]), None)]
    if isinstance(layer, layers.Dense):
        kernel = np.asarray(layer.kernel, dtype=np.float64)  # (in, out)
        return [("dense", kernel.T.copy(), vec(getattr(layer, "bias", None), kernel.shape[-1]), None)]
    return []


def _batchnorm_affine(bn) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(bn.moving_mean, dtype=np.float64)
    var = np.asarray(bn.moving_variance, dtype=np.float64)
    gamma = np.asarray(bn.gamma, dtype=np.float64) if getattr(bn, "gamma", None) is not None else np.ones_like(mean)
    beta = np.asarray(bn.beta, dtype=np.float64) if getattr(bn, "beta", None) is not None else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + float(bn.epsilon))
    return scale, beta - mean * scale


def check_keras_parameters(model, layers, tolerance: float = PARAMETER_TOLERANCE) -> ParameterCheck:
    """Compare Keras's own effective parameters with the conv/dense layers of its imported reference."""
    import difflib

    from .compare import relative_error

    expected = keras_effective_parameters(model)
    actual = [layer for layer in layers if layer.kind in ("conv2d", "dense")]
    check = ParameterCheck()
    matcher = difflib.SequenceMatcher(
        None, [(p.kind, p.weight.shape) for p in expected], [(l.kind, l.weight_shape) for l in actual], autojunk=False
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            for p in expected[i1:i2]:
                check.mismatches.append(f"Keras layer '{p.layer}' ({p.kind} {list(p.weight.shape)}) has no counterpart in the reference")
            for l in actual[j1:j2]:
                check.mismatches.append(f"reference layer {l.describe()} has no counterpart in the Keras model")
            continue
        for p, layer in zip(expected[i1:i2], actual[j1:j2]):
            check.compared += 1
            bias_scale = float(np.max(np.abs(p.bias))) if np.any(p.bias) else float(np.max(np.abs(p.weight)))
            error = max(
                relative_error(p.weight, layer.params["weight"]),
                relative_error(p.bias, layer.params["bias"], scale=bias_scale),
            )
            check.largest_error = max(check.largest_error, error)
            if error > tolerance:
                check.mismatches.append(f"Keras layer '{p.layer}' differs from reference layer {layer.describe()} by {error:.2e} (relative)")
    return check
