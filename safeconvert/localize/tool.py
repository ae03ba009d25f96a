"""TOOL stage: the converter itself — options in effect that change numerics on purpose (quantisation),
or quantised weights found in a target whose route is unknown (`safeconvert repair` on a given file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


# Ops whose weights are the bulk of a model: --keep-quantisation asks that most of theirs stay quantised.
_ONNX_LAYER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger",
                             "QLinearConv", "QLinearMatMul"})
# Ops that read an int8/uint8 constant as quantised data (a stray int8 constant elsewhere is not quantisation).
_ONNX_QUANTISED_READERS = frozenset({"DequantizeLinear", "ConvInteger", "MatMulInteger"})
# Ops between a stored weight and the layer that uses it (QDQ models dequantise, fp16 models may cast).
_ONNX_WEIGHT_PASSES = frozenset({"DequantizeLinear", "Cast", "Identity"})
_TFLITE_LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")
_REDUCED = ("int8", "uint8", "float16")


@dataclass
class QuantisedWeights:
    """What a model stores in reduced precision: the tensors its graph reads as quantised weights, by type,
    and how many of its conv/dense layers' weight values are stored that way."""

    tensors: dict[str, int]
    layer_values: int = 0  # weight values of conv/dense layers
    quantised_layer_values: int = 0  # of those, stored as int8/uint8/float16

    @property
    def share(self) -> float | None:
        """Share of the conv/dense weight values stored quantised (None: the model has no such layer)."""
        return self.quantised_layer_values / self.layer_values if self.layer_values else None

    def add_tensor(self, kind: str) -> None:
        self.tensors[kind] = self.tensors.get(kind, 0) + 1

    def add_layer_weight(self, values: int, kind: str | None) -> None:
        self.layer_values += values
        if kind in _REDUCED:
            self.quantised_layer_values += values


def quantised_tensors(path: Path, fmt: Format) -> dict[str, int]:
    """Count constant weight tensors stored in a reduced precision that the graph reads, by type."""
    return quantised_weights(path, fmt).tensors


def quantised_weights(path: Path, fmt: Format) -> QuantisedWeights:
    """The reduced-precision weights a model's graph actually reads: a constant no node reads, or an int8
    tensor no dequantising/integer op reads, is not quantisation (a decoy would otherwise pass for it)."""
    if fmt is Format.TFLITE:
        return _tflite_quantised(path)
    if fmt is Format.ONNX:
        return _onnx_quantised(path)
    return QuantisedWeights({})


def _tflite_quantised(path: Path) -> QuantisedWeights:
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    types = {getattr(tflite.TensorType, n): n.lower() for n in dir(tflite.TensorType) if not n.startswith("_")}
    result = QuantisedWeights({})
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)

        def stored(index: int) -> bool:
            buffer = model.Buffers(graph.Tensors(index).Buffer())
            return buffer is not None and buffer.DataLength() > 0

        live = _tflite_live_ops(model, graph, whole=g > 0)
        for index in sorted({i for _, inputs, _ in live for i in inputs if i >= 0}):
            kind = types.get(graph.Tensors(index).Type())
            if kind in _REDUCED and stored(index):
                result.add_tensor(kind)
        for index in _tflite_layer_weights(live, stored):
            tensor = graph.Tensors(index)
            values = int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else 1
            result.add_layer_weight(values, types.get(tensor.Type()))
    return result


def _tflite_live_ops(model, graph, whole: bool) -> list[tuple[str, list[int], list[int]]]:
    """(op name, inputs, outputs) of the ops whose results reach the subgraph's outputs (every op of a
    control-flow body, `whole`: it runs when its caller does)."""
    import tflite

    names = {getattr(tflite.BuiltinOperator, n): n for n in dir(tflite.BuiltinOperator) if not n.startswith("_")}
    ops = []
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        inputs = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        outputs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
        ops.append(((name, inputs, outputs), inputs, outputs))
    wanted = {int(i) for i in graph.OutputsAsNumpy()} if graph.OutputsLength() else set()
    if whole:
        wanted |= {out for _, _, outputs in ops for out in outputs}
    return _live(wanted, ops)


def _tflite_layer_weights(live: list[tuple[str, list[int], list[int]]], stored) -> list[int]:
    """The stored weight tensors of conv/dense ops (through a DEQUANTIZE of a float16/int8 constant), each once."""
    producers = {out: (name, inputs) for name, inputs, outputs in live for out in outputs}
    weights: list[int] = []
    for name, inputs, _ in live:
        if name not in _TFLITE_LAYER_OPS or len(inputs) < 2 or inputs[1] < 0:
            continue
        weight = inputs[1]
        producer = producers.get(weight)
        if not stored(weight) and producer is not None and producer[0] == "DEQUANTIZE" and producer[1]:
            weight = producer[1][0]
        if stored(weight) and weight not in weights:
            weights.append(weight)
    return weights


def _live(outputs: set, ops: list[tuple[object, list, list]]) -> list:
    """The ops (op, inputs, outputs), in order, whose results reach `outputs`: a dead branch is not the model."""
    wanted, live = set(outputs), []
    for op, inputs, results in reversed(ops):
        if wanted.intersection(results):
            live.append(op)
            wanted.update(inputs)
    return live[::-1]


def _onnx_subgraphs(node):
    import onnx

    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def _onnx_live_nodes(graph) -> list:
    """The nodes whose results reach the graph's outputs, with every node of the subgraphs they hold."""
    def reads(node) -> list[str]:
        names = list(node.input)
        for sub in _onnx_subgraphs(node):
            names += [name for inner in sub.node for name in inner.input] + [o.name for o in sub.output]
        return names

    nodes = []
    for node in _live({o.name for o in graph.output}, [(n, reads(n), list(n.output)) for n in graph.node]):
        nodes.append(node)
        for sub in _onnx_subgraphs(node):
            nodes += _onnx_live_nodes(sub)
    return nodes


def _onnx_initializers(graph) -> dict:
    found = {init.name: init for init in graph.initializer}
    for node in graph.node:
        for sub in _onnx_subgraphs(node):
            found.update(_onnx_initializers(sub))
    return found


def _onnx_quantised(path: Path) -> QuantisedWeights:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = _onnx_initializers(model.graph)
    nodes = _onnx_live_nodes(model.graph)
    readers: dict[str, set[str]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    result = QuantisedWeights({})
    kinds = {name: onnx.TensorProto.DataType.Name(init.data_type).lower() for name, init in initializers.items()}
    for name, init in initializers.items():
        ops = readers.get(name, set())
        integer = kinds[name] in ("int8", "uint8") and any(op in _ONNX_QUANTISED_READERS or op.startswith("QLinear")
                                                          for op in ops)
        if len(init.dims) >= 2 and (integer or (kinds[name] == "float16" and ops)):
            result.add_tensor(kinds[name])
    for name in _onnx_layer_weights(nodes, initializers):
        result.add_layer_weight(int(np.prod(initializers[name].dims)), kinds[name])
    return result


def _onnx_layer_weights(nodes: list, initializers: dict) -> list[str]:
    """The stored weight tensors (2-D or more) conv/dense nodes read, directly or through a dequantise or cast."""
    producers = {name: node for node in nodes for name in node.output}
    weights: list[str] = []
    for node in nodes:
        if node.op_type not in _ONNX_LAYER_OPS:
            continue
        for name in node.input:
            producer = producers.get(name)
            if name not in initializers and producer is not None and producer.op_type in _ONNX_WEIGHT_PASSES:
                name = producer.input[0]
            if name in initializers and len(initializers[name].dims) >= 2 and name not in weights:
                weights.append(name)
    return weights
