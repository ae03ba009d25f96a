"""Keep the link from Relax bindings back to the nodes of the original model file.

TVM 0.27's frontends record no spans, but variable names survive every pass we run. So while a frontend
converts a node we note which Relax vars it produced; afterwards every binding is renamed
`s<index>_<short name>`, where <index> points into the import's table of `Origin`s. Bindings a converter
emitted without telling us (TVM's normaliser binds nested calls as `lv...`) belong to the next node whose
output we did see, because converters emit a node's helpers right before its result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_PREFIX = re.compile(r"^s(\d+)_")
_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")


@dataclass(frozen=True)
class Origin:
    """One node of the original model: what a layer maps back to for reports and repairs.

    name: ONNX node name (or its first output when unnamed); TFLite output tensor name; torch.fx node name.
    op_type: the node's operator in its own format ("Conv", "CONV_2D", "convolution.default").
    outputs: the node's output tensor names (ONNX, TFLite); empty for torch.
    scope: the owning module path for torch.export nodes ("features.1.conv.0"), else "".
    """

    index: int
    name: str
    op_type: str
    outputs: tuple[str, ...] = ()
    scope: str = ""


def var_name(index: int, name: str) -> str:
    """The Relax var name that encodes origin `index` (and a readable tail of its name)."""
    head = name.split(";")[0]
    short = _UNSAFE.sub("_", head).strip("_")[-40:].strip("_")
    return f"s{index}_{short}" if short else f"s{index}_"


def origin_index(name: str) -> int | None:
    """The origin index encoded in a var name, or None for vars the passes created."""
    match = _PREFIX.match(name)
    return int(match.group(1)) if match else None


class OriginRecorder:
    """Collects (origin, produced vars) while a frontend converts nodes, then renames the bindings."""

    def __init__(self) -> None:
        self.origins: list[Origin] = []
        self._marks: dict[Any, int] = {}

    def begin(self, name: str, op_type: str, outputs: tuple[str, ...] = (), scope: str = "") -> int:
        """Register the node about to be converted; returns its origin index."""
        index = len(self.origins)
        self.origins.append(Origin(index, name or (outputs[0] if outputs else f"node{index}"), op_type, tuple(outputs), scope))
        return index

    def mark(self, expr: Any, index: int) -> None:
        """Note that `expr` (a var, or a tuple of vars) is the output of origin `index`.

        A var that already belongs to an earlier node (Identity, Dropout and friends return their input)
        keeps its first owner.
        """
        from tvm import relax

        if isinstance(expr, relax.Tuple):
            for item in expr.fields:
                self.mark(item, index)
        elif isinstance(expr, relax.Var) and expr not in self._marks:
            self._marks[expr] = index

    def apply(self, mod, rewrite=None):
        """Rename every binding of `main` after its origin (optionally applying a fixup rewrite too)."""
        from .rebuild import flat_bindings, rebuild

        bindings = flat_bindings(mod["main"])
        owner: list[int | None] = [self._marks.get(b.var) for b in bindings]
        following: int | None = None
        for i in range(len(owner) - 1, -1, -1):  # unmarked helpers belong to the next marked binding
            if owner[i] is None:
                owner[i] = following
            else:
                following = owner[i]
        previous: int | None = None
        for i, value in enumerate(owner):  # trailing helpers (the output binding) to the last node
            if value is None:
                owner[i] = previous
            else:
                previous = value

        def rename(i: int, old_var) -> str:
            if owner[i] is None:
                return old_var.name
            return var_name(owner[i], self.origins[owner[i]].name)

        new_mod, _ = rebuild(mod, rewrite=rewrite, rename=rename)
        return new_mod


def relabel_unnamed(mod):
    """Give bindings a pass created (e.g. DecomposeOpsForInference's BatchNorm arithmetic) the origin of
    the next binding that has one, the same rule as at import. Returns `mod` unchanged if all are named."""
    from .rebuild import flat_bindings, rebuild

    names = [b.var.name for b in flat_bindings(mod["main"])]
    if all(origin_index(n) is not None for n in names):
        return mod
    owner: list[str | None] = [n if origin_index(n) is not None else None for n in names]
    following: str | None = None
    for i in range(len(owner) - 1, -1, -1):
        if owner[i] is None:
            owner[i] = following
        else:
            following = owner[i]
    new_mod, _ = rebuild(mod, rename=lambda i, var: owner[i] or var.name)
    return new_mod


def origins_of(var_names, table: list[Origin]) -> tuple[Origin, ...]:
    """The distinct origins (in first-seen order) that a group of var names map back to."""
    seen: dict[int, Origin] = {}
    for name in var_names:
        index = origin_index(name)
        if index is not None and index < len(table) and index not in seen:
            seen[index] = table[index]
    return tuple(seen.values())
