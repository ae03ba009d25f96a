"""Rebuild a Relax `main` binding by binding, optionally rewriting, renaming or exposing bindings.

Every IR-level edit safeconvert makes (naming bindings after their origin, reshaping 1-D constants,
folding cheap constant ops with numpy, cancelling permute pairs, exposing taps) is a local rewrite of
one binding. Doing them with one small Python rebuild instead of TVM's generic mutators keeps each
edit a plain function of (binding, already-rewritten value) and keeps variable names — which carry the
link to the original model's node names — exactly where we want them.

Only what our importers produce is supported: a `main` made of binding blocks (usually one dataflow
block) of VarBindings/MatchCasts, with Calls, Tuples, TupleGetItems and leaves as values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Rewrite = Callable[["RebuildContext", Any, Any], Any]
"""rewrite(ctx, old_var, value) -> None to keep `value`, or the replacement expression."""


def flat_bindings(func) -> list:
    """All bindings of a function body, in order, across its blocks."""
    return [b for block in func.body.blocks for b in block.bindings]


def count_uses(func) -> dict:
    """How many times each var is used as an operand (the function's output counts as a use)."""
    from tvm import relax

    uses: dict = {}

    def visit(expr) -> None:
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1
        elif isinstance(expr, relax.Tuple):
            for item in expr.fields:
                visit(item)
        elif isinstance(expr, relax.TupleGetItem):
            visit(expr.tuple_value)
        elif isinstance(expr, relax.Call):
            for arg in expr.args:
                visit(arg)

    for binding in flat_bindings(func):
        visit(binding.value)
    visit(func.body.body)
    return uses


@dataclass
class RebuildContext:
    """What a rewrite callback may look at or use while the new function is being built."""

    builder: Any
    uses: dict  # old var -> use count in the original function
    rewrite: Rewrite | None
    values: dict = field(default_factory=dict)  # new var -> the value it was bound to
    origin_of: dict = field(default_factory=dict)  # new var -> old var it replaces
    changed: int = 0

    def value_of(self, var) -> Any:
        """The (rewritten) value bound to a var of the new function, or None for params/constants."""
        return self.values.get(var)

    def uses_of(self, new_var) -> int:
        """Use count, in the original function, of the binding a new var stands for."""
        old = self.origin_of.get(new_var)
        return self.uses.get(old, 0) if old is not None else 0

    def emit(self, expr, name: str = "", old_var=None):
        """Emit a helper binding; it goes through the rewrite too, so rewrites compose."""
        from tvm import relax

        if self.rewrite is not None and isinstance(expr, relax.Call):
            replaced = self.rewrite(self, old_var, expr)
            if replaced is not None:
                self.changed += 1
                expr = replaced
        if _is_leaf(expr):
            return expr
        var = self.builder.emit(expr, name_hint=name)
        self.values[var] = _bound_value(self.builder, var, expr)
        if old_var is not None:
            self.origin_of[var] = old_var
        return var


def _is_leaf(expr) -> bool:
    import tvm
    from tvm import relax

    return isinstance(expr, (relax.Var, tvm.ir.GenericConst)) or tvm.ir.is_prim_expr(expr)


def substitute(expr, env: dict):
    """Replace vars in an expression (one level deep: values are normalised, so operands are leaves)."""
    from tvm import relax

    if isinstance(expr, relax.Var):
        return env.get(expr, expr)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([substitute(item, env) for item in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(substitute(expr.tuple_value, env), expr.index)
    if isinstance(expr, relax.Call):
        args = [substitute(arg, env) for arg in expr.args]
        if all(a.same_as(b) for a, b in zip(args, expr.args)):
            return expr
        return relax.Call(expr.op, args, expr.attrs, list(expr.ty_args))
    return expr


def rebuild(
    mod,
    rewrite: Rewrite | None = None,
    rename: Callable[[int, Any], str] | None = None,
    expose: Sequence[int] | None = None,
) -> tuple[Any, int]:
    """Return (new module, number of rewrites) with `main` rebuilt binding by binding.

    rewrite: see `Rewrite`; a leaf result (var/constant) replaces the binding without emitting it.
    rename(index, old_var) -> new name for binding `index` (flat order); default keeps names.
    expose: flat binding indices whose values `main` must also return, after its own output, as
    one tuple (output, exposed...) — a tuple even when the list is empty. Exposed bindings are emitted
    as dataflow outputs so they survive.
    """
    from tvm import relax

    func = mod["main"]
    uses = count_uses(func)
    expose_set = {int(i) for i in expose or ()}
    exposed: dict[int, Any] = {}
    builder = relax.BlockBuilder()
    ctx = RebuildContext(builder=builder, uses=uses, rewrite=rewrite)
    env: dict = {}
    attrs = {k: v for k, v in func.attrs.items()} if func.attrs is not None else {}
    attrs.pop("global_symbol", None)
    index = 0
    with builder.function("main", params=list(func.params), attrs=attrs, pure=func.is_pure):
        for block in func.body.blocks:
            is_dataflow = isinstance(block, relax.DataflowBlock)
            scope = builder.dataflow() if is_dataflow else _null_scope()
            with scope:
                for binding in block.bindings:
                    old_var = binding.var
                    name = rename(index, old_var) if rename else old_var.name
                    value = substitute(binding.value, env)
                    must_output = is_dataflow and not isinstance(old_var, relax.DataflowVar)
                    if isinstance(binding, relax.MatchCast):
                        new = builder.match_cast(value, binding.ty, name_hint=name)
                    else:
                        if rewrite is not None:
                            replaced = rewrite(ctx, old_var, value)
                            if replaced is not None:
                                ctx.changed += 1
                                value = replaced
                        if _is_leaf(value) and not must_output and index not in expose_set:
                            env[old_var] = value
                            index += 1
                            continue
                        if must_output or index in expose_set:
                            new = builder.emit_output(value, name_hint=name) if is_dataflow else builder.emit(value, name_hint=name)
                        else:
                            new = builder.emit(value, name_hint=name)
                        ctx.values[new] = _bound_value(builder, new, value)
                    ctx.origin_of[new] = old_var
                    env[old_var] = new
                    if index in expose_set:
                        exposed[index] = new
                    index += 1
        output = substitute(func.body.body, env)
        if expose is not None:
            missing = [i for i in expose if int(i) not in exposed]
            if missing:
                raise ValueError(f"cannot expose bindings {missing}: they were folded away or do not exist")
            output = relax.Tuple([output, *[exposed[int(i)] for i in expose]])
        builder.emit_func_output(output)
    return _replace_main(mod, builder.get()["main"]), ctx.changed


def _bound_value(builder, var, value):
    """The normalised value a var was just bound to (so rewrites can pattern-match on it)."""
    found = builder.lookup_binding(var)
    return found if found is not None else value


def _replace_main(mod, new_func):
    import tvm

    functions = {gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"}
    out = tvm.IRModule(functions, attrs=mod.attrs)
    out["main"] = new_func
    return out


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
