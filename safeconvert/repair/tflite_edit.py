"""Edit primitives for TFLite models, on the flatbuffer object API (schema ModelT).

TFLite stores what safeconvert.ir calls one layer as a CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op
with weights in its own layouts (OHWI, 1HW(C*M), (out, in)), possibly int8 with per-channel scales
(dynamic-range and full-integer models) or float16 behind a DEQUANTIZE op, and with padding and the
activation fused into the op's options. These functions read and write those forms from the effective
layouts, so a repair can restore a layer's float weights or options without re-running the converter.

Graph edits work the same way on the op list: ops inserted on a tensor (a transform in front of the
input, an activation that cannot be fused, a PAD before a conv) or removed (an extra op, a reshape
standing where a transpose belongs), with graph inputs and outputs keeping their tensors, so callers
feed and read the model as before. After a graph edit, `check_model` tells whether LiteRT still runs it.

Every function edits `model` in place. Op indices stay valid through all edits except
`remove_dead_ops`, `keep_op_float` and the graph edits (they delete or insert ops: look ops up again
by output name). A weight or other constant shared with another op is never changed behind its back:
the edited op gets its own copy.

Full-integer (int8) models: a quantised op's weights cannot simply be replaced by float ones, because
its activations are int8 too. `keep_op_float` instead runs that one op in float between a DEQUANTIZE
and a QUANTIZE that keep the int8 neighbours' scales, which is exact for single-input conv/depthwise/
fully-connected ops. Other ops (ADD with two int8 inputs, CONCATENATION...) are not handled by buffer
edits: re-run the converter with those layers left float (`convert_with_float_layers`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_NUMPY_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT8": np.int8,
                "UINT8": np.uint8, "INT16": np.int16, "UINT16": np.uint16, "INT32": np.int32,
                "UINT32": np.uint32, "INT64": np.int64, "BOOL": np.bool_}
_DESCRIPTIVE = {"kernel_size", "groups", "in_channels", "out_channels", "depthwise", "in_features", "out_features",
                "ceil_mode", "count_include_pad", "layout", "data_layout", "kernel_layout", "out_layout", "out_dtype"}
_ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")


def _schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


# ---------------------------------------------------------------- files and checks


def load_model(source: bytes | bytearray | Path | str):
    """A mutable ModelT from .tflite bytes or a path."""
    from tensorflow.lite.tools import flatbuffer_utils

    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def model_bytes(model) -> bytes:
    """Serialise a ModelT back to .tflite bytes."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def check_model(model) -> None:
    """Load the model in LiteRT and run it once on zeros: the edited file must still load and run."""
    from ai_edge_litert.interpreter import Interpreter

    from ..quiet import native_stderr_silenced

    with native_stderr_silenced():
        interpreter = Interpreter(model_content=model_bytes(model), num_threads=1)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()


# ---------------------------------------------------------------- lookups


def op_name(model, op_index: int, subgraph: int = 0) -> str:
    """The builtin name of an op ("CONV_2D"), or its custom code."""
    from tensorflow.lite.python import schema_util

    op = model.subgraphs[subgraph].operators[op_index]
    code = model.operatorCodes[op.opcodeIndex]
    builtin = schema_util.get_builtin_code_from_operator_code(code)
    if builtin == _schema().BuiltinOperator.CUSTOM:
        return _text(code.customCode)
    return _enum_name(_schema().BuiltinOperator, builtin)


def _enum_name(enum, value: int) -> str:
    return next(k for k, v in vars(enum).items() if not k.startswith("_") and v == value)


def _text(value) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value or "")


def tensor_name(model, tensor_index: int, subgraph: int = 0) -> str:
    return _text(model.subgraphs[subgraph].tensors[tensor_index].name)


def find_tensor(model, name: str, subgraph: int = 0) -> int:
    """Index of the tensor called `name`."""
    for index, tensor in enumerate(model.subgraphs[subgraph].tensors):
        if _text(tensor.name) == name:
            return index
    raise KeyError(f"no TFLite tensor named {name!r}")


def find_op(model, output_name: str, subgraph: int = 0) -> int:
    """Index of the op writing the tensor `output_name` (how TFLite Origins name their ops)."""
    target = find_tensor(model, output_name, subgraph)
    op = _producers(model, subgraph).get(target)
    if op is None:
        raise KeyError(f"no TFLite op writes {output_name!r}")
    return op


def _producers(model, subgraph: int = 0) -> dict[int, int]:
    return {int(t): i for i, op in enumerate(model.subgraphs[subgraph].operators) for t in op.outputs}


def _readers(model, tensor_index: int, subgraph: int = 0) -> list[tuple[int, int]]:
    """(op index, input position) for every op reading the tensor."""
    return [(i, p) for i, op in enumerate(model.subgraphs[subgraph].operators)
            for p, t in enumerate(op.inputs) if int(t) == tensor_index]


def _type_name(tensor) -> str:
    return _enum_name(_schema().TensorType, tensor.type)


def _buffer_bytes(model, tensor) -> bytes:
    buffer = model.buffers[tensor.buffer]
    return b"" if buffer.data is None else bytes(np.asarray(buffer.data, dtype=np.uint8))


# ---------------------------------------------------------------- constant tensors


def is_constant(model, tensor_index: int, subgraph: int = 0) -> bool:
    tensor = model.subgraphs[subgraph].tensors[tensor_index]
    return bool(_buffer_bytes(model, tensor))


def tensor_array(model, tensor_index: int, subgraph: int = 0) -> np.ndarray:
    """The float values of a constant tensor as the model uses them, whatever it stores: float32,
    float16, int8/uint8/int16/int32 with per-tensor or per-channel scales (dequantised), or the output
    of a DEQUANTIZE op over such a constant (followed)."""
    tensor = model.subgraphs[subgraph].tensors[tensor_index]
    data = _buffer_bytes(model, tensor)
    if not data:
        op = _producers(model, subgraph).get(tensor_index)
        if op is not None and op_name(model, op, subgraph) == "DEQUANTIZE":
            return tensor_array(model, int(model.subgraphs[subgraph].operators[op].inputs[0]), subgraph)
        raise ValueError(f"tensor {tensor_index} ({_text(tensor.name)}) is not a constant")
    kind = _type_name(tensor)
    if kind not in _NUMPY_TYPES:
        raise ValueError(f"tensor {tensor_index} has type {kind}, which cannot be read as numbers here")
    values = np.frombuffer(data, dtype=np.dtype(_NUMPY_TYPES[kind]).newbyteorder("<")).reshape(tuple(tensor.shape))
    return _dequantize(values, tensor.quantization)


def _dequantize(values: np.ndarray, quantization) -> np.ndarray:
    scale = None if quantization is None or quantization.scale is None else np.asarray(quantization.scale, np.float64)
    if scale is None or scale.size == 0 or values.dtype.kind == "f":
        return values.astype(np.float32)
    zero = np.asarray(quantization.zeroPoint if quantization.zeroPoint is not None else [0], np.float64)
    if scale.size > 1:
        shape = [1] * values.ndim
        shape[quantization.quantizedDimension] = scale.size
        scale = scale.reshape(shape)
        zero = np.broadcast_to(zero, (scale.size,)).reshape(shape) if zero.size > 1 else zero.reshape(())
    return ((values.astype(np.float64) - zero) * scale).astype(np.float32)


def set_float_tensor(model, tensor_index: int, array, subgraph: int = 0) -> int:
    """Make the tensor a float32 constant holding `array` (type FLOAT32, quantisation cleared) for all
    its readers; returns the index of the tensor now holding the value.

    A stored constant (float, or int8 from dynamic-range quantisation) is rewritten in place. A tensor
    that a DEQUANTIZE op computes from a float16 or int8 constant gets a new float32 constant tensor and
    its readers are rewired; the DEQUANTIZE is left dead (harmless; `remove_dead_ops` deletes it)."""
    tensors = model.subgraphs[subgraph].tensors
    tensor = tensors[tensor_index]
    value = _checked_value(array, tensor, f"tensor {tensor_index} ({_text(tensor.name)})")
    _refuse_activation(model, tensor_index, subgraph)
    if _producers(model, subgraph).get(tensor_index) is not None:
        new_index = _new_constant_tensor(model, tensor, value, subgraph)
        for op, position in _readers(model, tensor_index, subgraph):
            model.subgraphs[subgraph].operators[op].inputs[position] = new_index
        _release_unused_buffers(model)
        return new_index
    _write_float(model, tensor, value)
    _release_unused_buffers(model)
    return tensor_index


def set_op_input_float(model, op_index: int, position: int, array, subgraph: int = 0) -> int:
    """Give one op's input `position` the float32 constant `array`; returns the tensor index it reads.

    The op's own constant is rewritten in place; a constant other ops also read, a DEQUANTIZE output
    or an absent optional input (-1) becomes a new tensor for this op only."""
    sg = model.subgraphs[subgraph]
    op = sg.operators[op_index]
    inputs = [int(t) for t in op.inputs]
    current = inputs[position] if position < len(inputs) else -1
    if current >= 0:
        tensor = sg.tensors[current]
        value = _checked_value(array, tensor, f"input {position} of op {op_index}")
        _refuse_activation(model, current, subgraph)
        owned = len(_readers(model, current, subgraph)) == 1 and current not in _graph_io(model, subgraph)
        if owned and _producers(model, subgraph).get(current) is None and is_constant(model, current, subgraph):
            _write_float(model, tensor, value)
            _release_unused_buffers(model)
            return current
        new_index = _new_constant_tensor(model, tensor, value, subgraph)
    else:
        value = np.asarray(array, dtype=np.float32)
        new_index = _new_constant_tensor(model, None, value, subgraph, name=f"{_op_label(model, op_index, subgraph)}/input{position}")
    while len(inputs) <= position:
        inputs.append(-1)
    inputs[position] = new_index
    op.inputs = np.asarray(inputs, dtype=np.int32)
    _release_unused_buffers(model)
    return new_index


def _refuse_activation(model, tensor_index: int, subgraph: int) -> None:
    """Only weights are replaced: a tensor computed from the input (other than by DEQUANTIZE) is not one."""
    op = _producers(model, subgraph).get(tensor_index)
    computed = op is not None and op_name(model, op, subgraph) != "DEQUANTIZE"
    if computed or tensor_index in {int(t) for t in model.subgraphs[subgraph].inputs}:
        raise ValueError(f"tensor {tensor_index} ({tensor_name(model, tensor_index, subgraph)}) is computed, not a weight")


def _op_label(model, op_index: int, subgraph: int) -> str:
    op = model.subgraphs[subgraph].operators[op_index]
    return tensor_name(model, int(op.outputs[0]), subgraph) if len(op.outputs) else f"op{op_index}"


def _graph_io(model, subgraph: int) -> set[int]:
    sg = model.subgraphs[subgraph]
    return {int(t) for t in sg.inputs} | {int(t) for t in sg.outputs}


def _checked_value(array, tensor, what: str) -> np.ndarray:
    value = np.asarray(array, dtype=np.float32)
    if tuple(value.shape) != tuple(int(d) for d in tensor.shape):
        raise ValueError(f"{what}: the new value has shape {tuple(value.shape)}, the model stores {tuple(tensor.shape)}")
    return value


def _write_float(model, tensor, value: np.ndarray) -> None:
    tensor.buffer = _append_buffer(model, value)
    tensor.type = _schema().TensorType.FLOAT32
    tensor.quantization = None
    tensor.sparsity = None


def _append_buffer(model, value: np.ndarray | None) -> int:
    buffer = _schema().BufferT()
    if value is not None:
        buffer.data = np.frombuffer(np.ascontiguousarray(value, dtype="<f4").tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def _new_constant_tensor(model, like, value: np.ndarray, subgraph: int, name: str | None = None) -> int:
    schema = _schema()
    tensor = schema.TensorT()
    tensor.name = (name or f"{_text(like.name)}/float32").encode()
    tensor.shape = np.asarray(value.shape, dtype=np.int32)
    _write_float(model, tensor, value)
    model.subgraphs[subgraph].tensors.append(tensor)
    return len(model.subgraphs[subgraph].tensors) - 1


def _release_unused_buffers(model) -> None:
    """Empty the buffers no op reads any more (a replaced int8 or float16 weight), so the file shrinks.
    Buffers stay in place (tensors and metadata refer to them by index); metadata buffers are kept."""
    live: set[int] = {m.buffer for m in model.metadata or []} | {int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else [])}
    for sg in model.subgraphs:
        used = {int(t) for op in sg.operators for t in op.inputs if int(t) >= 0}
        used |= {int(t) for t in sg.inputs} | {int(t) for t in sg.outputs}
        used |= {int(t) for op in sg.operators for t in (op.intermediates if op.intermediates is not None else [])}
        live |= {sg.tensors[t].buffer for t in used}
        live |= {t.buffer for t in sg.tensors if t.isVariable}
    for index, buffer in enumerate(model.buffers):
        if index and index not in live and buffer.data is not None:
            buffer.data = None


def remove_dead_ops(model, subgraph: int = 0) -> int:
    """Delete DEQUANTIZE ops (and other ops over constants) whose outputs nothing reads; returns how many.
    Op indices shift: look ops up again by output name afterwards."""
    sg = model.subgraphs[subgraph]
    removed = 0
    while True:
        used = {int(t) for op in sg.operators for t in op.inputs} | {int(t) for t in sg.outputs}
        dead = [i for i, op in enumerate(sg.operators)
                if len(op.outputs) and not any(int(t) in used for t in op.outputs)
                and (op_name(model, i, subgraph) == "DEQUANTIZE"
                     or all(int(t) < 0 or is_constant(model, int(t), subgraph) for t in op.inputs))]
        if not dead:
            break
        sg.operators = [op for i, op in enumerate(sg.operators) if i not in set(dead)]
        removed += len(dead)
    _release_unused_buffers(model)
    return removed


# ---------------------------------------------------------------- layouts


def to_tflite_layout(op: str, weight: np.ndarray) -> np.ndarray:
    """An effective weight (OIHW for convolutions, (out, in) for dense) in the op's TFLite layout:
    CONV_2D OHWI, DEPTHWISE_CONV_2D 1HW(C*M) (OIHW (C*M, 1, H, W) with output c*M+m), FULLY_CONNECTED (out, in)."""
    weight = np.asarray(weight)
    if op == "CONV_2D":
        return weight.transpose(0, 2, 3, 1)
    if op == "DEPTHWISE_CONV_2D":
        if weight.shape[1] != 1:
            raise ValueError(f"a depthwise OIHW weight has I = 1, got shape {weight.shape}")
        return weight.transpose(1, 2, 3, 0)
    if op == "FULLY_CONNECTED":
        return weight
    raise ValueError(f"{op} has no weight layout here")


def from_tflite_layout(op: str, weight: np.ndarray) -> np.ndarray:
    """The inverse of `to_tflite_layout`: a TFLite weight in OIHW / (out, in)."""
    weight = np.asarray(weight)
    if op == "CONV_2D":
        return weight.transpose(0, 3, 1, 2)
    if op == "DEPTHWISE_CONV_2D":
        return weight.transpose(3, 0, 1, 2)
    if op == "FULLY_CONNECTED":
        return weight
    raise ValueError(f"{op} has no weight layout here")


# ---------------------------------------------------------------- layer parameters


def layer_parameters(model, op_index: int, subgraph: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """A conv/depthwise/dense op's (effective weight, bias) as float32, weight in OIHW / (out, in)."""
    op = model.subgraphs[subgraph].operators[op_index]
    name = op_name(model, op_index, subgraph)
    weight = from_tflite_layout(name, tensor_array(model, int(op.inputs[1]), subgraph))
    bias_index = int(op.inputs[2]) if len(op.inputs) > 2 else -1
    return weight, tensor_array(model, bias_index, subgraph) if bias_index >= 0 else None


def set_layer_parameters(model, op_index: int, weight, bias=None, subgraph: int = 0) -> None:
    """Write effective float parameters (OIHW / (out, in) weight, (out,) bias) into a CONV_2D,
    DEPTHWISE_CONV_2D or FULLY_CONNECTED op as float32, restoring a dynamic-range (int8) or float16
    weight to float. A full-integer op raises: use `keep_op_float`."""
    name = op_name(model, op_index, subgraph)
    if name not in WEIGHTED_OPS:
        raise ValueError(f"op {op_index} is {name}, not one of {WEIGHTED_OPS}")
    if _activation_type(model, op_index, subgraph) != "FLOAT32":
        raise ValueError(f"op {op_index} ({name}) runs on quantised activations: use keep_op_float")
    set_op_input_float(model, op_index, 1, to_tflite_layout(name, weight), subgraph)
    if bias is not None:
        set_op_input_float(model, op_index, 2, np.asarray(bias, dtype=np.float32).reshape(-1), subgraph)


def _activation_type(model, op_index: int, subgraph: int) -> str:
    sg = model.subgraphs[subgraph]
    return _type_name(sg.tensors[int(sg.operators[op_index].inputs[0])])


# ---------------------------------------------------------------- options


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def set_builtin_options(model, op_index: int, subgraph: int = 0, **fields: Any) -> None:
    """Set builtin option fields in snake case: padding ("SAME"/"VALID"), stride_w/stride_h,
    dilation_w_factor/dilation_h_factor, fused_activation_function ("NONE"/"RELU"/"RELU6"...),
    filter_width/filter_height, depth_multiplier, keep_dims... (camelCase names are accepted too)."""
    schema = _schema()
    op = model.subgraphs[subgraph].operators[op_index]
    options = op.builtinOptions
    if options is None:
        raise ValueError(f"op {op_index} ({op_name(model, op_index, subgraph)}) has no builtin options")
    for key, value in fields.items():
        attribute = _camel(key)
        if not hasattr(options, attribute):
            raise ValueError(f"{type(options).__name__} has no field {key!r}")
        if attribute == "padding" and isinstance(value, str):
            value = getattr(schema.Padding, value.upper())
        elif attribute == "fusedActivationFunction" and isinstance(value, str):
            if value.upper() not in _ACTIVATIONS:
                raise ValueError(f"unknown fused activation {value!r} (known: {_ACTIVATIONS})")
            value = getattr(schema.ActivationFunctionType, value.upper())
        setattr(options, attribute, type(getattr(options, attribute))(value))


def builtin_options(model, op_index: int, subgraph: int = 0) -> dict[str, Any]:
    """The op's builtin options as a dict (padding and activation as names)."""
    schema = _schema()
    options = model.subgraphs[subgraph].operators[op_index].builtinOptions
    values = dict(vars(options)) if options is not None else {}
    if "padding" in values:
        values["padding"] = _enum_name(schema.Padding, values["padding"])
    if "fusedActivationFunction" in values:
        values["fusedActivationFunction"] = _enum_name(schema.ActivationFunctionType, values["fusedActivationFunction"])
    return values


def set_attributes(model, op_index: int, ir_attrs: Mapping[str, Any], subgraph: int = 0) -> dict[str, Any]:
    """Set canonical attributes (safeconvert.ir names) on a conv/depthwise/pool op; returns the builtin
    option fields written. strides (h, w), dilation (h, w), pool_size (h, w), and padding
    (top, left, bottom, right), which TFLite can only express as VALID (none) or SAME (TensorFlow's
    split for this input size): other paddings raise ValueError (they need a PAD op), as do
    ceil_mode / count_include_pad set to true and keys with no TFLite option. Descriptive keys
    (kernel_size, groups, channels, depthwise...) are ignored. Nothing changes unless all keys map."""
    fields: dict[str, Any] = {}
    unknown = []
    for key, value in ir_attrs.items():
        if key == "strides":
            fields["stride_h"], fields["stride_w"] = _pair(value)
        elif key == "dilation":
            fields["dilation_h_factor"], fields["dilation_w_factor"] = _pair(value)
        elif key == "pool_size":
            fields["filter_height"], fields["filter_width"] = _pair(value)
        elif key in ("ceil_mode", "count_include_pad") and value:
            raise ValueError(f"TFLite pools have no {key}: it cannot be set on op {op_index}")
        elif key not in _DESCRIPTIVE and key != "padding":
            unknown.append(key)
    if unknown:
        raise ValueError(f"op {op_index}: no TFLite option for {unknown}")
    if "padding" in ir_attrs:
        fields["padding"] = _padding_mode(model, op_index, ir_attrs, fields, subgraph)
    set_builtin_options(model, op_index, subgraph, **fields)
    return fields


def _pair(value) -> tuple[int, int]:
    values = [int(v) for v in (value if isinstance(value, (list, tuple)) else (value, value))]
    return values[0], values[-1]


def _padding_mode(model, op_index: int, ir_attrs: Mapping[str, Any], fields: dict, subgraph: int) -> str:
    padding = [int(p) for p in ir_attrs["padding"]]
    padding = padding * 2 if len(padding) == 2 else padding
    if not any(padding):
        return "VALID"
    sg = model.subgraphs[subgraph]
    op = sg.operators[op_index]
    options = op.builtinOptions
    in_h, in_w = (int(d) for d in sg.tensors[int(op.inputs[0])].shape[1:3])
    kernel = _kernel_size(model, op_index, fields, subgraph)
    strides = (fields.get("stride_h", options.strideH), fields.get("stride_w", options.strideW))
    dilation = (fields.get("dilation_h_factor", getattr(options, "dilationHFactor", 1)),
                fields.get("dilation_w_factor", getattr(options, "dilationWFactor", 1)))
    same = [*_same_padding(in_h, kernel[0], strides[0], dilation[0]), *_same_padding(in_w, kernel[1], strides[1], dilation[1])]
    if [padding[0], padding[2], padding[1], padding[3]] == same:
        return "SAME"
    raise ValueError(f"padding {tuple(padding)} is neither VALID nor SAME for op {op_index}: it needs a PAD op")


def _kernel_size(model, op_index: int, fields: dict, subgraph: int) -> tuple[int, int]:
    sg = model.subgraphs[subgraph]
    op = sg.operators[op_index]
    name = op_name(model, op_index, subgraph)
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        shape = [int(d) for d in sg.tensors[int(op.inputs[1])].shape]
        return shape[1], shape[2]
    options = op.builtinOptions
    return fields.get("filter_height", options.filterHeight), fields.get("filter_width", options.filterWidth)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME split (before, after): the extra row or column goes after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


# ---------------------------------------------------------------- graph structure

# Standalone ops that clip to fixed bounds, and the fused activations (those ops honour them) likewise.
CLIP_OPS = {"RELU": (0.0, np.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)}
FUSED_CLIPS = {"RELU": (0.0, np.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
FUSING_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "DIV",
              "AVERAGE_POOL_2D", "MAX_POOL_2D")
ACTIVATION_OPS = (*CLIP_OPS, "MINIMUM", "MAXIMUM", "LOGISTIC", "TANH", "LEAKY_RELU", "PRELU", "HARD_SWISH",
                  "ELU", "GELU", "SOFTMAX")
_PAD_OPS = ("PAD", "PADV2")
_UNARY = {"relu": "RELU", "sigmoid": "LOGISTIC", "tanh": "TANH"}
_CONSTANT_TYPES = {np.dtype(np.float32): "FLOAT32", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64"}


@dataclass
class OpStep:
    """One builtin op to insert on a data tensor: its constant inputs (after the data input), its output
    shape (None: the input's) and its builtin options by schema name ("TransposeOptions") with snake-case
    fields. An edit describes a chain of steps once; `_insert_after` places and wires it."""

    op: str
    constants: tuple[np.ndarray, ...] = ()
    shape: tuple[int, ...] | None = None
    options: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def refresh_shapes(model, subgraph: int = 0) -> None:
    """Store the shapes LiteRT computes for every tensor (a dynamic batch stays dynamic). An edit that
    changes a feature map's size leaves the stored shapes after it stale, and readers that trust them
    (TVM's importer in the next localization round, delegates, analysis tools) would misread the model."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from ..quiet import native_stderr_silenced

    with native_stderr_silenced():
        interpreter = Interpreter(model_content=model_bytes(model), num_threads=1,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    tensors = model.subgraphs[subgraph].tensors
    for detail in interpreter.get_tensor_details():
        if detail["index"] >= len(tensors) or is_constant(model, detail["index"], subgraph):
            continue
        tensor = tensors[detail["index"]]
        tensor.shape = np.asarray(detail["shape"], dtype=np.int32)
        tensor.shapeSignature = _signature_like(tensor.shapeSignature, tensor.shape)


def _signature_like(signature, shape) -> np.ndarray | None:
    """The shape signature for `shape` that keeps a dynamic batch dynamic, as `signature` had it."""
    if signature is None or len(signature) == 0 or int(signature[0]) != -1 or len(shape) == 0:
        return None
    return np.asarray([-1, *[int(d) for d in shape[1:]]], dtype=np.int32)


def _shape(model, tensor_index: int, subgraph: int = 0) -> tuple[int, ...]:
    return tuple(int(d) for d in model.subgraphs[subgraph].tensors[tensor_index].shape)


def _unique_name(model, base: str, subgraph: int) -> str:
    taken = {_text(t.name) for t in model.subgraphs[subgraph].tensors}
    name, number = base, 0
    while name in taken:
        number += 1
        name = f"{base}_{number}"
    return name


def _new_activation(model, like: int, shape: Sequence[int] | None, name: str, subgraph: int) -> int:
    """A new computed tensor with `like`'s type and quantisation (and dynamic batch), shaped `shape`."""
    source = model.subgraphs[subgraph].tensors[like]
    tensor = _schema().TensorT()
    tensor.name = _unique_name(model, name, subgraph).encode()
    tensor.shape = np.asarray(source.shape if shape is None else shape, dtype=np.int32)
    tensor.shapeSignature = _signature_like(source.shapeSignature, tensor.shape)
    tensor.type = source.type
    tensor.quantization = copy.deepcopy(source.quantization)
    tensor.buffer = _append_buffer(model, None)
    model.subgraphs[subgraph].tensors.append(tensor)
    return len(model.subgraphs[subgraph].tensors) - 1


def _new_typed_constant(model, value: np.ndarray, name: str, subgraph: int) -> int:
    """A new constant tensor holding `value` as it is typed (float32 values, int32/int64 shapes and axes)."""
    schema = _schema()
    value = np.asarray(value)
    if value.dtype not in _CONSTANT_TYPES:
        raise ValueError(f"no TFLite constant type for {value.dtype}")
    buffer = schema.BufferT()
    little_endian = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
    buffer.data = np.frombuffer(little_endian.tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name = _unique_name(model, name, subgraph).encode()
    tensor.shape = np.asarray(value.shape, dtype=np.int32)
    tensor.type = getattr(schema.TensorType, _CONSTANT_TYPES[value.dtype])
    tensor.buffer = len(model.buffers) - 1
    model.subgraphs[subgraph].tensors.append(tensor)
    return len(model.subgraphs[subgraph].tensors) - 1


def _set_op_constant(model, op_index: int, position: int, value: np.ndarray, subgraph: int = 0) -> int:
    """Give one op's constant input a new value in a tensor of its own: converters share equal constants
    (paddings, bounds) between ops, and the others must keep theirs."""
    op = model.subgraphs[subgraph].operators[op_index]
    old = int(op.inputs[position])
    new = _new_typed_constant(model, value, f"{tensor_name(model, old, subgraph)}/edited", subgraph)
    op.inputs[position] = new
    _release_unused_buffers(model)
    return new


def _builtin_op(model, step: OpStep, inputs: Sequence[int], outputs: Sequence[int]):
    schema = _schema()
    op = _new_op(model, getattr(schema.BuiltinOperator, step.op), 1, inputs, outputs)
    if step.options is not None:
        options = getattr(schema, f"{step.options}T")()
        for key, value in step.fields.items():
            setattr(options, _camel(key), value)
        op.builtinOptionsType = getattr(schema.BuiltinOptions, step.options)
        op.builtinOptions = options
    return op


def _insert_after(model, tensor_index: int, steps: Sequence[OpStep], label: str, only: int | None = None,
                  subgraph: int = 0) -> list[str]:
    """Insert `steps` reading the tensor; its readers (or only the op `only`) read the last step's result.

    The ops go right after the tensor's producer (first, for a graph input), so the op list stays in
    execution order. A graph output keeps its tensor (name, shape, signature): the producer writes a new
    tensor that the chain reads, and the chain's last op writes the output. Returns the new ops' outputs."""
    sg = model.subgraphs[subgraph]
    producer = _producers(model, subgraph).get(tensor_index)
    readers = [(sg.operators[i], p) for i, p in _readers(model, tensor_index, subgraph) if only in (None, i)]
    source, last = tensor_index, None
    if only is None and tensor_index in {int(t) for t in sg.outputs}:
        source, last, readers = _hand_over_output(model, tensor_index, steps, label, subgraph), tensor_index, []
    ops, current = [], source
    for number, step in enumerate(steps):
        op = _chain_op(model, step, current, last if number == len(steps) - 1 else None, label, subgraph)
        ops.append(op)
        current = int(op.outputs[0])
    for op, position in readers:
        op.inputs[position] = current
    at = 0 if producer is None else producer + 1
    sg.operators[at:at] = ops
    return [tensor_name(model, int(op.outputs[0]), subgraph) for op in ops]


def _hand_over_output(model, tensor_index: int, steps: Sequence[OpStep], label: str, subgraph: int) -> int:
    """Make the producer of a graph output write a new tensor instead (returned), so that inserted ops
    can read it and the last of them write the output, which keeps its name, shape and signature."""
    producer = _producers(model, subgraph).get(tensor_index)
    if producer is None:
        raise ValueError(f"{tensor_name(model, tensor_index, subgraph)} is both a graph input and output")
    if any(step.shape is not None and tuple(step.shape) != _shape(model, tensor_index, subgraph) for step in steps):
        raise ValueError("an op inserted before a graph output must keep its shape")
    source = _new_activation(model, tensor_index, None, f"{label}/input", subgraph)
    outputs = model.subgraphs[subgraph].operators[producer].outputs
    outputs[[int(t) for t in outputs].index(tensor_index)] = source
    return source


def _chain_op(model, step: OpStep, source: int, out: int | None, label: str, subgraph: int):
    """The op for one step reading `source`, with its constants and (unless given) its output tensor."""
    base = f"{label}/{step.op.lower()}"
    if out is None:
        out = _new_activation(model, source, step.shape, base, subgraph)
    constants = [_new_typed_constant(model, value, f"{base}/const{k}", subgraph) for k, value in enumerate(step.constants)]
    return _builtin_op(model, step, [source, *constants], [out])


# ---------------------------------------------------------------- input transforms


def insert_input_transform(model, transform, subgraph: int = 0) -> list[str]:
    """Insert ops right after the graph input so that the model, fed the same tensors as before, computes
    on transform(x) (a sequence applies in order, the first one nearest the input). The input keeps its
    name, shape and signature: callers feed the model as before. Returns the new ops' output names.

    Transforms are onnx_edit.InputTransform values (or their dicts) on the model's own axes: permute ->
    TRANSPOSE; reinterpret -> TRANSPOSE then RESHAPE back to the input's shape (so a model that reshapes
    where it should transpose gets the transposed image); channel_reverse -> REVERSE_V2 on the axis;
    affine -> MUL and ADD by per-channel constants that broadcast (float inputs only)."""
    sg = model.subgraphs[subgraph]
    if not len(sg.inputs):
        raise ValueError("the model has no input")
    index = int(sg.inputs[0])
    shape, steps = _shape(model, index, subgraph), []
    for step in _transform_list(transform):
        new_steps, shape = _transform_steps(step, shape, _type_name(sg.tensors[index]))
        steps += new_steps
    if not steps:
        return []
    return _insert_after(model, index, steps, f"{tensor_name(model, index, subgraph)}/transform", subgraph=subgraph)


def _transform_list(transform) -> list:
    from .onnx_edit import InputTransform

    def one(value):
        if isinstance(value, Mapping):
            return InputTransform(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        return value

    many = isinstance(transform, (list, tuple)) and not hasattr(transform, "kind")
    return [one(t) for t in transform] if many else [one(transform)]


def _transform_steps(step, shape: tuple[int, ...], dtype: str) -> tuple[list[OpStep], tuple[int, ...]]:
    """The ops computing one transform of a tensor shaped `shape`, and the shape they produce."""
    rank = len(shape)
    if step.kind == "permute":
        return [_transpose_step(shape, list(step.perm))], tuple(shape[p] for p in step.perm)
    if step.kind == "reinterpret":
        perm = [step.from_layout.index(axis) for axis in step.to_layout]
        target = [-1, *shape[1:]]
        reshape = OpStep("RESHAPE", (np.asarray(target, np.int32),), shape, "ReshapeOptions", {"new_shape": target})
        return [_transpose_step(shape, perm), reshape], shape
    if step.kind == "channel_reverse":
        return [OpStep("REVERSE_V2", (np.asarray([step.axis % rank], np.int32),), None, "ReverseV2Options")], shape
    if step.kind == "affine":
        return _affine_steps(step, shape, dtype), shape
    raise ValueError(f"unknown input transform {step.kind!r}")


def _transpose_step(shape: tuple[int, ...], perm: list[int]) -> OpStep:
    if sorted(perm) != list(range(len(shape))):
        raise ValueError(f"permutation {perm} does not fit a rank-{len(shape)} input")
    return OpStep("TRANSPOSE", (np.asarray(perm, np.int32),), tuple(shape[p] for p in perm), "TransposeOptions")


def _affine_steps(step, shape: tuple[int, ...], dtype: str) -> list[OpStep]:
    """MUL by the scale and ADD of the shift, skipping an identity half; only float inputs take them as
    they are (a quantised input would need its scale changed instead)."""
    scale, shift = np.asarray(step.scale, np.float32), np.asarray(step.shift, np.float32)
    if dtype != "FLOAT32":
        raise ValueError(f"an affine input transform needs a float input, not {dtype}")
    steps = []
    if not np.all(scale == 1.0):
        steps.append(OpStep("MUL", (_channel_shaped(scale, shape, step.axis),), None, "MulOptions"))
    if not np.all(shift == 0.0):
        steps.append(OpStep("ADD", (_channel_shaped(shift, shape, step.axis),), None, "AddOptions"))
    return steps


def _channel_shaped(values: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Per-channel values shaped to broadcast along `axis` (a single value stays a scalar)."""
    if values.size == 1:
        return values.reshape(())
    axis %= len(shape)
    if shape[axis] != values.size:
        raise ValueError(f"{values.size} per-channel values for an axis of size {shape[axis]}")
    broadcast = [1] * len(shape)
    broadcast[axis] = values.size
    return values.reshape(broadcast)


# ---------------------------------------------------------------- removing ops


LAYOUT_OPS = ("RESHAPE", "TRANSPOSE")
MAX_CHAIN = 8  # ops in one reinterpreting chain, reshape included


def reinterpreting_chain(model, output_names: Sequence[str], subgraph: int = 0) -> list[str]:
    """The named RESHAPE ops with the RESHAPE/TRANSPOSE ops next to them that bring each tensor back to the
    shape it had: a reshape used where a transpose belongs is undone as a whole. The normalised form a
    finding comes from may not show every op of the chain (its own layout transposes cancel some), so the
    chain is completed here, in the TFLite graph: first after the reshape, else before it."""
    chain: list[str] = []
    for name in output_names:
        op = find_op(model, name, subgraph)
        chain += _shape_restoring_ops(model, op, subgraph, forward=True) or \
            _shape_restoring_ops(model, op, subgraph, forward=False) or [name]
    return list(dict.fromkeys(chain))


def _shape_restoring_ops(model, op_index: int, subgraph: int, forward: bool) -> list[str]:
    """The op and the layout ops after (or before) it, up to where the tensor has its shape back; [] if none."""
    sg = model.subgraphs[subgraph]
    producers = _producers(model, subgraph)
    first = sg.operators[op_index]
    goal = _shape(model, _data_input(model, first, subgraph) if forward else int(first.outputs[0]), subgraph)
    ops = [op_index]
    while len(ops) <= MAX_CHAIN:
        op = sg.operators[ops[-1]]
        edge = int(op.outputs[0]) if forward else _data_input(model, op, subgraph)
        if len(ops) > 1 and _shape(model, edge, subgraph) == goal:
            return [tensor_name(model, int(sg.operators[i].outputs[0]), subgraph) for i in ops]
        readers = _readers(model, edge, subgraph)
        if len(readers) != 1:
            return []
        nearby = readers[0][0] if forward else producers.get(edge)
        if nearby is None or op_name(model, nearby, subgraph) not in LAYOUT_OPS:
            return []
        ops.append(nearby)
    return []


def remove_ops(model, output_names: Sequence[str], subgraph: int = 0) -> list[str]:
    """Remove pass-through ops (an extra activation, RESHAPE, TRANSPOSE, PAD, MUL by a constant...) named
    by their output tensors: their readers read the op's data input (its first computed input) instead,
    so a chain such as RESHAPE -> TRANSPOSE goes as a whole (ops are taken in execution order).

    A removed op writing a graph output hands that tensor to its data input's producer, so the output
    keeps its name and signature; when the data input is a graph input, the op becomes a RESHAPE to its
    own shape (TFLite has no identity op). Op indices shift: look ops up again by output name. Returns
    the output names of the ops removed."""
    sg = model.subgraphs[subgraph]
    indices = sorted({find_op(model, name, subgraph) for name in output_names})
    ops = [sg.operators[i] for i in indices]
    names = [_op_label(model, i, subgraph) for i in indices]
    removed = [_bypass(model, op, subgraph) for op in ops]
    gone = {id(op) for op, out in zip(ops, removed) if out}
    sg.operators = [op for op in sg.operators if id(op) not in gone]
    _release_unused_buffers(model)
    return [name for name, out in zip(names, removed) if out]


def _bypass(model, op, subgraph: int) -> bool:
    """Make the op's readers read its data input; False when it had to stay, as an identity."""
    sg = model.subgraphs[subgraph]
    out, data = int(op.outputs[0]), _data_input(model, op, subgraph)
    outputs = {int(t) for t in sg.outputs}
    if any(int(t) in outputs or _readers(model, int(t), subgraph) for t in op.outputs[1:]):
        raise ValueError(f"{tensor_name(model, out, subgraph)}: further outputs of the op are in use")
    if out not in outputs:
        for reader, position in _readers(model, out, subgraph):
            sg.operators[reader].inputs[position] = data
        return True
    producer = _producers(model, subgraph).get(data)
    if producer is None or data in _graph_io(model, subgraph):
        _become_identity(model, op, data, subgraph)
        return False
    if _shape(model, data, subgraph) != _shape(model, out, subgraph):
        raise ValueError(f"removing the op writing {tensor_name(model, out, subgraph)} changes the output's shape")
    producer_outputs = sg.operators[producer].outputs
    producer_outputs[[int(t) for t in producer_outputs].index(data)] = out
    for reader, position in _readers(model, data, subgraph):
        if sg.operators[reader] is not op:
            sg.operators[reader].inputs[position] = out
    return True


def _data_input(model, op, subgraph: int) -> int:
    """The input a pass-through op passes on: its first computed (non-constant) input."""
    inputs = [int(t) for t in op.inputs if int(t) >= 0]
    return next((t for t in inputs if not is_constant(model, t, subgraph)), inputs[0])


def _become_identity(model, op, data: int, subgraph: int) -> None:
    schema = _schema()
    target = [-1, *_shape(model, int(op.outputs[0]), subgraph)[1:]]
    constant = _new_typed_constant(model, np.asarray(target, np.int32), f"{tensor_name(model, data, subgraph)}/shape", subgraph)
    op.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.RESHAPE, 1)
    op.inputs = np.asarray([data, constant], dtype=np.int32)
    options = schema.ReshapeOptionsT()
    options.newShape = target
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.ReshapeOptions, options


# ---------------------------------------------------------------- activations and clip bounds


def insert_activation(model, tensor: str, kind: str, low: float = -np.inf, high: float = np.inf,
                      subgraph: int = 0) -> list[str]:
    """Insert an activation on a tensor for all its readers (a graph output keeps its tensor), where it
    cannot be fused into the producing op: relu -> RELU, sigmoid -> LOGISTIC, tanh -> TANH, softmax ->
    SOFTMAX (beta 1, last axis), clip -> the RELU op with those bounds (RELU, RELU6, RELU_N1_TO_1,
    RELU_0_TO_1), else MINIMUM and MAXIMUM with scalar bounds (float tensors). Returns the new outputs."""
    index = find_tensor(model, tensor, subgraph)
    steps = _activation_steps(kind, float(low), float(high))
    quantised = _type_name(model.subgraphs[subgraph].tensors[index]) != "FLOAT32"
    if quantised and any(s.op in ("MINIMUM", "MAXIMUM") for s in steps):
        raise ValueError(f"a clip to [{low}, {high}] on a quantised tensor needs its own bounds quantised")
    return _insert_after(model, index, steps, f"{tensor}/{kind}", subgraph=subgraph)


def _activation_steps(kind: str, low: float, high: float) -> list[OpStep]:
    if kind in _UNARY:
        return [OpStep(_UNARY[kind])]
    if kind == "softmax":
        return [OpStep("SOFTMAX", options="SoftmaxOptions", fields={"beta": 1.0})]
    if kind != "clip":
        raise ValueError(f"no TFLite op for a {kind}")
    named = _named_clip(CLIP_OPS, low, high)
    if named is not None:
        return [OpStep(named)]
    steps = [OpStep(op, (np.asarray(bound, np.float32),), None, "MaximumMinimumOptions")
             for op, bound in (("MAXIMUM", low), ("MINIMUM", high)) if np.isfinite(bound)]
    if not steps:
        raise ValueError("a clip without bounds is no op")
    return steps


def _named_clip(table: Mapping[str, tuple[float, float]], low: float, high: float) -> str | None:
    return next((name for name, bounds in table.items() if bounds == (low, high)), None)


def fused_activation_for(low: float, high: float) -> str | None:
    """The fused activation clipping to [low, high] (RELU, RELU6, RELU_N1_TO_1), None if there is none."""
    return _named_clip(FUSED_CLIPS, float(low), float(high))


def can_fuse(model, op_index: int, subgraph: int = 0) -> bool:
    """An op that honours a fused activation and has none yet."""
    options = model.subgraphs[subgraph].operators[op_index].builtinOptions
    return (op_name(model, op_index, subgraph) in FUSING_OPS and options is not None
            and getattr(options, "fusedActivationFunction", None) == 0)


def fused_activation(model, op_index: int, subgraph: int = 0) -> str | None:
    """The op's fused activation ("NONE", "RELU"...), None for ops without the option."""
    return builtin_options(model, op_index, subgraph).get("fusedActivationFunction")


def activation_bounds(model, op_index: int, subgraph: int = 0) -> tuple[float, float] | None:
    """What an op clips its output to: a RELU-family op, a MINIMUM / MAXIMUM with a constant bound, or a
    fused RELU / RELU6 / RELU_N1_TO_1 (NONE: unbounded); None for an op that clips nothing."""
    name = op_name(model, op_index, subgraph)
    if name in CLIP_OPS:
        return CLIP_OPS[name]
    if name in ("MINIMUM", "MAXIMUM"):
        value = float(tensor_array(model, _bound_input(model, op_index, subgraph), subgraph).reshape(-1)[0])
        return (-np.inf, value) if name == "MINIMUM" else (value, np.inf)
    fused = fused_activation(model, op_index, subgraph)
    return {"NONE": (-np.inf, np.inf), **FUSED_CLIPS}.get(fused) if fused is not None else None


def _bound_input(model, op_index: int, subgraph: int) -> int:
    """The constant input of a MINIMUM / MAXIMUM holding its bound (a single value)."""
    op = model.subgraphs[subgraph].operators[op_index]
    constants = [p for p, t in enumerate(op.inputs) if int(t) >= 0 and is_constant(model, int(t), subgraph)]
    if len(constants) != 1 or tensor_array(model, int(op.inputs[constants[0]]), subgraph).size != 1:
        raise ValueError(f"op {op_index} does not clip to one constant bound")
    return int(op.inputs[constants[0]])


def set_activation_bounds(model, op_index: int, low: float, high: float, subgraph: int = 0) -> str:
    """Make an op clip to [low, high]; returns what now clips.

    A RELU-family op becomes the one with those bounds; a MINIMUM / MAXIMUM gets the bound it applies
    (high / low) as its constant; an op with a fused activation gets the fused one with those bounds, or,
    when no fused activation has them (a clip to [0, 3]), none, and MINIMUM / MAXIMUM ops after it. Op
    indices shift in that last case."""
    low, high = float(low), float(high)
    name = op_name(model, op_index, subgraph)
    if name in CLIP_OPS:
        return _switch_clip_op(model, op_index, low, high, subgraph)
    if name in ("MINIMUM", "MAXIMUM"):
        bound = high if name == "MINIMUM" else low
        _set_bound(model, op_index, bound, subgraph)
        return f"{name} bound {bound:g}"
    if fused_activation(model, op_index, subgraph) is None:
        raise ValueError(f"op {op_index} ({name}) clips nothing")
    fused = fused_activation_for(low, high) or ("NONE" if (low, high) == (-np.inf, np.inf) else None)
    if fused is not None:
        set_builtin_options(model, op_index, subgraph, fused_activation_function=fused)
        return f"fused {fused}"
    set_builtin_options(model, op_index, subgraph, fused_activation_function="NONE")
    added = insert_activation(model, _op_label(model, op_index, subgraph), "clip", low, high, subgraph)
    return f"{len(added)} clipping op(s) after the op"


def _set_bound(model, op_index: int, bound: float, subgraph: int) -> None:
    """A float MINIMUM / MAXIMUM's constant set to `bound` (a quantised one would need it quantised)."""
    if _activation_type(model, op_index, subgraph) != "FLOAT32":
        raise ValueError(f"op {op_index} runs on quantised values: its bound cannot be set as a float")
    constant = _bound_input(model, op_index, subgraph)
    position = [int(t) for t in model.subgraphs[subgraph].operators[op_index].inputs].index(constant)
    value = np.full(_shape(model, constant, subgraph), bound, np.float32)
    _set_op_constant(model, op_index, position, value, subgraph)


def _switch_clip_op(model, op_index: int, low: float, high: float, subgraph: int) -> str:
    named = _named_clip(CLIP_OPS, low, high)
    if named is None:
        raise ValueError(f"no TFLite op clips to [{low:g}, {high:g}] alone")
    builtin = getattr(_schema().BuiltinOperator, named)
    model.subgraphs[subgraph].operators[op_index].opcodeIndex = _opcode_index(model, builtin, 1)
    return f"op {named}"


# ---------------------------------------------------------------- padding


def four_sided(padding) -> tuple[int, int, int, int]:
    """Canonical (top, left, bottom, right), or (h, w) for both sides."""
    values = [int(p) for p in padding]
    values = values * 2 if len(values) == 2 else values
    if len(values) != 4 or min(values) < 0:
        raise ValueError(f"padding must be (top, left, bottom, right), got {padding!r}")
    return values[0], values[1], values[2], values[3]


def pad_paddings(model, op_index: int, subgraph: int = 0) -> tuple[int, int, int, int]:
    """A PAD / PADV2 op's spatial padding on its NHWC tensor as canonical (top, left, bottom, right)."""
    rows = _paddings(model, op_index, subgraph)
    return int(rows[1, 0]), int(rows[2, 0]), int(rows[1, 1]), int(rows[2, 1])


def _paddings(model, op_index: int, subgraph: int) -> np.ndarray:
    """The (4, 2) paddings constant of a PAD op on a 4-D tensor, in its stored integer type."""
    name = op_name(model, op_index, subgraph)
    if name not in _PAD_OPS:
        raise ValueError(f"op {op_index} is {name}, not a PAD")
    index = int(model.subgraphs[subgraph].operators[op_index].inputs[1])
    stored = model.subgraphs[subgraph].tensors[index]
    rows = np.rint(tensor_array(model, index, subgraph)).astype(_NUMPY_TYPES[_type_name(stored)])
    if rows.shape != (4, 2):
        raise ValueError(f"PAD op {op_index} pads a rank-{rows.shape[0]} tensor, not an NHWC image")
    return rows


def set_pad_paddings(model, op_index: int, padding, subgraph: int = 0) -> None:
    """Give a PAD / PADV2 op on an NHWC tensor the canonical spatial padding (top, left, bottom, right):
    paddings rows [top, bottom] and [left, right] for H and W, the batch and channel rows kept. The op
    gets its own copy of the constant; call refresh_shapes when the padded size changes."""
    top, left, bottom, right = four_sided(padding)
    rows = _paddings(model, op_index, subgraph)
    rows[1], rows[2] = (top, bottom), (left, right)
    _set_op_constant(model, op_index, 1, rows, subgraph)


def insert_pad(model, op_index: int, padding, subgraph: int = 0) -> str:
    """Zero-pad an op's NHWC data input for that op only, with a PAD op before it: how a conv gets a
    padding that is neither VALID nor SAME (set the op's own padding to VALID). Op indices from the
    producer of that input on shift by one. Returns the PAD's output name."""
    top, left, bottom, right = four_sided(padding)
    source = int(model.subgraphs[subgraph].operators[op_index].inputs[0])
    n, h, w, c = _shape(model, source, subgraph)
    paddings = np.asarray([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
    step = OpStep("PAD", (paddings,), (n, h + top + bottom, w + left + right, c), "PadOptions")
    label = f"{_op_label(model, op_index, subgraph)}/pad"
    return _insert_after(model, source, [step], label, only=op_index, subgraph=subgraph)[0]


# ---------------------------------------------------------------- weight report


@dataclass
class WeightOp:
    """A conv/depthwise/dense op and its stored weight, for the size cost of keeping a layer float.

    weight_tensor is the tensor holding the stored weight (behind a DEQUANTIZE when float16);
    activation_type is the op's input type: FLOAT32 for float and dynamic-range ops, INT8 for
    full-integer ones."""

    op_index: int
    op: str
    output: str
    weight_tensor: int
    weight_type: str
    weight_bytes: int
    float32_bytes: int
    bias_tensor: int
    bias_type: str | None
    bias_bytes: int
    activation_type: str

    @property
    def quantised(self) -> bool:
        return self.weight_type != "FLOAT32"

    @property
    def float_cost_bytes(self) -> int:
        """How many bytes the file grows by when this weight is stored as float32."""
        return self.float32_bytes - self.weight_bytes


def weight_ops(model, subgraph: int = 0) -> list[WeightOp]:
    """Every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op with its stored weight's type and size."""
    sg = model.subgraphs[subgraph]
    producers = _producers(model, subgraph)
    result = []
    for index, op in enumerate(sg.operators):
        name = op_name(model, index, subgraph)
        if name not in WEIGHTED_OPS:
            continue
        weight = _stored(model, int(op.inputs[1]), producers, subgraph)
        bias = _stored(model, int(op.inputs[2]), producers, subgraph) if len(op.inputs) > 2 and int(op.inputs[2]) >= 0 else -1
        weight_tensor = sg.tensors[weight]
        result.append(WeightOp(
            op_index=index, op=name, output=tensor_name(model, int(op.outputs[0]), subgraph),
            weight_tensor=weight, weight_type=_type_name(weight_tensor),
            weight_bytes=len(_buffer_bytes(model, weight_tensor)),
            float32_bytes=4 * int(np.prod(weight_tensor.shape)),
            bias_tensor=bias, bias_type=_type_name(sg.tensors[bias]) if bias >= 0 else None,
            bias_bytes=len(_buffer_bytes(model, sg.tensors[bias])) if bias >= 0 else 0,
            activation_type=_activation_type(model, index, subgraph),
        ))
    return result


def _stored(model, tensor_index: int, producers: dict[int, int], subgraph: int) -> int:
    """The constant behind a DEQUANTIZE output, else the tensor itself."""
    op = producers.get(tensor_index)
    if op is not None and op_name(model, op, subgraph) == "DEQUANTIZE":
        return int(model.subgraphs[subgraph].operators[op].inputs[0])
    return tensor_index


# ---------------------------------------------------------------- full-integer models


def keep_op_float(model, op_index: int, weight=None, bias=None, subgraph: int = 0) -> int:
    """Run one full-integer CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op in float32:
    DEQUANTIZE(int8 input) -> op with float32 weight and bias -> QUANTIZE to the original int8 output.

    weight/bias are effective float values (OIHW / (out, in)); by default the stored int8 ones,
    dequantised. The neighbours keep their scales, so the rest of the model is unchanged. Inserts two
    ops: returns the op's new index (op_index + 1; later ops shift by 2)."""
    schema = _schema()
    sg = model.subgraphs[subgraph]
    name = op_name(model, op_index, subgraph)
    if name not in WEIGHTED_OPS:
        raise ValueError(f"op {op_index} is {name}, not one of {WEIGHTED_OPS}")
    if _activation_type(model, op_index, subgraph) == "FLOAT32":
        raise ValueError(f"op {op_index} ({name}) already runs in float: use set_layer_parameters")
    op = sg.operators[op_index]
    stored_weight, stored_bias = layer_parameters(model, op_index, subgraph)
    weight = stored_weight if weight is None else np.asarray(weight, np.float32)
    bias = stored_bias if bias is None else np.asarray(bias, np.float32).reshape(-1)
    source, target = int(op.inputs[0]), int(op.outputs[0])
    float_in = _float_twin(model, source, subgraph, "dequantized")
    float_out = _float_twin(model, target, subgraph, "float")
    op.inputs[0], op.outputs[0] = float_in, float_out
    set_op_input_float(model, op_index, 1, to_tflite_layout(name, weight), subgraph)
    if bias is not None:
        set_op_input_float(model, op_index, 2, bias, subgraph)
    dequantize = _new_op(model, schema.BuiltinOperator.DEQUANTIZE, 2, [source], [float_in])
    quantize = _new_op(model, schema.BuiltinOperator.QUANTIZE, 1, [float_out], [target])
    sg.operators[op_index:op_index + 1] = [dequantize, op, quantize]
    return op_index + 1


def _float_twin(model, tensor_index: int, subgraph: int, suffix: str) -> int:
    """A new float32 activation tensor shaped like `tensor_index`."""
    schema = _schema()
    like = model.subgraphs[subgraph].tensors[tensor_index]
    tensor = schema.TensorT()
    tensor.name = f"{_text(like.name)}/{suffix}".encode()
    tensor.shape = np.array(like.shape, dtype=np.int32)
    tensor.shapeSignature = None if like.shapeSignature is None else np.array(like.shapeSignature, dtype=np.int32)
    tensor.type = schema.TensorType.FLOAT32
    tensor.buffer = _append_buffer(model, None)
    model.subgraphs[subgraph].tensors.append(tensor)
    return len(model.subgraphs[subgraph].tensors) - 1


def _new_op(model, builtin: int, version: int, inputs: Sequence[int], outputs: Sequence[int]):
    schema = _schema()
    op = schema.OperatorT()
    op.opcodeIndex = _opcode_index(model, builtin, version)
    op.inputs = np.asarray(inputs, dtype=np.int32)
    op.outputs = np.asarray(outputs, dtype=np.int32)
    return op


def _opcode_index(model, builtin: int, version: int) -> int:
    from tensorflow.lite.python import schema_util

    for index, code in enumerate(model.operatorCodes):
        if schema_util.get_builtin_code_from_operator_code(code) == builtin:
            code.version = max(code.version, version)
            return index
    code = _schema().OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # 127: PLACEHOLDER_FOR_GREATER_OP_CODES
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def convert_with_float_layers(model_or_path, representative_data: np.ndarray,
                              float_layer_names: Iterable[str]) -> bytes:
    """Full-integer TFLite conversion that leaves the named layers in float.

    model_or_path: a Keras model, a .keras/.h5 file or a SavedModel directory. float_layer_names: output
    tensor names of the ops to keep float, as the float/int8 TFLite models name them (TFLite Origins).
    Uses TensorFlow's QuantizationDebugger (denylisted_nodes): calibrate once, then quantise everything
    but those ops, with DEQUANTIZE/QUANTIZE at their borders. Input and output stay float32."""
    import tensorflow as tf

    converter = _float_converter(model_or_path)
    batch = np.asarray(representative_data, dtype=np.float32)

    def dataset() -> Iterable[list[np.ndarray]]:
        for image in batch:
            yield [image[np.newaxis]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_layer_names))
    with _quiet():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset, debug_options=options)
        return bytes(debugger.get_nondebug_quantized_model())


def _float_converter(model_or_path):
    from ..runners.tf_runner import load_keras_model, quiet_tensorflow

    tf = quiet_tensorflow()
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if path.is_dir():
            return tf.lite.TFLiteConverter.from_saved_model(str(path))
        model_or_path = load_keras_model(path)
    with _quiet():
        return tf.lite.TFLiteConverter.from_keras_model(model_or_path)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the converter's prints, Python warnings and native calibrator chatter."""
    from ..quiet import native_stderr_silenced

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced():
        warnings.simplefilter("ignore")
        yield
