"""Deterministic names for the tensors and nodes a converter generates, so the same input gives the same bytes.

tf2onnx 1.17 is not byte-reproducible: converting the same Keras file twice (in two processes) gives ONNX
files that differ only in generated names and initializer order. Its name counter (`name__N`) advances in
an order that depends on set iteration over Python objects, so `const_fold_opt__42` in one run is
`const_fold_opt__43` in the next, and the folded constants are listed in a different order. The graph
and every weight are the same. Renumbering the generated names in graph order and sorting the initializers
by first use removes that noise; build systems and caches that compare bytes then see identical outputs.

Only names of the form `<stem>__<N>` (with an optional `:<port>`) are renumbered. The graph's inputs and
outputs keep their names (users address them), and graphs with subgraphs (If/Loop) are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

GENERATED = re.compile(r"^(?P<stem>.+)__(?P<id>\d+)(?P<port>:\d+)?$")


def canonical_names(model):
    """Renumber generated names in graph order and sort initializers by first use; returns `model` (edited in place)."""
    graph = model.graph
    if _has_subgraphs(graph):
        return model
    fixed = {m.group("id") for value in [*graph.input, *graph.output] if (m := GENERATED.match(value.name))}
    renumber = _fresh_ids(_ids_in_order(graph, fixed), fixed)
    if not renumber:
        return model
    rename = _renamer(renumber)
    for node in graph.node:
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
        node.name = rename(node.name)
    for item in [*graph.initializer, *graph.value_info]:
        item.name = rename(item.name)
    _sort_initializers(graph)
    _sort_repeated(graph.value_info, key=lambda value: value.name)
    return model


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
