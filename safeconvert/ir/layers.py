"""Enumerate the layers of a normalised module, with attributes and *effective* parameters.

Converters express one layer in different but equivalent ways, so comparing raw bindings would report
differences that are not faults:
- tf2onnx folds BatchNorm into the conv bias, except for depthwise convs (a Mul and an Add follow them);
- TFLite pre-scales depthwise weights by the BatchNorm scale and fuses the bias;
- Keras ZeroPadding2D stays a separate pad op in TFLite, while tf2onnx moves it into the Conv's pads;
- ONNX global average pool is mean(keepdims) + squeeze, TFLite's is mean(keepdims=False), torch's is
  adaptive_avg_pool2d(1) + flatten.
So each conv/dense layer absorbs the zero pad feeding it and the chain of per-channel constant
add/subtract/multiply/divide after it, giving one affine map y = W_eff * x + b_eff, and any layer absorbs
reshapes after it that only add or drop unit dimensions. Two correct conversions then have equal layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .naming import Origin, origins_of

INPUT = -1  # producer index meaning "the model input" in Layer.inputs

_AFFINE_OPS = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide"}
_SHAPE_OPS = {"relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.flatten"}
_LAYOUT_OPS = {"relax.permute_dims", "relax.layout_transform"}
_KINDS = {
    "relax.nn.conv2d": "conv2d",
    "relax.nn.conv2d_transpose": "conv2d_transpose",
    "relax.nn.max_pool2d": "max_pool2d",
    "relax.nn.avg_pool2d": "avg_pool2d",
    "relax.nn.adaptive_avg_pool2d": "adaptive_avg_pool2d",
    "relax.mean": "mean",
    "relax.clip": "clip",
    "relax.nn.relu": "relu",
    "relax.nn.pad": "pad",
    "relax.image.resize2d": "resize",
    "relax.nn.softmax": "softmax",
    "relax.nn.log_softmax": "log_softmax",
    "relax.concat": "concat",
    "relax.permute_dims": "transpose",
    "relax.layout_transform": "transpose",
}
_DROP_ATTRS = {"out_dtype", "out_layout"}


@dataclass
class Layer:
    """One layer of a normalised model, as compared across models.

    index: position in the model's layer list (what `IrModel.run_taps` takes).
    kind: canonical op kind: conv2d, dense, matmul, max_pool2d, avg_pool2d, mean, add, multiply, clip,
        relu, pad, reshape, transpose, resize, softmax, concat, affine, ... (else the relax op name).
    attrs: canonical attributes as plain Python values (strides, padding (top, left, bottom, right) incl. an
        absorbed pad, dilation, groups, depthwise, axis, keepdims, min/max, pad_width, method, ...).
    params: effective constants: conv2d/dense -> weight (OIHW / (out, in)) and bias; affine -> scale and
        shift (per channel); other ops with a constant operand -> const. float64.
    tap: flat binding index of the layer's output in the normalised `main` (what taps expose).
    bindings: flat binding indices that make up the layer (anchor first, then absorbed ones in order).
    anchor: flat binding index of the op that defines the layer's kind.
    absorbed: short names of what was folded into the layer ("pad", "add", "multiply", "squeeze", ...).
    inputs: indices of the layers producing the layer's tensor operands (INPUT = the model input).
    in_shape/out_shape: shape of the first tensor operand / of the tapped output.
    origins: nodes of the original model file this layer came from.
    role: "compute", or "layout" for transposes and unit-dimension reshapes (not aligned by default).
    """

    index: int
    kind: str
    op: str
    attrs: dict[str, Any]
    params: dict[str, np.ndarray]
    tap: int
    bindings: tuple[int, ...]
    anchor: int
    absorbed: tuple[str, ...]
    inputs: tuple[int, ...]
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    origins: tuple[Origin, ...]
    role: str = "compute"
    binding_names: tuple[str, ...] = field(default=(), repr=False)

    @property
    def weight_shape(self) -> tuple[int, ...] | None:
        """Shape of the effective weight (conv/dense), else None."""
        weight = self.params.get("weight")
        return tuple(weight.shape) if weight is not None else None

    @property
    def key(self) -> tuple:
        """What alignment compares: the kind and the weight shape."""
        return (self.kind, self.weight_shape)

    @property
    def name(self) -> str:
        """A readable name: the first origin's name, else the tapped binding's var name."""
        if self.origins:
            return self.origins[0].name
        return self.binding_names[0] if self.binding_names else f"layer{self.index}"

    def describe(self) -> str:
        shape = f" w{list(self.weight_shape)}" if self.weight_shape else ""
        return f"#{self.index} {self.kind}{shape} ({self.name})"


def enumerate_layers(mod, origins: list[Origin] | None = None) -> list[Layer]:
    """List the layers of a normalised module's `main`, in execution order."""
    graph = _Graph(mod["main"])
    groups: list[dict] = []
    claimed: set[int] = set()
    # Anchored layers first: they claim the pad before them and the affine chain after them.
    for i, call in graph.calls():
        kind, weight = _anchor(graph, i, call)
        if kind is None:
            continue
        group = _grow_anchor(graph, i, call, kind, weight)
        groups.append(group)
        claimed.update(group["bindings"])
    for i, call in graph.calls():
        if i in claimed:
            continue
        group = _plain_group(graph, i, call, claimed)
        groups.append(group)
        claimed.update(group["bindings"])
    groups.sort(key=lambda g: g["anchor"])
    layer_of: dict[int, int] = {}
    for index, group in enumerate(groups):
        for b in group["bindings"]:
            layer_of[b] = index
    table = origins or []
    layers: list[Layer] = []
    for index, group in enumerate(groups):
        names = tuple(graph.bindings[b].var.name for b in group["bindings"])
        inputs = tuple(_producer_layer(graph, operand, layer_of) for operand in group["operands"])
        layers.append(
            Layer(
                index=index,
                kind=group["kind"],
                op=graph.op_name(group["anchor"]),
                attrs=group["attrs"],
                params=group["params"],
                tap=group["tap"],
                bindings=tuple(group["bindings"]),
                anchor=group["anchor"],
                absorbed=tuple(group["absorbed"]),
                inputs=inputs,
                in_shape=graph.shape_of(group["operands"][0]) if group["operands"] else None,
                out_shape=graph.shape_of(graph.bindings[group["tap"]].var),
                origins=origins_of(names, table),
                role=group["role"],
                binding_names=(graph.bindings[group["tap"]].var.name, *names),
            )
        )
    return layers


# ---------------------------------------------------------------- graph helpers


class _Graph:
    """Flat bindings of `main` with producer/user lookups."""

    def __init__(self, func) -> None:
        from tvm import relax

        from .rebuild import flat_bindings

        self.func = func
        self.bindings = flat_bindings(func)
        self.index = {b.var: i for i, b in enumerate(self.bindings)}
        self.users: dict[int, list[int]] = {i: [] for i in range(len(self.bindings))}
        for j, binding in enumerate(self.bindings):
            for var in _operand_vars(binding.value):
                if var in self.index:
                    self.users[self.index[var]].append(j)
        self.outputs = {self.index[v] for v in _operand_vars(func.body.body) if v in self.index}
        self.relax = relax

    def calls(self):
        import tvm

        for i, binding in enumerate(self.bindings):
            value = binding.value
            if isinstance(value, self.relax.Call) and isinstance(value.op, tvm.ir.Op):
                yield i, value

    def op_name(self, i: int) -> str:
        value = self.bindings[i].value
        op = getattr(value, "op", None)
        return getattr(op, "name", type(value).__name__)

    def call(self, i: int):
        import tvm

        value = self.bindings[i].value
        if isinstance(value, self.relax.Call) and isinstance(value.op, tvm.ir.Op):
            return value
        return None

    def sole_user(self, i: int) -> int | None:
        """The only binding using binding i, if it has exactly one use and is not a function output."""
        users = self.users[i]
        if len(users) != 1 or i in self.outputs:
            return None
        return users[0]

    def producer(self, expr) -> int | None:
        return self.index.get(expr) if isinstance(expr, self.relax.Var) else None

    def shape_of(self, expr) -> tuple[int, ...] | None:
        ty = getattr(expr, "ty", None)
        shape = getattr(ty, "shape", None)
        if shape is None:
            return None
        try:
            return tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            return None


def _operand_vars(expr) -> list:
    from tvm import relax

    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Tuple):
        return [v for item in expr.fields for v in _operand_vars(item)]
    if isinstance(expr, relax.TupleGetItem):
        return _operand_vars(expr.tuple_value)
    if isinstance(expr, relax.Call):
        return [v for arg in expr.args for v in _operand_vars(arg)]
    return []


def _const(expr) -> np.ndarray | None:
    import tvm

    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    return None


def _tensor_operands(call) -> list:
    import tvm
    from tvm import relax

    return [a for a in call.args if isinstance(a, relax.Expr) and not tvm.ir.is_prim_expr(a) and not isinstance(a, relax.ShapeExpr)]


def _producer_layer(graph: _Graph, operand, layer_of: dict[int, int]) -> int:
    from tvm import relax

    if isinstance(operand, relax.TupleGetItem):
        operand = operand.tuple_value
    producer = graph.producer(operand)
    if producer is None:
        return INPUT
    seen = set()
    while producer not in layer_of and producer not in seen:  # a skipped binding (tuple item, alias)
        seen.add(producer)
        vars_ = _operand_vars(graph.bindings[producer].value)
        if not vars_ or graph.producer(vars_[0]) is None:
            return INPUT
        producer = graph.producer(vars_[0])
    return layer_of.get(producer, INPUT)


# ---------------------------------------------------------------- anchored layers (conv2d, dense)


def _anchor(graph: _Graph, i: int, call) -> tuple[str | None, np.ndarray | None]:
    name = call.op.name
    if name == "relax.nn.conv2d":
        weight = _const(call.args[1])
        if weight is not None and weight.ndim == 4 and str(call.attrs.kernel_layout) == "OIHW":
            return "conv2d", weight.astype(np.float64)
    if name == "relax.matmul":
        weight = _const(call.args[1])
        if weight is not None and weight.ndim == 2:
            return "dense", weight.astype(np.float64).T.copy()  # (in, out) -> (out, in)
    return None, None


def _grow_anchor(graph: _Graph, i: int, call, kind: str, weight: np.ndarray) -> dict:
    bindings = [i]
    absorbed: list[str] = []
    attrs = _plain_attrs(call)
    operand = call.args[0]
    if kind == "conv2d":
        padding = list(attrs.get("padding", (0, 0, 0, 0)))
        if len(padding) == 2:
            padding = padding * 2
        pad_index = graph.producer(operand)
        pad = graph.call(pad_index) if pad_index is not None else None
        if pad is not None and pad.op.name == "relax.nn.pad" and graph.sole_user(pad_index) == i:
            width = [int(w) for w in pad.attrs.pad_width]
            if (
                str(pad.attrs.pad_mode) == "constant"
                and float(pad.attrs.pad_value) == 0.0
                and len(width) == 8
                and width[:4] == [0, 0, 0, 0]
            ):
                padding = [padding[0] + width[4], padding[1] + width[6], padding[2] + width[5], padding[3] + width[7]]
                bindings.insert(0, pad_index)
                absorbed.append("pad")
                operand = pad.args[0]
        attrs["padding"] = tuple(padding)
        out_channels, in_per_group = weight.shape[0], weight.shape[1]
        attrs["kernel_size"] = tuple(weight.shape[2:])
        attrs["in_channels"] = in_per_group * int(attrs.get("groups", 1))
        attrs["out_channels"] = out_channels
        attrs["depthwise"] = int(attrs.get("groups", 1)) > 1 and in_per_group == 1
    else:
        attrs["in_features"], attrs["out_features"] = weight.shape[1], weight.shape[0]
    channels = weight.shape[0]
    scale = np.ones(channels)
    shift = np.zeros(channels)
    current = i
    out_ndim = len(graph.shape_of(graph.bindings[i].var) or ())
    axis = 1 if kind == "conv2d" else out_ndim - 1
    while True:
        user = graph.sole_user(current)
        step = _affine_step(graph, user, graph.bindings[current].var, axis, channels) if user is not None else None
        if step is None:
            break
        op, const, const_first = step
        scale, shift = _apply_affine(op, const, const_first, scale, shift)
        bindings.append(user)
        absorbed.append(op.removeprefix("relax."))
        current = user
    current = _absorb_unit_reshapes(graph, current, bindings, absorbed)
    shape = (channels,) + (1,) * (weight.ndim - 1)
    params = {"weight": weight * scale.reshape(shape), "bias": shift}
    return {
        "kind": kind,
        "anchor": i,
        "attrs": attrs,
        "params": params,
        "tap": current,
        "bindings": bindings,
        "absorbed": absorbed,
        "operands": [operand],
        "role": "compute",
    }


def _affine_step(graph: _Graph, j: int, var, axis: int, channels: int):
    """(op, per-channel constant, constant-is-first-operand) if binding j applies one to `var`."""
    call = graph.call(j)
    if call is None or call.op.name not in _AFFINE_OPS or len(call.args) != 2:
        return None
    first, second = call.args
    if second.same_as(var) and not first.same_as(var):
        const, const_first = _const(first), True
    elif first.same_as(var):
        const, const_first = _const(second), False
    else:
        return None
    if const is None:
        return None
    out_shape = graph.shape_of(graph.bindings[j].var)
    vector = _per_channel(const, out_shape, axis, channels)
    if vector is None:
        return None
    if const_first and call.op.name == "relax.divide":
        return None  # c / x is not affine
    return call.op.name, vector, const_first


def _per_channel(const: np.ndarray, out_shape, axis: int, channels: int) -> np.ndarray | None:
    """The constant as a (channels,) vector if it broadcasts along the channel axis only."""
    if out_shape is None:
        return None
    if const.size == 1:
        return np.full(channels, float(const.reshape(-1)[0]))
    ndim = len(out_shape)
    if const.ndim > ndim:
        return None
    padded = const.reshape((1,) * (ndim - const.ndim) + const.shape)
    for d, size in enumerate(padded.shape):
        if d != axis and size != 1:
            return None
    if padded.shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(padded.reshape(-1).astype(np.float64), (channels,)).copy()


def _apply_affine(op: str, c: np.ndarray, const_first: bool, scale: np.ndarray, shift: np.ndarray):
    """Compose y = scale * x + shift with one more per-channel op."""
    if op == "relax.add":
        return scale, shift + c
    if op == "relax.subtract":
        return (-scale, c - shift) if const_first else (scale, shift - c)
    if op == "relax.multiply":
        return scale * c, shift * c
    return scale / c, shift / c  # divide by a constant


def _absorb_unit_reshapes(graph: _Graph, current: int, bindings: list[int], absorbed: list[str]) -> int:
    """Fold reshapes after `current` that only add or drop size-1 dimensions (they move no data)."""
    while True:
        user = graph.sole_user(current)
        call = graph.call(user) if user is not None else None
        if call is None or call.op.name not in _SHAPE_OPS:
            return current
        before = graph.shape_of(graph.bindings[current].var)
        after = graph.shape_of(graph.bindings[user].var)
        if before is None or after is None or not _unit_reshape(before, after):
            return current
        bindings.append(user)
        absorbed.append(call.op.name.removeprefix("relax."))
        current = user


def _unit_reshape(before: tuple[int, ...], after: tuple[int, ...]) -> bool:
    return [d for d in before if d != 1] == [d for d in after if d != 1]


# ---------------------------------------------------------------- all other layers


def _plain_group(graph: _Graph, i: int, call, claimed: set[int]) -> dict:
    name = call.op.name
    bindings = [i]
    absorbed: list[str] = []
    operands = _tensor_operands(call)
    variables = [a for a in operands if _const(a) is None]
    constants = [a for a in operands if _const(a) is not None]
    attrs = _plain_attrs(call)
    params: dict[str, np.ndarray] = {}
    role = "compute"
    kind = _KINDS.get(name, name.removeprefix("relax.").removeprefix("nn.").removeprefix("image."))
    current = i
    out_shape = graph.shape_of(graph.bindings[i].var)

    if name in _AFFINE_OPS and len(variables) == 1 and constants:
        # A per-channel constant chain that no conv/dense absorbed (e.g. preprocessing, BN after an add).
        axis = 1 if out_shape and len(out_shape) != 2 else (len(out_shape) - 1 if out_shape else 1)
        channels = out_shape[axis] if out_shape else 1
        step = _affine_step(graph, i, variables[0], axis, channels)
        if step is not None:
            kind = "affine"
            scale, shift = _apply_affine(step[0], step[1], step[2], np.ones(channels), np.zeros(channels))
            absorbed.append(name.removeprefix("relax."))
            while True:
                user = graph.sole_user(current)
                nxt = _affine_step(graph, user, graph.bindings[current].var, axis, channels) if user is not None and user not in claimed else None
                if nxt is None:
                    break
                scale, shift = _apply_affine(nxt[0], nxt[1], nxt[2], scale, shift)
                bindings.append(user)
                absorbed.append(nxt[0].removeprefix("relax."))
                current = user
            params = {"scale": scale, "shift": shift}
            attrs = {"axis": axis}
        else:
            params = {"const": _const(constants[0]).astype(np.float64)}
    elif constants:
        params = {"const": _const(constants[0]).astype(np.float64)}

    if name == "relax.clip":
        low, high = float(call.args[1].value), float(call.args[2].value)
        attrs = {"min": low, "max": high}
        if low == 0.0 and high == float("inf"):
            kind, attrs = "relu", {}
    elif name in ("relax.mean", "relax.nn.adaptive_avg_pool2d"):
        in_shape = graph.shape_of(variables[0]) if variables else None
        if name == "relax.nn.adaptive_avg_pool2d":
            size = [int(s) for s in call.attrs.output_size] if call.attrs.output_size is not None else None
            if size and all(s == 1 for s in size):
                kind, attrs = "mean", {"axis": (2, 3)}
        else:
            ndim = len(in_shape) if in_shape else 0
            attrs = {"axis": tuple(sorted(int(a) % ndim for a in call.attrs.axis)) if call.attrs.axis is not None else None}
    elif name in _SHAPE_OPS:
        before = graph.shape_of(variables[0]) if variables else None
        kind = "reshape"
        attrs = {"shape": out_shape}
        if before is not None and out_shape is not None and _unit_reshape(before, out_shape):
            role = "layout"
    elif name in _LAYOUT_OPS:
        role = "layout"
        if name == "relax.permute_dims":
            axes = call.attrs.axes
            attrs = {"axes": tuple(int(a) for a in axes) if axes is not None else None}
    elif name in ("relax.nn.softmax", "relax.nn.log_softmax", "relax.concat") and out_shape:
        attrs["axis"] = int(call.attrs.axis) % len(out_shape)
    elif name in _AFFINE_OPS and len(variables) == 2:
        kind = name.removeprefix("relax.")

    if kind != "reshape" and name not in _LAYOUT_OPS:
        current = _absorb_unit_reshapes(graph, current, bindings, absorbed)
    if kind == "mean":
        in_shape = graph.shape_of(variables[0]) if variables else None
        final = graph.shape_of(graph.bindings[current].var)
        attrs["keepdims"] = bool(in_shape and final and len(final) == len(in_shape))
    return {
        "kind": kind,
        "anchor": i,
        "attrs": attrs,
        "params": params,
        "tap": current,
        "bindings": bindings,
        "absorbed": absorbed,
        "operands": variables,
        "role": role,
    }


def _plain_attrs(call) -> dict[str, Any]:
    """A call's attributes as plain Python values (layouts and output dtypes dropped: all NCHW here)."""
    attrs = call.attrs
    if attrs is None:
        return {}
    info = getattr(type(attrs), "__tvm_ffi_type_info__", None)
    names = [f.name for f in info.fields] if info is not None else []
    out: dict[str, Any] = {}
    for name in names:
        if name in _DROP_ATTRS or name.endswith("layout"):
            continue
        out[name] = _plain(getattr(attrs, name))
    return out


def _plain(value):
    import tvm

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if tvm.ir.is_prim_expr(value) and hasattr(value, "value"):
        return value.value
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        try:
            return tuple(_plain(v) for v in value)
        except TypeError:
            pass
    return str(value)
