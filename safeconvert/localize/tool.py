"""TOOL stage: the converter itself — options in effect that change numerics on purpose (quantisation),
or quantised weights found in a target whose route is unknown (`safeconvert repair` on a given file)."""

from __future__ import annotations

from pathlib import Path

from ..formats import Format
from ..report import Hop
from .findings import Category, Finding, RepairProposal


def tool_findings(route: list[Hop], target: Path, target_format: Format, quantisation_requested: bool,
                  source: Path | None = None, source_format: Format | None = None) -> list[Finding]:
    findings = [_option_finding(i, hop, quantisation_requested) for i, hop in enumerate(route) if hop.numeric_options]
    if not findings:
        stored = quantised_tensors(target, target_format)
        inherited = source is not None and source_format is not None and quantised_tensors(source, source_format)
        if stored and not inherited:
            findings.append(Finding(
                category=Category.TOOL,
                summary=f"the target stores {sum(stored.values())} weight tensors quantised "
                        f"({', '.join(f'{n} {t}' for t, n in stored.items())}): its converter was run with quantisation",
                target_layer=None,
                evidence={"quantised_tensors": stored},
                repair=RepairProposal("keep_float" if quantisation_requested else "dequantise", {}),
                score=0.5,
            ))
    return findings


def _option_finding(index: int, hop: Hop, requested: bool) -> Finding:
    options = "; ".join(hop.numeric_options)
    if requested:
        summary = f"{hop.converter} quantised the model as asked ({options}); the loss exceeds the verdict"
        repair = RepairProposal("keep_float", {"hop": index, "converter": hop.converter})
    else:
        summary = f"{hop.converter} ran with {options}, which changes the numbers; it was not asked for as quantisation"
        repair = RepairProposal("rerun_converter", {"hop": index, "converter": hop.converter, "drop_numeric_options": True})
    return Finding(Category.TOOL, summary, evidence={"hop": index, "converter": hop.converter, "tool_version": hop.tool_version,
                                                     "options": hop.numeric_options}, repair=repair, score=2.0)


def quantised_tensors(path: Path, fmt: Format) -> dict[str, int]:
    """Count constant weight tensors stored in a reduced precision, by type."""
    if fmt is Format.TFLITE:
        return _tflite_quantised(path)
    if fmt is Format.ONNX:
        return _onnx_quantised(path)
    return {}


def _tflite_quantised(path: Path) -> dict[str, int]:
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    names = {getattr(tflite.TensorType, n): n for n in dir(tflite.TensorType) if not n.startswith("_")}
    counts: dict[str, int] = {}
    graph = model.Subgraphs(0)
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        buffer = model.Buffers(tensor.Buffer())
        if buffer is not None and buffer.DataLength() > 0 and names.get(tensor.Type()) in ("INT8", "UINT8", "FLOAT16"):
            key = names[tensor.Type()].lower()
            counts[key] = counts.get(key, 0) + 1
    return counts


def _onnx_quantised(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for init in model.graph.initializer:
        name = onnx.TensorProto.DataType.Name(init.data_type).lower()
        if name in ("int8", "uint8", "float16") and len(init.dims) >= 2:
            counts[name] = counts.get(name, 0) + 1
    return counts
