"""Edit primitives for ONNX models (onnx.ModelProto), the building blocks of repairs in the ONNX format.

Localization speaks the common layer vocabulary of safeconvert.ir (effective OIHW / (out, in) weights,
canonical attribute names, per-channel constants folded into a layer); a repair must be written back
into the file's own form, where the same layer may be a Conv fed by a DequantizeLinear, a MatMul with
an (in, out) weight and a separate Add, or a Conv followed by tf2onnx's Mul + Add. These functions do
that translation one concern at a time.

Every function edits `model` in place (copy it first to keep the original) and ends with
onnx.checker, so a bad edit fails where it is made, not later in ONNX Runtime. Arguments are checked
before anything changes where possible (names, shapes, attribute mappings); an edit that still fails
midway may leave the model partly changed. Only the main graph is
edited; subgraphs (If/Loop bodies) are left alone but their references are respected when pruning.
Nodes are addressed by name, or by their first output when unnamed (what `Origin.name` holds).
A constant shared with another node is never changed behind that node's back: the edited node gets
its own copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Ops whose output is a constant when their inputs are: followed when reading a weight.
_CHAIN_OPS = {"Identity", "Cast", "DequantizeLinear"}
# Constant-producing nodes that may be deleted once nothing reads them.
_PRUNABLE_OPS = {"Constant", "Identity", "Cast", "DequantizeLinear"}
# Canonical attributes that describe a layer but are not settable on it (they follow its weights).
_INFORMATIONAL = {"in_channels", "out_channels", "depthwise", "in_features", "out_features", "data_layout",
                  "kernel_layout", "layout", "out_layout", "out_dtype"}
_INT64_MIN = -(2**63)


# ---------------------------------------------------------------- lookups


def find_node(model, name: str):
    """The node called `name`, else the node whose first output is `name` (unnamed nodes' Origin name)."""
    for node in model.graph.node:
        if node.name == name:
            return node
    for node in model.graph.node:
        if node.output and node.output[0] == name:
            return node
    raise KeyError(f"no ONNX node named {name!r}")


def producer(model, tensor_name: str):
    """The node writing `tensor_name`, or None for graph inputs and initializers."""
    for node in model.graph.node:
        if tensor_name in node.output:
            return node
    return None


def consumers(model, tensor_name: str) -> list[tuple[Any, int]]:
    """(node, input position) for every main-graph use of `tensor_name`."""
    return [(node, i) for node in model.graph.node for i, name in enumerate(node.input) if name == tensor_name]


def _initializer(model, name: str):
    return next((init for init in model.graph.initializer if init.name == name), None)


def _graph_outputs(model) -> set[str]:
    return {o.name for o in model.graph.output}


def _data_input(model):
    """The single graph input that is not an initializer."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"expected one graph input, found {len(inputs)}")
    return inputs[0]


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _all_names(model) -> set[str]:
    graph = model.graph
    names = {n.name for n in graph.node}
    names |= {t for n in graph.node for t in (*n.input, *n.output)}
    names |= {i.name for i in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}
    return names


def _unique(model, base: str) -> str:
    """A name no node, tensor or initializer uses yet."""
    taken = _all_names(model)
    if base not in taken:
        return base
    n = 1
    while f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"


def _use_count(model, tensor_name: str) -> int:
    uses = sum(1 for node in model.graph.node for name in node.input if name == tensor_name)
    uses += sum(1 for name in _subgraph_refs(model.graph) if name == tensor_name)
    return uses + (1 if tensor_name in _graph_outputs(model) else 0)


def _subgraph_refs(graph) -> list[str]:
    """Names read inside If/Loop/Scan bodies (they may refer to outer-scope tensors)."""
    import onnx

    refs: list[str] = []
    for node in graph.node:
        for attr in node.attribute:
            bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for body in bodies:
                refs += [name for inner in body.node for name in inner.input]
                refs += [o.name for o in body.output]
                refs += _subgraph_refs(body)
    return refs


def check(model) -> None:
    """onnx.checker on the edited model; a rejection is a ValueError, like every refused edit here."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"the edit leaves an invalid ONNX model: {str(exc).splitlines()[0]}") from exc


# ---------------------------------------------------------------- constants


def constant_value(model, tensor_name: str) -> np.ndarray:
    """The value of a constant tensor: an initializer, a Constant node's output, or the end of an
    Identity / Cast / DequantizeLinear chain over those (so a quantised or float16 weight reads as the
    float values the consuming node sees). Raises ValueError if the tensor is computed from the input."""
    from onnx import numpy_helper

    if not tensor_name:
        raise ValueError("empty tensor name (an absent optional input)")
    init = _initializer(model, tensor_name)
    if init is not None:
        return numpy_helper.to_array(init)
    node = producer(model, tensor_name)
    if node is None:
        raise ValueError(f"{tensor_name!r} is a graph input, not a constant")
    if node.op_type == "Constant":
        return _constant_node_value(node)
    if node.op_type == "Identity":
        return constant_value(model, node.input[0])
    if node.op_type == "Cast":
        return constant_value(model, node.input[0]).astype(_np_dtype(_attr(node, "to")))
    if node.op_type == "DequantizeLinear":
        return _dequantize(model, node)
    raise ValueError(f"{tensor_name!r} is computed by {node.op_type} {node.name!r}, not a constant")


def is_constant(model, tensor_name: str) -> bool:
    """Whether `constant_value` can read the tensor."""
    try:
        constant_value(model, tensor_name)
        return True
    except ValueError:
        return False


def _constant_node_value(node) -> np.ndarray:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name == "value":
            return numpy_helper.to_array(value)
        if attr.name in ("value_float", "value_floats"):
            return np.asarray(value, dtype=np.float32)
        if attr.name in ("value_int", "value_ints"):
            return np.asarray(value, dtype=np.int64)
    raise ValueError(f"Constant {node.name!r} holds no numeric value")


def _dequantize(model, node) -> np.ndarray:
    """(x - zero_point) * scale, per tensor, per axis or per block, as DequantizeLinear computes it."""
    x = constant_value(model, node.input[0]).astype(np.float32)
    scale = constant_value(model, node.input[1])
    has_zero_point = len(node.input) > 2 and node.input[2]
    zero_point = constant_value(model, node.input[2]).astype(np.float32) if has_zero_point else np.zeros(1, np.float32)
    out_dtype = scale.dtype
    if scale.size > 1:
        axis = int(_attr(node, "axis", 1)) % x.ndim
        block = int(_attr(node, "block_size", 0))
        scale, zero_point = _broadcast_quant(scale, x, axis, block), _broadcast_quant(zero_point, x, axis, block)
    return ((x - zero_point.astype(np.float32)) * scale.astype(np.float32)).astype(out_dtype)


def _broadcast_quant(values: np.ndarray, x: np.ndarray, axis: int, block: int) -> np.ndarray:
    if values.size == 1:
        return values.reshape(())
    if block:
        return np.repeat(values, block, axis=axis)[tuple(slice(0, s) for s in x.shape)]
    shape = [1] * x.ndim
    shape[axis] = values.size
    return values.reshape(shape)


def set_constant(model, tensor_name: str, array) -> None:
    """Make `tensor_name` hold `array` for every node that reads it.

    An initializer or Constant keeps its element type (the readers expect it); a tensor produced by a
    Cast / DequantizeLinear chain becomes a plain initializer of the chain's output type (float32 for a
    quantised or float16 weight), and the chain is deleted if nothing else uses it."""
    import onnx
    from onnx import numpy_helper

    init = _initializer(model, tensor_name)
    node = producer(model, tensor_name) if init is None else None
    if init is None and node is None:
        raise ValueError(f"{tensor_name!r} is a graph input, not a constant")
    dtype = constant_value(model, tensor_name).dtype
    value = np.asarray(array).astype(dtype)
    if init is not None:
        init.CopyFrom(numpy_helper.from_array(value, tensor_name))
        _sync_declared_input(model, tensor_name, value)
    elif node.op_type == "Constant":
        del node.attribute[:]
        node.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(value)))
    else:
        model.graph.node.remove(node)
        model.graph.initializer.append(numpy_helper.from_array(value, tensor_name))
    _forget_shape(model, tensor_name)
    _prune(model)
    check(model)


def set_input_constant(model, node_name: str, input_index: int, array) -> str:
    """Give input `input_index` of one node the constant `array`; returns the tensor name it now reads.

    A constant only this node reads is rewritten in place (see `set_constant`); one shared with other
    nodes, an absent optional input or a computed tensor is replaced by a new initializer for this node
    only. The element type is the one the node saw before (float32 through a quantised or float16
    chain), else float32 for float arrays."""
    from onnx import numpy_helper

    node = find_node(model, node_name)
    current = node.input[input_index] if input_index < len(node.input) else ""
    if current and is_constant(model, current) and _use_count(model, current) == 1:
        set_constant(model, current, array)
        return current
    dtype = constant_value(model, current).dtype if current and is_constant(model, current) else _float32(array).dtype
    value = np.asarray(array).astype(dtype)
    name = _unique(model, f"{current or (node.name or node.output[0]) + '_input' + str(input_index)}_edit")
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    while len(node.input) <= input_index:
        node.input.append("")
    node.input[input_index] = name
    _prune(model)
    check(model)
    return name


def _float32(array) -> np.ndarray:
    value = np.asarray(array)
    return value.astype(np.float32) if value.dtype.kind == "f" else value


def _sync_declared_input(model, name: str, value: np.ndarray) -> None:
    """Initializers listed as graph inputs (IR < 4) must declare their shape."""
    for graph_input in model.graph.input:
        if graph_input.name == name:
            dims = graph_input.type.tensor_type.shape.dim
            del dims[:]
            for size in value.shape:
                dims.add().dim_value = int(size)


def _forget_shape(model, name: str) -> None:
    kept = [v for v in model.graph.value_info if v.name != name]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def _forget_shapes(model) -> None:
    """Drop inferred shapes: after a structural edit they may be stale, and ONNX Runtime re-infers them."""
    del model.graph.value_info[:]


def _prune(model) -> None:
    """Delete constant-producing nodes and initializers nothing reads any more."""
    graph = model.graph
    while True:
        used = {name for node in graph.node for name in node.input} | set(_subgraph_refs(graph)) | _graph_outputs(model)
        dead = [n for n in graph.node if n.op_type in _PRUNABLE_OPS and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | set(_subgraph_refs(graph)) | _graph_outputs(model)
    kept = [init for init in graph.initializer if init.name in used]
    if len(kept) != len(graph.initializer):
        dropped = {init.name for init in graph.initializer} - {init.name for init in kept}
        del graph.initializer[:]
        graph.initializer.extend(kept)
        inputs = [i for i in graph.input if i.name not in dropped]
        del graph.input[:]
        graph.input.extend(inputs)


# ---------------------------------------------------------------- layer parameters


def set_layer_parameters(model, anchor_node: str, weight, bias=None, neutralise_nodes: Iterable[str] = ()) -> None:
    """Write a layer's EFFECTIVE parameters (as safeconvert.ir.layers reports them) into its anchor node.

    weight: OIHW for Conv; (out, in) for Gemm (stored transposed unless transB) and MatMul (stored as
    (in, out)). bias: (out,), added as a new input when the Conv/Gemm has none; for MatMul it goes into
    the Add that follows (one is inserted if there is none). neutralise_nodes: the per-channel
    Mul/Div/Add/Sub (or BatchNormalization) nodes the effective parameters absorbed; they become
    identities, since the anchor now carries their effect.
    """
    node = find_node(model, anchor_node)
    weight = np.asarray(weight, dtype=np.float64)
    skip: set[str] = set()
    if node.op_type == "Conv":
        _set_conv(model, node, weight, bias)
    elif node.op_type == "Gemm":
        _set_gemm(model, node, weight, bias)
    elif node.op_type == "MatMul":
        skip = _set_matmul(model, node, weight, bias)
    else:
        raise ValueError(f"{node.op_type} {anchor_node!r} is not a Conv, Gemm or MatMul")
    for name in neutralise_nodes:
        if find_node(model, name).name not in skip:
            neutralise_node(model, name)
    check(model)


def _node_key(node) -> str:
    return node.name or node.output[0]


def _expect_shape(model, tensor_name: str, shape: tuple[int, ...], what: str) -> None:
    if tensor_name and is_constant(model, tensor_name):
        old = constant_value(model, tensor_name).shape
        if tuple(old) != tuple(shape):
            raise ValueError(f"{what}: the new value has shape {tuple(shape)}, the model stores {tuple(old)}")


def _set_conv(model, node, weight: np.ndarray, bias) -> None:
    _expect_shape(model, node.input[1], weight.shape, f"Conv {node.name!r} weight (OIHW)")
    set_input_constant(model, _node_key(node), 1, weight)
    if bias is not None:
        set_input_constant(model, _node_key(node), 2, np.asarray(bias).reshape(-1))


def _set_gemm(model, node, weight: np.ndarray, bias) -> None:
    stored = weight if int(_attr(node, "transB", 0)) else weight.T
    _expect_shape(model, node.input[1], stored.shape, f"Gemm {node.name!r} B")
    set_input_constant(model, _node_key(node), 1, stored)
    _set_attr(node, "alpha", 1.0)  # B now holds the effective weight
    if bias is not None:
        bias = np.asarray(bias).reshape(-1)
        current = node.input[2] if len(node.input) > 2 else ""
        if current and is_constant(model, current) and constant_value(model, current).size == bias.size:
            bias = bias.reshape(constant_value(model, current).shape)
        set_input_constant(model, _node_key(node), 2, bias)
        _set_attr(node, "beta", 1.0)


def _set_matmul(model, node, weight: np.ndarray, bias) -> set[str]:
    """Weight into B (in, out); bias into the following Add. Returns the Add's name (not to neutralise)."""
    if not is_constant(model, node.input[1]):
        raise ValueError(f"MatMul {node.name!r} has no constant right-hand operand")
    _expect_shape(model, node.input[1], weight.T.shape, f"MatMul {node.name!r} B (in, out)")
    set_input_constant(model, _node_key(node), 1, weight.T)
    if bias is None:
        return set()
    bias = np.asarray(bias).reshape(-1)
    add, position = _following_bias_add(model, node)
    if add is None:
        name = insert_after(model, node.output[0], "Add", constants=[bias.astype(np.float32)])
        return {name}
    current = constant_value(model, add.input[position])
    value = bias.reshape(current.shape) if current.size == bias.size else bias
    set_input_constant(model, _node_key(add), position, value)
    return {add.name}


def _following_bias_add(model, node):
    """The Add that is the only reader of the MatMul's output and adds a constant, with the constant's position."""
    users = consumers(model, node.output[0])
    if len(users) != 1 or node.output[0] in _graph_outputs(model) or users[0][0].op_type != "Add":
        return None, None
    add, position = users[0]
    other = 1 - position
    return (add, other) if is_constant(model, add.input[other]) else (None, None)


def neutralise_node(model, node_name: str) -> None:
    """Turn a per-channel constant op into an identity: Mul/Div by 1, Add/Sub of 0, BatchNormalization
    with scale 1, bias 0, mean 0, var 1 and epsilon 0. Shared constants are cloned, not changed."""
    node = find_node(model, node_name)
    key = _node_key(node)
    if node.op_type == "BatchNormalization":
        channels = constant_value(model, node.input[1]).shape
        for position, fill in ((1, 1.0), (2, 0.0), (3, 0.0), (4, 1.0)):
            set_input_constant(model, key, position, np.full(channels, fill))
        _set_attr(node, "epsilon", 0.0)
        check(model)
        return
    identity = {"Mul": 1.0, "Div": 1.0, "Add": 0.0, "Sub": 0.0}.get(node.op_type)
    if identity is None:
        raise ValueError(f"cannot neutralise {node.op_type} {node_name!r} (only Mul, Div, Add, Sub, BatchNormalization)")
    position = next((i for i in (1, 0) if is_constant(model, node.input[i])), None)
    if position is None:
        raise ValueError(f"{node.op_type} {node_name!r} has no constant operand")
    if position == 0 and node.op_type in ("Div", "Sub"):
        raise ValueError(f"{node.op_type} {node_name!r} has its constant first: it has no identity value")
    shape = constant_value(model, node.input[position]).shape
    set_input_constant(model, key, position, np.full(shape, identity))


# ---------------------------------------------------------------- attributes


def _attr(node, name: str, default=None):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _set_attr(node, name: str, value) -> None:
    from onnx import helper

    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(name, value))


def _np_dtype(onnx_type: int) -> np.dtype:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))


def _pads(padding) -> list[int]:
    """Canonical (top, left, bottom, right) (or (h, w)) as ONNX pads [top, left, bottom, right]."""
    values = [int(p) for p in padding]
    if len(values) == 2:
        values = values * 2
    if len(values) != 4:
        raise ValueError(f"padding must be (top, left, bottom, right), got {padding!r}")
    return values


_RESIZE_METHODS = {"nearest_neighbor": "nearest", "nearest": "nearest", "linear": "linear", "bilinear": "linear",
                   "cubic": "cubic", "bicubic": "cubic"}
_LIST_ATTRS = {"strides": "strides", "dilation": "dilations", "dilations": "dilations", "pool_size": "kernel_shape",
               "kernel_size": "kernel_shape", "kernel_shape": "kernel_shape"}
_FLAG_ATTRS = {"ceil_mode": "ceil_mode", "count_include_pad": "count_include_pad", "keepdims": "keepdims",
               "exclude_outside": "exclude_outside", "cubic_exclude": "exclude_outside"}
_FLOAT_ATTRS = {"epsilon": "epsilon", "alpha": "alpha", "beta": "beta", "extrapolation_value": "extrapolation_value",
                "cubic_alpha": "cubic_coeff_a", "cubic_coeff_a": "cubic_coeff_a"}
_STRING_ATTRS = {"coordinate_transformation_mode": "coordinate_transformation_mode",
                 "rounding_method": "nearest_mode", "nearest_mode": "nearest_mode"}


@dataclass
class _Edit:
    """One planned change: what it becomes in ONNX, whether that is an attribute (checked against the
    op's schema before anything changes), and how to apply it."""

    target: str
    is_attribute: bool
    apply: Callable[[], None]


def set_attributes(model, node_name: str, ir_attrs: Mapping[str, Any], strict: bool = True) -> list[str]:
    """Set canonical attributes (safeconvert.ir names) on an ONNX node; returns what was changed.

    padding (top, left, bottom, right) -> pads (auto_pad reset to NOTSET), strides, dilation ->
    dilations, groups -> group, pool_size/kernel_size -> kernel_shape, ceil_mode, count_include_pad,
    epsilon, min/max (Clip inputs since opset 11, attributes before), axis (an int, or ReduceMean's
    axes), axes (Transpose perm), keepdims, pad_width / pad_value / pad_mode (Pad), method /
    coordinate_transformation_mode / rounding_method (Resize mode / ... / nearest_mode). ONNX names are
    accepted as they are; descriptive keys (in_channels, depthwise...) are ignored.

    Everything is checked before anything changes: a key with no mapping, or (strict) one the op's
    schema does not have (count_include_pad on a MaxPool), raises ValueError; with strict=False the
    latter are skipped.
    """
    node = find_node(model, node_name)
    allowed = _schema_attributes(model, node)
    edits: list[_Edit] = []
    unknown: list[str] = []
    for key, value in ir_attrs.items():
        if key in _INFORMATIONAL:
            continue
        edit = _plan_attribute(model, node, key, value)
        if edit is None or (edit.is_attribute and allowed is not None and edit.target not in allowed):
            if edit is None or strict:
                unknown.append(key)
            continue
        edits.append(edit)
    if unknown:
        raise ValueError(f"{node.op_type} {node_name!r}: no ONNX attribute or input for {unknown}")
    for edit in edits:
        edit.apply()
    _forget_shapes(model)
    check(model)
    return [edit.target for edit in edits]


def _schema_attributes(model, node) -> set[str] | None:
    """The attribute names the node's op schema defines (None for ops ONNX does not know)."""
    from onnx import defs

    try:
        return set(defs.get_schema(node.op_type, _opset(model), node.domain).attributes)
    except defs.SchemaError:
        return None


def _attribute(node, name: str, value) -> _Edit:
    return _Edit(name, True, lambda: _set_attr(node, name, value))


def _plan_attribute(model, node, key: str, value) -> _Edit | None:
    """How one canonical attribute lands on this node, or None if it has no mapping."""
    if node.op_type == "Pad" and key in ("pad_width", "pads", "padding", "pad_value", "pad_mode"):
        return _plan_pad(model, node, key, value)
    if key in ("padding", "pads"):
        return _plan_pads(node, _pads(value) if key == "padding" else [int(v) for v in value])
    if key in _LIST_ATTRS:
        return _attribute(node, _LIST_ATTRS[key], [int(v) for v in (value if isinstance(value, (list, tuple)) else (value, value))])
    if key in ("groups", "group"):
        return _attribute(node, "group", int(value))
    if key in _FLAG_ATTRS:
        return _attribute(node, _FLAG_ATTRS[key], int(bool(value)))
    if key in _FLOAT_ATTRS:
        return _attribute(node, _FLOAT_ATTRS[key], float(value))
    if key in _STRING_ATTRS:
        return _attribute(node, _STRING_ATTRS[key], str(value))
    if key in ("method", "mode"):
        return _attribute(node, "mode", _RESIZE_METHODS.get(str(value), str(value)) if node.op_type == "Resize" else str(value))
    if key in ("min", "max") and node.op_type == "Clip":
        return _plan_clip_bound(model, node, key, float(value))
    if key in ("axis", "axes"):
        return _plan_axis(model, node, value)
    return None


def _plan_pads(node, pads: list[int]) -> _Edit:
    def apply() -> None:
        _set_attr(node, "pads", pads)
        if _attr(node, "auto_pad") not in (None, b"NOTSET", "NOTSET"):
            _set_attr(node, "auto_pad", "NOTSET")

    return _Edit("pads", True, apply)


def _plan_input(model, node, position: int, value: np.ndarray, target: str) -> _Edit:
    return _Edit(target, False, lambda: set_input_constant(model, _node_key(node), position, value))


def _plan_clip_bound(model, node, key: str, value: float) -> _Edit:
    if _opset(model) < 11:
        return _attribute(node, key, value)
    position = 1 if key == "min" else 2
    current = node.input[position] if len(node.input) > position else ""
    dtype = constant_value(model, current).dtype if current and is_constant(model, current) else np.float32
    return _plan_input(model, node, position, np.asarray(value, dtype=dtype), f"input {key}")


def _plan_axis(model, node, value) -> _Edit:
    if node.op_type == "Transpose":
        return _attribute(node, "perm", [int(v) for v in value])
    if node.op_type.startswith("Reduce"):
        axes = [int(v) for v in (value if isinstance(value, (list, tuple)) else (value,))]
        if _opset(model) >= 18 or (node.op_type == "ReduceSum" and _opset(model) >= 13):
            return _plan_input(model, node, 1, np.asarray(axes, dtype=np.int64), "input axes")
        return _attribute(node, "axes", axes)
    return _attribute(node, "axis", int(value))


def _plan_pad(model, node, key: str, value) -> _Edit:
    """Pad node: relax pad_width [d0_before, d0_after, d1_before, ...] -> ONNX pads [befores..., afters...]."""
    if key == "pad_mode":
        return _attribute(node, "mode", str(value))
    if key == "pad_value":
        if _opset(model) < 11:
            return _attribute(node, "value", float(value))
        return _plan_input(model, node, 2, np.asarray(value, dtype=np.float32), "input constant_value")
    width = [int(v) for v in value]
    pads = width[0::2] + width[1::2] if key == "pad_width" else width
    if _opset(model) < 11:
        return _attribute(node, "pads", pads)
    return _plan_input(model, node, 1, np.asarray(pads, dtype=np.int64), "input pads")


def zero_pad_node(model, pad_node: str) -> None:
    """Make a Pad node pad nothing (when the following conv's own pads take its job over)."""
    node = find_node(model, pad_node)
    if node.op_type != "Pad":
        raise ValueError(f"{pad_node!r} is a {node.op_type}, not a Pad")
    if _opset(model) < 11:
        _set_attr(node, "pads", [0] * len(_attr(node, "pads")))
    else:
        size = constant_value(model, node.input[1]).size
        set_input_constant(model, _node_key(node), 1, np.zeros(size, dtype=np.int64))
    _forget_shapes(model)
    check(model)


# ---------------------------------------------------------------- graph structure


def _constant_inputs(model, op_type: str, constants, domain: str) -> list[str]:
    """Initializers for an op's extra inputs; a mapping is ordered by the op schema's input names."""
    from onnx import defs, numpy_helper

    if constants is None:
        return []
    if isinstance(constants, Mapping):
        schema = defs.get_schema(op_type, _opset(model), domain)
        names = [i.name for i in schema.inputs][1:]
        unknown = set(constants) - set(names)
        if unknown:
            raise ValueError(f"{op_type} has no inputs {sorted(unknown)} (inputs: {names})")
        last = max(names.index(k) for k in constants) if constants else -1
        values = [constants.get(name) for name in names[: last + 1]]
    else:
        values = list(constants)
    result = []
    for value in values:
        if value is None:
            result.append("")
            continue
        name = _unique(model, f"{op_type.lower()}_const")
        array = np.asarray(value, dtype=np.float32) if isinstance(value, (int, float)) else _float32(value)
        model.graph.initializer.append(numpy_helper.from_array(array, name))
        result.append(name)
    return result


def insert_after(model, tensor_name: str, op_type: str, attrs: Mapping[str, Any] | None = None,
                 constants: Sequence | Mapping | None = None, domain: str = "") -> str:
    """Insert `op_type` on `tensor_name` and make every reader (and a graph output) see its result.

    constants are the op's further inputs, in order, or by schema name ({"min": 0, "max": 6} for Clip);
    Python numbers and float arrays become float32 initializers, other arrays keep their type (int64
    pads, axes...). A graph output keeps its name: the new node writes it and the
    old producer's output is renamed. Returns the new node's name."""
    from onnx import helper

    extra = _constant_inputs(model, op_type, constants, domain)
    name = _unique(model, f"{tensor_name.split(':')[0]}_{op_type}")
    source = producer(model, tensor_name)
    graph_inputs = {i.name for i in model.graph.input}
    if tensor_name in _graph_outputs(model):
        if source is None or tensor_name in graph_inputs:
            raise ValueError(f"{tensor_name!r} is both a graph input and output")
        renamed = _unique(model, f"{tensor_name}_before_{op_type}")
        _rename_tensor(model, tensor_name, renamed, keep_graph_outputs=True)
        new = helper.make_node(op_type, [renamed, *extra], [tensor_name], name=name, domain=domain, **dict(attrs or {}))
    else:
        out = _unique(model, f"{name}_out")
        readers = consumers(model, tensor_name)
        new = helper.make_node(op_type, [tensor_name, *extra], [out], name=name, domain=domain, **dict(attrs or {}))
        for reader, position in readers:
            reader.input[position] = out
    position = list(model.graph.node).index(source) + 1 if source is not None else 0
    model.graph.node.insert(position, new)
    _forget_shapes(model)
    check(model)
    return name


def _rename_tensor(model, old: str, new: str, keep_graph_outputs: bool = False) -> None:
    """Rename a tensor in producer outputs and reader inputs (graph outputs kept if asked)."""
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    if not keep_graph_outputs:
        for output in model.graph.output:
            if output.name == old:
                output.name = new
    for info in model.graph.value_info:
        if info.name == old:
            info.name = new


def remove_node(model, node_name: str) -> None:
    """Remove a pass-through-able node (Relu, Clip, Mul by a constant, Transpose, Identity, Pad...):
    its readers read its data input instead. A node writing a graph output gives that name to its data
    input's producer, or becomes an Identity when the data input is a graph input or constant."""
    node = find_node(model, node_name)
    used_outputs = [o for o in node.output[1:] if o and _use_count(model, o)]
    if used_outputs:
        raise ValueError(f"{node.op_type} {node_name!r} has further outputs in use: {used_outputs}")
    data, out = _data_operand(model, node), node.output[0]
    if out in _graph_outputs(model):
        source = producer(model, data)
        if source is None or data in _graph_outputs(model):
            _become_identity(node, data)
        else:
            model.graph.node.remove(node)
            _rename_tensor(model, data, out, keep_graph_outputs=True)
    else:
        for reader, position in consumers(model, out):
            reader.input[position] = data
        model.graph.node.remove(node)
    _prune(model)
    _forget_shapes(model)
    check(model)


def _data_operand(model, node) -> str:
    """The input a pass-through node passes on: its first non-constant input (Mul(c, x) passes x)."""
    return next((name for name in node.input if name and not is_constant(model, name)), node.input[0])


def _become_identity(node, data: str) -> None:
    node.op_type, node.domain = "Identity", ""
    del node.attribute[:]
    del node.input[:]
    node.input.append(data)
    del node.output[1:]


def replace_op(model, node_name: str, op_type: str, attrs: Mapping[str, Any] | None = None,
               constants: Sequence | Mapping | None = None, domain: str = "") -> None:
    """Turn a node into another op, keeping its name, data input and outputs.

    attrs replace all attributes. constants=None keeps the node's other inputs; a sequence or mapping
    (see `insert_after`) replaces them ([] drops them, e.g. Clip -> Relu)."""
    from onnx import helper

    node = find_node(model, node_name)
    node.op_type, node.domain = op_type, domain
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in dict(attrs or {}).items())
    if constants is not None:
        extra = _constant_inputs(model, op_type, constants, domain)
        data = node.input[0]
        del node.input[:]
        node.input.extend([data, *extra])
    _prune(model)
    _forget_shapes(model)
    check(model)


# ---------------------------------------------------------------- input transforms and feature order


@dataclass(frozen=True)
class InputTransform:
    """What the model should see instead of its input x (build one with the classmethods).

    permute: transpose(x, perm). reinterpret: x's values laid out in `from_layout`, transposed to
    `to_layout` and read back through x's declared shape (a Transpose then a Reshape to shape(x)).
    channel_reverse: x reversed along `axis` (RGB <-> BGR). affine: x * scale + shift per channel.
    """

    kind: str
    perm: tuple[int, ...] = ()
    from_layout: str = ""
    to_layout: str = ""
    axis: int = 1
    scale: tuple[float, ...] = (1.0,)
    shift: tuple[float, ...] = (0.0,)

    @classmethod
    def permute(cls, perm: Sequence[int]) -> InputTransform:
        return cls("permute", perm=tuple(int(p) for p in perm))

    @classmethod
    def reinterpret(cls, from_layout: str, to_layout: str) -> InputTransform:
        if sorted(from_layout) != sorted(to_layout):
            raise ValueError(f"{from_layout} and {to_layout} do not name the same axes")
        return cls("reinterpret", from_layout=from_layout, to_layout=to_layout)

    @classmethod
    def channel_reverse(cls, axis: int = 1) -> InputTransform:
        return cls("channel_reverse", axis=int(axis))

    @classmethod
    def affine(cls, scale, shift, axis: int = 1) -> InputTransform:
        return cls("affine", axis=int(axis), scale=tuple(np.ravel(scale).tolist()), shift=tuple(np.ravel(shift).tolist()))


def insert_input_transform(model, transform: InputTransform | Sequence[InputTransform]) -> list[str]:
    """Insert ops right after the graph input so that the model, fed the same tensors as before, computes
    on transform(x) (a sequence applies in order, the first one nearest the input). The input's name and
    declared shape do not change. Returns the new nodes' names.

    To compensate a model that Reshapes NHWC data to NCHW where it should Transpose, use
    reinterpret("NHWC", "NCHW"): the model's Reshape then undoes ours and yields the transposed image."""
    graph_input = _data_input(model)
    rank = len(graph_input.type.tensor_type.shape.dim)
    readers = consumers(model, graph_input.name)
    current, nodes = graph_input.name, []
    for step in (transform,) if isinstance(transform, InputTransform) else tuple(transform):
        current, step_nodes = _transform_nodes(model, step, current, rank)
        nodes += step_nodes
    for reader, position in readers:
        reader.input[position] = current
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    _forget_shapes(model)
    check(model)
    return [n.name for n in nodes]


def _transform_nodes(model, step: InputTransform, source: str, rank: int) -> tuple[str, list]:
    """The nodes computing one transform of `source` (not yet in the graph); returns (result, nodes)."""
    from onnx import helper, numpy_helper

    nodes: list = []
    pending: set[str] = set()

    def fresh(base: str) -> str:
        taken = _all_names(model) | pending
        name, n = f"input_{base}", 0
        while name in taken:
            n += 1
            name = f"input_{base}_{n}"
        pending.add(name)
        return name

    def constant(base: str, value: np.ndarray) -> str:
        name = fresh(base)
        model.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def add(op: str, inputs: list[str], **attrs) -> str:
        name = fresh(op.lower())
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    if step.kind == "permute":
        return add("Transpose", [source], perm=list(step.perm)), nodes
    if step.kind == "reinterpret":
        perm = [step.from_layout.index(axis) for axis in step.to_layout]
        moved = add("Transpose", [source], perm=perm)
        return add("Reshape", [moved, add("Shape", [source])]), nodes
    if step.kind == "channel_reverse":
        starts = constant("reverse_starts", np.array([-1], np.int64))
        ends = constant("reverse_ends", np.array([_INT64_MIN], np.int64))
        axes = constant("reverse_axes", np.array([step.axis % rank], np.int64))
        steps = constant("reverse_steps", np.array([-1], np.int64))
        return add("Slice", [source, starts, ends, axes, steps]), nodes
    if step.kind == "affine":
        scale, shift, out = np.asarray(step.scale, np.float32), np.asarray(step.shift, np.float32), source
        if not np.all(scale == 1.0):
            out = add("Mul", [out, constant("scale", _channel_shaped(scale, rank, step.axis))])
        if not np.all(shift == 0.0):
            out = add("Add", [out, constant("shift", _channel_shaped(shift, rank, step.axis))])
        return out, nodes
    raise ValueError(f"unknown input transform {step.kind!r}")


def _channel_shaped(values: np.ndarray, rank: int, axis: int) -> np.ndarray:
    if values.size == 1:
        return values.reshape(())
    shape = [1] * rank
    shape[axis % rank] = values.size
    return values.reshape(shape)


def insert_gather(model, node_name: str, input_index: int, indices: Sequence[int], axis: int = 1) -> str:
    """Reorder the features one node reads: its input becomes Gather(input, indices, axis), i.e.
    new[..., j] = old[..., indices[j]] (e.g. an NCHW-flattened vector put back in NHWC order before a
    Gemm/MatMul). Other readers of the tensor are unaffected. Returns the Gather's name."""
    from onnx import helper, numpy_helper

    node = find_node(model, node_name)
    source = node.input[input_index]
    name = _unique(model, f"{source.split(':')[0]}_Gather")
    table = _unique(model, f"{name}_indices")
    out = _unique(model, f"{name}_out")
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(indices, dtype=np.int64), table))
    gather = helper.make_node("Gather", [source, table], [out], name=name, axis=int(axis))
    model.graph.node.insert(list(model.graph.node).index(node), gather)
    node.input[input_index] = out
    _forget_shapes(model)
    check(model)
    return name
