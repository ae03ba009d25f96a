"""Bring an imported module to one canonical form: NCHW activations, OIHW kernels, constants folded.

Whatever layout a model was written in, after this every conv is NCHW/OIHW with a constant kernel, so
layers of two models can be compared parameter by parameter and tapped activations have the same shape.

TVM passes do most of it (DecomposeOpsForInference, ConvertLayout, FoldConstant, CanonicalizeBindings,
DeadCodeElimination). Two gaps need small passes of our own:
- FoldConstant compiles every folded call with LLVM (12 s on MobileNetV2); the calls it meets are almost
  all cheap (permute/reshape of weights, BatchNorm arithmetic), so we fold those with numpy first.
- relax.clip has no layout rule, so ConvertLayout wraps every clip in transposes back to the old layout
  (and everything after a multi-use clip stays in the old layout). Clip is elementwise, so we give it the
  rule TVM already has for relu (InferLayoutUnaryEwise) before running ConvertLayout.
- relax.nn.pad has no layout rule either (and cannot borrow one: its pad widths follow the axes). A permute
  that sits after a chain of single-use unary ops (pad, clip, ...) is hoisted through them and cancelled
  against the permute before the chain, or moved onto the function input (TFLite's leading ZeroPadding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

DESIRED_LAYOUTS = {"relax.nn.conv2d": ["NCHW", "OIHW"]}

# Ops a permute may be hoisted through: one tensor operand, elementwise (layout does not matter).
_UNARY = {
    "relax.clip",
    "relax.nn.relu",
    "relax.nn.gelu",
    "relax.nn.gelu_tanh",
    "relax.nn.silu",
    "relax.nn.leakyrelu",
    "relax.sigmoid",
    "relax.tanh",
    "relax.exp",
    "relax.negative",
    "relax.abs",
    "relax.sqrt",
    "relax.astype",
    "relax.nn.pad",
}


@dataclass
class NormaliseStats:
    """What normalisation did and how long each step took (seconds), for benchmarks and debugging."""

    seconds: dict[str, float] = field(default_factory=dict)
    numpy_folded: int = 0
    permutes_cancelled: int = 0


def normalise(mod, stats: NormaliseStats | None = None):
    """Return the canonical NCHW/OIHW, constant-folded version of an imported module."""
    import tvm
    from tvm import relax

    from .naming import relabel_unnamed

    stats = stats if stats is not None else NormaliseStats()

    def step(name: str, fn) -> None:
        nonlocal mod
        start = time.perf_counter()
        mod = fn(mod)
        stats.seconds[name] = stats.seconds.get(name, 0.0) + time.perf_counter() - start

    ensure_clip_layout_rule()
    step("decompose", lambda m: relabel_unnamed(relax.transform.DecomposeOpsForInference()(m)))
    step("convert_layout", tvm.transform.Sequential([relax.transform.ConvertLayout(DESIRED_LAYOUTS), relax.transform.Normalize()]))
    step("numpy_fold", lambda m: _fixpoint(m, stats))
    step("fold_constant", relax.transform.FoldConstant())
    step("numpy_fold", lambda m: _fixpoint(m, stats))
    step(
        "cleanup",
        tvm.transform.Sequential(
            [relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination(), relax.transform.Normalize()]
        ),
    )
    return mod


def ensure_clip_layout_rule() -> None:
    """Register relu's elementwise layout rule for relax.clip, once per process (TVM 0.27 has none)."""
    import tvm

    clip = tvm.ir.Op.get("relax.clip")
    if clip.get_attr("FRelaxInferLayout") is None:
        rule = tvm.ir.Op.get("relax.nn.relu").get_attr("FRelaxInferLayout")
        tvm.ir.register_op_attr("relax.clip", "FRelaxInferLayout", rule)


def _fixpoint(mod, stats: NormaliseStats, limit: int = 6):
    """Fold cheap constants and cancel permutes until nothing changes (usually two rounds)."""
    from tvm import relax

    from .rebuild import rebuild

    for _ in range(limit):
        counter = {"fold": 0, "permute": 0}

        def rewrite(ctx, old_var, value):
            folded = fold_with_numpy(ctx, value)
            if folded is not None:
                counter["fold"] += 1
                return folded
            hoisted = hoist_permute(ctx, old_var, value)
            if hoisted is not None:
                counter["permute"] += 1
            return hoisted

        mod, changed = rebuild(mod, rewrite=rewrite)
        mod = relax.transform.DeadCodeElimination()(mod)
        stats.numpy_folded += counter["fold"]
        stats.permutes_cancelled += counter["permute"]
        if not changed:
            break
    return mod


# ---------------------------------------------------------------- numpy constant folding


def fold_with_numpy(ctx, value) -> Any:
    """A constant for a cheap call whose tensor operands are all constants, else None."""
    import numpy as np
    import tvm
    from tvm import relax

    if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
        return None
    name = value.op.name
    if name not in _NUMPY_FOLDERS:
        return None
    tensors = [a for a in value.args if isinstance(a, relax.Expr) and not tvm.ir.is_prim_expr(a) and not isinstance(a, relax.ShapeExpr)]
    if not tensors or not all(isinstance(a, tvm.ir.GenericConst) for a in tensors):
        return None
    typed = ctx.builder.normalize(value)
    ty = typed.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        shape = tuple(int(d) for d in ty.shape)
    except (TypeError, ValueError):
        return None
    arrays = [a.value.numpy() for a in tensors]
    try:
        result = _NUMPY_FOLDERS[name](value, arrays, shape)
    except Exception:  # an op variant we do not mirror: leave it to FoldConstant
        return None
    if result is None:
        return None
    result = np.ascontiguousarray(np.asarray(result).astype(str(ty.dtype)).reshape(shape))
    return relax.const(result, str(ty.dtype))


def _permute(call, arrays, shape):
    import numpy as np

    axes = call.attrs.axes
    return np.transpose(arrays[0], None if axes is None else [int(a) for a in axes])


def _same_data_new_shape(call, arrays, shape):
    return arrays[0].reshape(shape)


def _broadcast(call, arrays, shape):
    import numpy as np

    return np.broadcast_to(arrays[0], shape)


def _binary(fn):
    def fold(call, arrays, shape):
        if len(arrays) != 2:
            return None
        return fn(arrays[0], arrays[1])

    return fold


def _unary(fn):
    def fold(call, arrays, shape):
        return fn(arrays[0])

    return fold


def _astype(call, arrays, shape):
    return arrays[0].astype(str(call.attrs.dtype))


def _np():
    import numpy

    return numpy


_NUMPY_FOLDERS = {
    "relax.permute_dims": _permute,
    "relax.reshape": _same_data_new_shape,
    "relax.squeeze": _same_data_new_shape,
    "relax.expand_dims": _same_data_new_shape,
    "relax.flatten": _same_data_new_shape,
    "relax.broadcast_to": _broadcast,
    "relax.add": _binary(lambda a, b: a + b),
    "relax.subtract": _binary(lambda a, b: a - b),
    "relax.multiply": _binary(lambda a, b: a * b),
    "relax.divide": _binary(lambda a, b: a / b),
    "relax.maximum": _binary(lambda a, b: _np().maximum(a, b)),
    "relax.minimum": _binary(lambda a, b: _np().minimum(a, b)),
    "relax.power": _binary(lambda a, b: _np().power(a, b)),
    "relax.sqrt": _unary(lambda a: _np().sqrt(a)),
    "relax.rsqrt": _unary(lambda a: 1.0 / _np().sqrt(a)),
    "relax.negative": _unary(lambda a: -a),
    "relax.exp": _unary(lambda a: _np().exp(a)),
    "relax.abs": _unary(lambda a: _np().abs(a)),
    "relax.astype": _astype,
}


# ---------------------------------------------------------------- permute hoisting and cancelling


def hoist_permute(ctx, old_var, value) -> Any:
    """Rewrite permute(u_k(...u_1(permute(y)))) to u_k(...u_1(y)) when the permutes cancel.

    Also moves a permute that follows unary ops applied to the function's input onto the input
    itself, so that a TFLite model's leading pad ends up in NCHW, next to the conv that absorbs it.
    Returns the replacement (a var: the last re-emitted op) or None.
    """
    import tvm
    from tvm import relax

    if not _is_call(value, "relax.permute_dims"):
        return None
    axes = _axes(value)
    if axes is None:
        return None
    chain = []
    current = value.args[0]
    while isinstance(current, relax.Var):
        bound = ctx.value_of(current)
        if bound is None or not isinstance(bound, relax.Call) or not isinstance(bound.op, tvm.ir.Op):
            break
        if bound.op.name not in _UNARY or ctx.uses_of(current) != 1:
            break
        chain.append(current)
        current = bound.args[0]
    top = ctx.value_of(current) if isinstance(current, relax.Var) else None
    if top is not None and _is_call(top, "relax.permute_dims") and _axes(top) is not None:
        inner = _axes(top)
        if [inner[a] for a in axes] != list(range(len(axes))):
            return None
        base = top.args[0]
    elif top is None and isinstance(current, relax.Var) and not isinstance(current, relax.DataflowVar) and chain:
        # A function parameter: move the layout change onto the input.
        base = ctx.emit(relax.op.permute_dims(current, axes), name="input_nchw")
    else:
        return None
    for var in reversed(chain):
        call = ctx.value_of(var)
        base = ctx.emit(_with_input(call, base, axes), name=var.name, old_var=ctx.origin_of.get(var))
    return base


def _with_input(call, new_input, axes: list[int]):
    """The same unary call applied to the permuted input (pad widths follow their axes)."""
    from tvm import relax

    if call.op.name == "relax.nn.pad":
        width = [int(w) for w in call.attrs.pad_width]
        pairs = [(width[2 * a], width[2 * a + 1]) for a in axes]
        flat = [w for pair in pairs for w in pair]
        return relax.op.nn.pad(new_input, flat, str(call.attrs.pad_mode), float(call.attrs.pad_value))
    return relax.Call(call.op, [new_input, *call.args[1:]], call.attrs, list(call.ty_args))


def _is_call(value, name: str) -> bool:
    import tvm
    from tvm import relax

    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == name


def _axes(call) -> list[int] | None:
    axes = call.attrs.axes
    if axes is None:
        ndim = call.args[0].ty.ndim
        return list(range(ndim - 1, -1, -1)) if ndim >= 0 else None
    return [int(a) for a in axes]
