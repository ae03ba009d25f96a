"""The format graph: which wrapped converter makes which hop, and the shortest route between formats.

Routes are planned over the converters usable here first (a converter whose package or interpreter is
missing cannot make its hop), and only when no such route exists over every registered converter, so the
failure names what is missing. Formats no converter writes are explained in NO_WRITER.
"""

from __future__ import annotations

from collections import deque

from .errors import BadInputError
from .formats import Format
from .wrappers.base import ConversionOptions, Converter

# Targets no wrapped converter can write, and why (measured with the versions pinned in pyproject.toml).
NO_WRITER: dict[Format, str] = {
    Format.KERAS: (
        "no converter writes a .keras model that Keras 3 loads in safe mode: onnx2tf's Keras output "
        "(output_keras_v3 / output_h5) is a tf_keras model of TFOpLambda layers that Keras 3.15 cannot load "
        "('Could not locate class Functional', 'Unknown layer: TFOpLambda'), and wrapping a SavedModel in a "
        "TFSMLayer does not make a self-contained .keras file"
    ),
}


def registered_converters(options: ConversionOptions | None = None) -> list[Converter]:
    """Every wrapped converter, in order of preference for the same hop (first is tried first).

    options.torch_dynamo=False puts torch.onnx's TorchScript-based exporter before the dynamo one.
    """
    from .wrappers.keras_export_wrapper import KerasExportConverter
    from .wrappers.onnx2tf_wrapper import (Onnx2TfConverter, Onnx2TfFusedConverter, Onnx2TfFusedTfliteConverter,
                                           Onnx2TfTfliteConverter)
    from .wrappers.onnx2torch_export_wrapper import Onnx2TorchExportConverter
    from .wrappers.onnx2torch_wrapper import Onnx2TorchConverter
    from .wrappers.onnx_tf_wrapper import OnnxTfConverter
    from .wrappers.tf2onnx_savedmodel_wrapper import Tf2OnnxSavedModelConverter
    from .wrappers.tf2onnx_wrapper import Tf2OnnxConverter
    from .wrappers.tflite_wrapper import TfliteConverter
    from .wrappers.torch_onnx_wrapper import TorchOnnxDynamoConverter, TorchOnnxTorchScriptConverter

    torch_exporters: list[Converter] = [TorchOnnxDynamoConverter(), TorchOnnxTorchScriptConverter()]
    if options is not None and not options.torch_dynamo:
        torch_exporters.reverse()
    return [
        Tf2OnnxConverter(), Tf2OnnxSavedModelConverter(),
        TfliteConverter(),
        KerasExportConverter(),
        Onnx2TorchConverter(), Onnx2TorchExportConverter(),
        *torch_exporters,
        Onnx2TfConverter(), Onnx2TfFusedConverter(), OnnxTfConverter(), Onnx2TfTfliteConverter(),
        Onnx2TfFusedTfliteConverter(),
    ]


def plan_route(src: Format, dst: Format, converters: list[Converter] | None = None,
               options: ConversionOptions | None = None) -> list[Converter]:
    """Shortest chain of hops from src to dst over usable converters (ties go to the preferred converter).

    When only unusable converters connect the two formats, that chain is returned anyway: running it fails
    with the missing piece named (pipeline._check_available), rather than a vague "no route".
    """
    if src == dst:
        raise BadInputError(f"source and target are both {src.value}: nothing to convert")
    converters = converters if converters is not None else registered_converters(options)
    usable = [c for c in converters if _usable(c)]
    chain = _shortest(src, dst, usable)
    if chain is None:
        chain = _shortest(src, dst, converters)
    if chain is None:
        raise BadInputError(f"no route from {src.value} to {dst.value}: {_no_route_reason(dst)}")
    return _suit_next_hops(src, chain, usable)


# A hop whose output feeds these converters prefers the named converter for the same hop: torch.onnx's dynamo
# exporter writes opset 18+ graphs (ReduceMean-18) that onnx2torch 1.5.15 cannot convert and onnx's version
# converter cannot take down to 17; the TorchScript-based exporter's graphs convert (measured on MobileNetV2).
PREFERRED_BEFORE: dict[str, str] = {"onnx2torch": "torch.onnx-torchscript", "onnx2torch-export": "torch.onnx-torchscript"}


def _suit_next_hops(src: Format, chain: list[Converter], usable: list[Converter]) -> list[Converter]:
    """Swap a hop's converter for the one the next hop's converter reads best, when that one is usable."""
    suited = list(chain)
    formats = [src] + [c.target for c in chain]
    for index in range(len(suited) - 1):
        wanted = PREFERRED_BEFORE.get(suited[index + 1].name)
        better = next((c for c in usable if c.name == wanted and c.target == suited[index].target
                       and formats[index] in c.sources), None)
        if better is not None:
            suited[index] = better
    return suited


def _usable(converter: Converter) -> bool:
    return converter.availability()[0]


def _shortest(src: Format, dst: Format, converters: list[Converter]) -> list[Converter] | None:
    """Breadth-first search over formats; the first converter (by preference) reaching a format wins."""
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
        return None
    chain, node = [], dst
    while node != src:
        node, converter = previous[node]
        chain.append(converter)
    return list(reversed(chain))


def _no_route_reason(dst: Format) -> str:
    return NO_WRITER.get(dst, "no chain of the converters safeconvert wraps connects them")


def route_table(converters: list[Converter] | None = None) -> list[dict]:
    """For every ordered pair of formats: the route, its converters (and each hop's alternatives), and whether
    it works here; `why` says precisely what is missing when it does not."""
    converters = converters if converters is not None else registered_converters()
    availability = {id(c): c.availability() for c in converters}
    usable = [c for c in converters if availability[id(c)][0]]
    return [_row(src, dst, converters, usable, availability) for src in Format for dst in Format if src != dst]


def _row(src: Format, dst: Format, converters: list[Converter], usable: list[Converter],
         availability: dict[int, tuple[bool, str]]) -> dict:
    row = {"source": src.value, "target": dst.value}
    chain = _shortest(src, dst, usable) or _shortest(src, dst, converters)
    if chain is not None:
        chain = _suit_next_hops(src, chain, usable)
    if chain is None:
        return {**row, "route": None, "converters": [], "alternatives": [], "works": False,
                "why": f"no converter chain: {_no_route_reason(dst)}"}
    formats = [src] + [c.target for c in chain]
    missing = [f"{c.name}: {availability[id(c)][1]}" for c in chain if not availability[id(c)][0]]
    return {
        **row,
        "route": " -> ".join(f.value for f in formats),
        "converters": [c.name for c in chain],
        "alternatives": [[a.name for a in hop_alternatives(c, here, converters)[1:]] for c, here in zip(chain, formats)],
        "works": not missing,
        "why": "; ".join(missing) or "ok",
    }


def hop_alternatives(chosen: Converter, from_format: Format,
                     converters: list[Converter] | None = None) -> list[Converter]:
    """Every registered converter that makes the same hop as `chosen`, `chosen` first, then by preference.

    The pipeline falls back along this list when a hop's converter fails or its output cannot be verified.
    """
    converters = converters if converters is not None else registered_converters()
    same_hop = [c for c in converters if from_format in c.sources and c.target == chosen.target]
    return [chosen] + [c for c in same_hop if c.name != chosen.name]
