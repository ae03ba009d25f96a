"""The format graph: which wrapped converter makes which hop, and the shortest route between formats."""

from __future__ import annotations

from collections import deque

from .errors import BadInputError
from .formats import Format
from .wrappers.base import Converter


def registered_converters() -> list[Converter]:
    """Every wrapped converter, in order of preference for the same hop (first is tried first)."""
    from .wrappers.onnx2torch_wrapper import Onnx2TorchConverter
    from .wrappers.tf2onnx_wrapper import Tf2OnnxConverter
    from .wrappers.tflite_wrapper import TfliteConverter
    from .wrappers.torch_onnx_wrapper import TorchOnnxConverter

    return [Tf2OnnxConverter(), TfliteConverter(), Onnx2TorchConverter(), TorchOnnxConverter()]


def plan_route(src: Format, dst: Format, converters: list[Converter] | None = None) -> list[Converter]:
    """Shortest chain of hops from src to dst (breadth-first; ties go to the preferred converter)."""
    if src == dst:
        raise BadInputError(f"source and target are both {src.value}: nothing to convert")
    converters = converters if converters is not None else registered_converters()
    previous: dict[Format, tuple[Format, Converter]] = {}
    queue, seen = deque([src]), {src}
    while queue:
        here = queue.popleft()
        for converter in converters:
            if here in converter.sources and converter.target not in seen:
                seen.add(converter.target)
                previous[converter.target] = (here, converter)
                queue.append(converter.target)
    if dst not in previous:
        raise BadInputError(f"no route from {src.value} to {dst.value} with the converters safeconvert wraps")
    chain, node = [], dst
    while node != src:
        node, converter = previous[node]
        chain.append(converter)
    return list(reversed(chain))


def route_table(converters: list[Converter] | None = None) -> list[dict]:
    """For every ordered pair of formats: the route, its converters, and whether it works here."""
    converters = converters if converters is not None else registered_converters()
    availability = {c.name: c.availability() for c in converters}
    rows = []
    for src in Format:
        for dst in Format:
            if src == dst:
                continue
            try:
                chain = plan_route(src, dst, converters)
            except BadInputError:
                rows.append({"source": src.value, "target": dst.value, "route": None, "works": False, "why": "no converter chain"})
                continue
            missing = [f"{c.name}: {availability[c.name][1]}" for c in chain if not availability[c.name][0]]
            rows.append({
                "source": src.value,
                "target": dst.value,
                "route": " -> ".join([src.value] + [c.target.value for c in chain]),
                "converters": [c.name for c in chain],
                "works": not missing,
                "why": "; ".join(missing) or "ok",
            })
    return rows


def hop_alternatives(chosen: Converter, from_format: Format,
                     converters: list[Converter] | None = None) -> list[Converter]:
    """Every registered converter that makes the same hop as `chosen`, `chosen` first, then by preference.

    The pipeline falls back along this list when a hop's converter fails or its output cannot be verified.
    """
    converters = converters if converters is not None else registered_converters()
    same_hop = [c for c in converters if from_format in c.sources and c.target == chosen.target]
    return [chosen] + [c for c in same_hop if c.name != chosen.name]
