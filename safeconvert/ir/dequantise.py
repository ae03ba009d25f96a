"""Quantised models imported as float models that carry their quantised weights.

Localisation compares a float source with its converted target. When the target is quantised, what must
show is the quantisation error of each layer's weights, so every quantised constant is imported as the
float32 constant it encodes — (q - zero_point) * scale, per axis; float16 widened — and the static
comparison sees exactly that error (~1/254 of the range per int8 weight, ~2^-11 relative for float16).

TVM 0.27 cannot import these models as they are:
- TFLite dynamic-range (hybrid) ops, float activations with int8 weights, are rejected outright;
- full-integer TFLite is lowered op by op through quantize/dequantize, but not every op has that lowering
  (PAD has none, so any model with ZeroPadding2D fails), and the int8 graph it builds hides the weights
  behind dequantize calls that no layer comparison understands;
- float16 TFLite imports, but its weights are `astype` calls, not constants, so the 1-D biases defeat the
  layout conversion.
So all quantisation is taken out at import: TFLite tensors are presented to TVM's converter as float32
(constants dequantised, activations retyped), QUANTIZE/DEQUANTIZE become identities; for ONNX QDQ models
DequantizeLinear of a constant is folded to a float constant and activation QuantizeLinear/DequantizeLinear
become identities.

What this does NOT model: activations run in float32. An int8 model's tapped activations and outputs
therefore differ from LiteRT's / ONNX Runtime's by the activations' rounding and clamping (the weights'
error is fully there), and activation scales and zero points are not compared. `ImportedModel.quantisation`
says when this happened.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_INTEGER_TYPES = ("INT8", "UINT8", "INT16", "INT32", "INT64")


def dequantise_array(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """float32 (values - zero_point) * scale, per tensor or along `axis` (as both runtimes define it)."""
    values = np.asarray(values)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    zero_point = np.asarray(zero_point, dtype=np.float64).reshape(-1)
    if zero_point.size == 0:
        zero_point = np.zeros(1)
    if scale.size > 1 and values.ndim:
        shape = [1] * values.ndim
        shape[axis % values.ndim] = scale.size
        scale, zero_point = scale.reshape(shape), np.broadcast_to(zero_point, scale.shape).reshape(shape)
    else:
        scale, zero_point = scale[0], zero_point[0]
    return ((values.astype(np.float64) - zero_point) * scale).astype(np.float32)


# ---------------------------------------------------------------- TFLite


class _FloatTensor:
    """A tflite.Tensor seen as float32 without quantisation parameters (everything else delegated)."""

    def __init__(self, tensor: Any) -> None:
        self._tensor = tensor

    def Type(self) -> int:  # noqa: N802 - the flatbuffer accessor name
        from tflite.TensorType import TensorType

        return TensorType.FLOAT32

    def Quantization(self) -> None:  # noqa: N802
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tensor, name)


class _FloatBuffer:
    """A tflite.Buffer holding a dequantised float32 array."""

    def __init__(self, values: np.ndarray) -> None:
        self._bytes = np.frombuffer(np.ascontiguousarray(values, dtype=np.float32).tobytes(), dtype=np.uint8)

    def DataAsNumpy(self) -> np.ndarray:  # noqa: N802
        return self._bytes

    def DataLength(self) -> int:  # noqa: N802
        return int(self._bytes.size)

    def DataIsNone(self) -> bool:  # noqa: N802
        return False


def tflite_quantisation(tensor: Any) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(scale, zero_point, axis) of a TFLite tensor, or None when it is not quantised."""
    params = tensor.Quantization()
    if params is None:
        return None
    scale = params.ScaleAsNumpy()
    if not isinstance(scale, np.ndarray) or scale.size == 0 or not np.any(scale):
        return None
    zero_point = params.ZeroPointAsNumpy()
    zero_point = zero_point if isinstance(zero_point, np.ndarray) else np.zeros(1, np.int64)
    return scale, zero_point, int(params.QuantizedDimension())


def float_view(converter, wrapper) -> tuple[Any, str | None]:
    """The TensorWrapper TVM should see for `wrapper` (float32 if it was quantised or float16), and what
    was dequantised ("int8 weights", "int8 activations", "float16 weights", ...) or None."""
    from tflite.TensorType import TensorType
    from tvm.relax.frontend.tflite.tflite_frontend import TensorWrapper

    if wrapper.tensor_idx < 0 or isinstance(wrapper.tensor, _FloatTensor):
        return wrapper, None
    tensor = wrapper.tensor
    type_name = converter.get_tensor_type_str(tensor.Type()).upper()
    quantisation = tflite_quantisation(tensor)
    constant = wrapper.buffer is not None and wrapper.buffer.DataLength() > 0
    if type_name == "FLOAT16" and constant:
        values = converter.get_tensor_value(wrapper).astype(np.float32)
        return TensorWrapper(wrapper.tensor_idx, _FloatTensor(tensor), _FloatBuffer(values), None), "float16 weights"
    if quantisation is None or type_name not in _INTEGER_TYPES:
        return wrapper, None
    if not constant:
        return TensorWrapper(wrapper.tensor_idx, _FloatTensor(tensor), wrapper.buffer, None), f"{type_name.lower()} activations"
    values = dequantise_array(converter.get_tensor_value(wrapper), *quantisation)
    return TensorWrapper(wrapper.tensor_idx, _FloatTensor(tensor), _FloatBuffer(values), None), f"{type_name.lower()} weights"


def describe(kinds: set[str]) -> str | None:
    """One line for ImportedModel.quantisation from the kinds of tensors that were dequantised."""
    if not kinds:
        return None
    text = "dequantised at import: " + ", ".join(sorted(kinds))
    if any(kind.endswith("activations") for kind in kinds):
        text += " (activations run in float32; their rounding is not modelled)"
    return text


# ---------------------------------------------------------------- ONNX


def onnx_qdq_plan(model) -> tuple[set[str], bool]:
    """(QuantizeLinear outputs that may run as float, whether the model uses QDQ at all).

    A QDQ model quantises activations only to dequantise them again (possibly after layout ops in
    between); it is run in float by making both identities. Models with integer operators
    (QLinearConv, MatMulInteger, ...) really compute on the integers and are left to TVM.
    """
    nodes = model.graph.node
    uses_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in nodes)
    integer_ops = any(n.op_type.startswith("QLinear") or n.op_type.endswith("Integer") for n in nodes)
    if not uses_qdq or integer_ops:
        return set(), uses_qdq
    outputs = {o.name for o in model.graph.output}
    passthrough = {n.output[0] for n in nodes if n.op_type == "QuantizeLinear" and n.output[0] not in outputs}
    return passthrough, True


def onnx_qdq_op(op_name: str, inputs, attrs: dict, outputs: tuple[str, ...], passthrough: set[str]):
    """A replacement for QuantizeLinear/DequantizeLinear in a QDQ model (float constant or identity), else None."""
    import tvm
    from tvm import relax

    if op_name == "QuantizeLinear" and outputs and outputs[0] in passthrough:
        return inputs[0]
    if op_name != "DequantizeLinear" or attrs.get("block_size", 0):
        return None
    data = inputs[0]
    if isinstance(data, tvm.ir.GenericConst):
        constants = [i for i in inputs[1:] if i is not None]
        if not all(isinstance(c, tvm.ir.GenericConst) for c in constants):
            return None
        scale = constants[0].value.numpy()
        zero_point = constants[1].value.numpy() if len(constants) > 1 else np.zeros(1)
        values = dequantise_array(data.value.numpy(), scale, zero_point, int(attrs.get("axis", 1)))
        return relax.const(values, "float32")
    dtype = str(getattr(getattr(data, "ty", None), "dtype", ""))
    return data if dtype.startswith("float") else None
