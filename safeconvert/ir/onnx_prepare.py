"""ONNX graph preparation before the TVM import: what the frontend needs to see as constants, made constant.

TVM's ONNX frontend folds constants only inside the converters it knows, so shape-like values computed in
the graph reach ops that need them fixed and fail there:
- onnx2torch round trips sort Squeeze axes at run time (a TopK -> Split -> Squeeze/Unsqueeze chain on an
  initializer): the layout conversion then meets a squeeze whose axes are unknown;
- tf2onnx writes Keras Flatten as Shape -> Gather -> Cast -> Slice -> Concat -> Cast -> Reshape of the
  activation itself, so reshape gets a tensor where it needs a shape.
The first kind is folded here with ONNX's reference evaluator (nodes whose inputs are all constants).
The second depends on the input, but its value follows from the static input shape: ONNX shape inference
with data propagation knows each such reshape's output shape, which the importer then uses directly.
"""

from __future__ import annotations

from typing import Any

# Folded by the importer with their quantisation semantics (dequantise.py), or not constant at all.
_NOT_FOLDED = {
    "Constant",
    "QuantizeLinear",
    "DequantizeLinear",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


def fold_constant_nodes(model) -> Any:
    """`model`, or a copy in which every node computed from constants alone is replaced by initializers."""
    if not _foldable_nodes(model):
        return model
    import onnx
    from onnx import numpy_helper

    opsets = {o.domain or "": o.version for o in model.opset_import}
    values = {t.name: t for t in model.graph.initializer}
    folded: dict[str, Any] = {}
    kept = []
    graph_outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        results = _evaluate(node, values, folded, opsets, graph_outputs)
        if results is None or node.op_type == "Constant":
            kept.append(node)
        if results is not None:
            folded.update(results)
    removed = len(model.graph.node) - len(kept)
    if removed == 0:
        return model
    used = {name for node in kept for name in node.input} | graph_outputs
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    constant_outputs = {o for n in kept if n.op_type == "Constant" for o in n.output}
    for name, array in folded.items():
        if name in used and name not in constant_outputs:
            copy.graph.initializer.append(numpy_helper.from_array(array, name))
    return copy


def _foldable_nodes(model) -> bool:
    """Whether any node other than Constant has only constant inputs (cheap: names only)."""
    constant = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constant.update(node.output)
            continue
        inputs = [i for i in node.input if i]
        if inputs and _may_fold(node) and all(i in constant for i in inputs) and not outputs.intersection(node.output):
            return True
    return False


def _may_fold(node) -> bool:
    import onnx

    return (
        node.domain in ("", "ai.onnx")
        and node.op_type not in _NOT_FOLDED
        and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
    )


def _evaluate(node, initializers: dict, folded: dict, opsets: dict, graph_outputs: set[str]) -> dict | None:
    """{output: array} for a Constant node or a foldable node with constant inputs, else None."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    inputs = [i for i in node.input if i]
    if node.op_type != "Constant":
        if not inputs or not _may_fold(node) or any(o in graph_outputs for o in node.output):
            return None
        if not all(i in folded or i in initializers for i in inputs):
            return None
    feeds = {i: folded[i] if i in folded else numpy_helper.to_array(initializers[i]) for i in inputs}
    try:
        results = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
    except Exception:  # an op the reference evaluator lacks: TVM converts it as usual
        return None
    return {name: value for name, value in zip(node.output, results) if name}


def static_reshape_shapes(model, input_name: str, input_shape: tuple[int, ...]) -> dict[str, list[int]]:
    """Output shape of each Reshape whose new shape is computed in the graph, by ONNX shape inference
    with the input fixed to its static shape ({} when there is none or inference fails)."""
    import onnx

    constant = {t.name for t in model.graph.initializer}
    constant |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    computed = [n for n in model.graph.node if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] not in constant]
    if not computed:
        return {}
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name == input_name:
            for dim, size in zip(value.type.tensor_type.shape.dim, input_shape):
                dim.Clear()
                dim.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # custom domains or invalid graphs: leave those reshapes to TVM
        return {}
    known = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    shapes: dict[str, list[int]] = {}
    for node in computed:
        value = known.get(node.output[0])
        dims = value.type.tensor_type.shape.dim if value is not None else []
        if dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            shapes[node.output[0]] = [int(d.dim_value) for d in dims]
    return shapes
