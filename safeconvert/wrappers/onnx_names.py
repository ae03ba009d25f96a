"""Deterministic names for the tensors and nodes a converter generates, so the same input gives the same bytes.

tf2onnx 1.17 is not byte-reproducible: converting the same Keras file twice (in two processes) gives ONNX
files that differ only in generated names and initializer order. Its name counter (`name__N`) advances in
an order that depends on set iteration over Python objects, so `const_fold_opt__42` in one run is
`const_fold_opt__43` in the next, and the folded constants are listed in a different order. Its constant
de-duplication keeps an arbitrary member of each group of equal constants, so MobileNetV2's shared ReLU6
bounds are `block16_.../Relu6_min__3` in one run and `block2_.../Relu6_min__3` in the next. The graph and
every weight are the same. Naming generated constants after their first use, renumbering the other
generated names in graph order and sorting the initializers by first use removes that noise; build
systems and caches that compare bytes then see identical outputs.

The counter also lives on between conversions in one process, so the symbolic batch dimension of the
same model is `unk__47` in one run and `unk__54` in a later one; those dimension names are renumbered too.

Only names of the form `<stem>__<N>` (with an optional `:<port>`) are renumbered. The graph's inputs and
outputs keep their names (users address them), and graphs with subgraphs (If/Loop) are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

GENERATED = re.compile(r"^(?P<stem>.+)__(?P<id>\d+)(?P<port>:\d+)?$")


def canonical_names(model):
    """Deterministic generated names and initializer order; returns `model` (edited in place)."""
    graph = model.graph
    if _has_subgraphs(graph):
        return model
    _renumber_dim_params(graph)
    _renumber_generated(graph)
    _name_constants_by_use(graph)  # after renumbering: the consumers' names are stable by then
    _sort_initializers(graph)
    _sort_repeated(graph.value_info, key=lambda value: value.name)
    return model


def _renumber_generated(graph) -> None:
    """`<stem>__<N>` names get N = 1, 2, 3... in order of first appearance (interface names keep theirs)."""
    fixed = {m.group("id") for value in [*graph.input, *graph.output] if (m := GENERATED.match(value.name))}
    rename = _renamer(_fresh_ids(_ids_in_order(graph, fixed), fixed))
    for node in graph.node:
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
        node.name = rename(node.name)
    for item in [*graph.initializer, *graph.value_info]:
        item.name = rename(item.name)


def _renumber_dim_params(graph) -> None:
    """Symbolic dimension names (`unk__47`) in order of appearance; equal names stay equal."""
    dims = [dim for value in [*graph.input, *graph.output, *graph.value_info]
            for dim in value.type.tensor_type.shape.dim if GENERATED.match(dim.dim_param)]
    renamed: dict[str, str] = {}
    for dim in dims:
        stem = GENERATED.match(dim.dim_param).group("stem")
        dim.dim_param = renamed.setdefault(dim.dim_param, f"{stem}__{len(renamed) + 1}")


def _name_constants_by_use(graph) -> None:
    """Generated initializer names become `<first consumer node>__in<slot>`, in graph order."""
    interface = {value.name for value in [*graph.input, *graph.output]}
    first_use: dict[str, tuple[int, int]] = {}
    for index, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            first_use.setdefault(name, (index, slot))
    candidates = sorted((first_use[t.name], t.name) for t in graph.initializer
                        if GENERATED.match(t.name) and t.name not in interface and t.name in first_use)
    renamed = {name for _, name in candidates}
    taken = {name for name in _names_in_order(graph) if name not in renamed} | interface
    new_names: dict[str, str] = {}
    for (index, slot), old in candidates:
        new = f"{graph.node[index].name or 'const'}__in{slot}"
        while new in taken:
            new += "_"
        taken.add(new)
        new_names[old] = new
    for node in graph.node:
        node.input[:] = [new_names.get(name, name) for name in node.input]
    for item in [*graph.initializer, *graph.value_info]:
        item.name = new_names.get(item.name, item.name)


def _has_subgraphs(graph) -> bool:
    import onnx

    kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    return any(attribute.type in kinds for node in graph.node for attribute in node.attribute)


def _names_in_order(graph) -> Iterator[str]:
    for node in graph.node:
        yield from node.input
        yield node.name
        yield from node.output
    for item in [*graph.initializer, *graph.value_info]:
        yield item.name


def _ids_in_order(graph, fixed: set[str]) -> list[str]:
    """Counter values of generated names, in order of first appearance (graph order is stable across runs)."""
    seen: dict[str, None] = {}
    for name in _names_in_order(graph):
        match = GENERATED.match(name)
        if match and match.group("id") not in fixed:
            seen.setdefault(match.group("id"), None)
    return list(seen)


def _fresh_ids(ids: list[str], fixed: set[str]) -> dict[str, str]:
    """Old id -> 1, 2, 3... skipping the ids the graph's inputs and outputs keep, so no two names collide."""
    fresh = (str(n) for n in range(1, len(ids) + len(fixed) + 2) if str(n) not in fixed)
    return {old: next(fresh) for old in ids}


def _renamer(renumber: dict[str, str]):
    def rename(name: str) -> str:
        match = GENERATED.match(name)
        if not match or match.group("id") not in renumber:
            return name
        return f"{match.group('stem')}__{renumber[match.group('id')]}{match.group('port') or ''}"

    return rename


def _sort_initializers(graph) -> None:
    first_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            first_use.setdefault(name, index)
    last = len(graph.node)
    _sort_repeated(graph.initializer, key=lambda tensor: (first_use.get(tensor.name, last), tensor.name))


def _sort_repeated(field, key) -> None:
    """Sort a protobuf repeated message field (they have no in-place sort)."""
    items = sorted(field, key=key)
    copies = [type(item)() for item in items]
    for copy, item in zip(copies, items):
        copy.CopyFrom(item)
    del field[:]
    field.extend(copies)
