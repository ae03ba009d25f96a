"""Static stages: compare every aligned layer at once — parameters (WB), hyperparameters (LH) and the
graph itself (CG: ops missing from or extra in the target). Exact, and needs no image at all."""

from __future__ import annotations

import numpy as np

from .findings import Category, Finding, RepairProposal

# Original-format ops that anchor a conv/dense layer, and the per-channel ops a layer may have absorbed.
ANCHOR_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
              "TRANSPOSE_CONV"}
AFFINE_OPS = {"Mul", "Add", "Sub", "Div", "MUL", "ADD", "SUB", "DIV", "BatchNormalization"}
PAD_OPS = {"Pad", "PAD", "PADV2"}
# Attributes that describe a layer's shape rather than its behaviour: they follow from the weights.
DERIVED_ATTRS = {"kernel_size", "in_channels", "out_channels", "in_features", "out_features", "depthwise",
                 "data_layout", "kernel_layout", "out_layout", "shape"}
FLOAT16_STEP = 2.0 ** -11  # relative rounding step of float16
INT8_STEP = 1.0 / 127.0


def static_findings(alignment, target_layers: list | None = None) -> list[Finding]:
    """WB, LH, CG and TSS findings from an alignment (see safeconvert.ir.align)."""
    from ..ir import diff_pair

    findings: list[Finding] = []
    for pair in alignment.pairs:
        diff = diff_pair(pair)
        attrs = {k: v for k, v in diff.attrs.items() if k not in DERIVED_ATTRS}
        if attrs:
            findings.append(_hyperparameter_finding(pair, attrs))
        if diff.weight_differs():
            findings.append(_weight_finding(pair, diff))
    findings += [_missing_op_finding(layer, alignment) for layer in alignment.source_only]
    for layer in alignment.target_only:
        chain = _reinterpreting_chain(layer, target_layers or [])
        findings.append(_reinterpret_finding(layer, chain) if chain else _extra_op_finding(layer))
    return findings


def _reinterpreting_chain(layer, layers: list) -> list:
    """An extra reshape plus the layout ops around it that bring the tensor back to its own shape: together
    they move the data around (a reshape used where a transpose was meant). Empty when not that.

    The layout ops follow the reshape as the fault was written, or precede it once normalisation has
    cancelled them against its own layout transposes (an NHWC model's RESHAPE + TRANSPOSE becomes
    transpose-to-NHWC + reshape in the NCHW form)."""
    if layer.kind != "reshape" or layer.in_shape is None:
        return []
    return _layout_walk(layer, layers, forward=True) or _layout_walk(layer, layers, forward=False)


def _layout_walk(layer, layers: list, forward: bool) -> list:
    by_index = {l.index: l for l in layers}
    chain, current = [layer], layer
    goal = layer.in_shape if forward else layer.out_shape
    while (current.out_shape if forward else current.in_shape) != goal:
        if forward:
            nearby = [l for l in layers if current.index in l.inputs]
        else:
            nearby = [by_index[i] for i in current.inputs if i in by_index]
        if len(nearby) != 1 or nearby[0].role != "layout":
            return []
        current = nearby[0]
        chain.append(current)
    return chain if len(chain) > 1 else []


def _reinterpret_finding(layer, chain: list) -> Finding:
    nodes = [name for member in chain for name in target_nodes(member)["nodes"]]
    return Finding(
        category=Category.TSS,
        summary=f"the target reshapes a {list(layer.in_shape)} tensor and transposes it back to the same shape: "
                "the values are reinterpreted in another layout's order (a reshape where a transpose belongs)",
        target_layer=layer.name,
        evidence={"target_index": layer.index, "ops": [m.kind for m in chain], "shape": list(layer.in_shape)},
        repair=RepairProposal("remove_op", {"kind": "reshape", "nodes": list(dict.fromkeys(nodes)), "reinterpret": True}),
    )


def target_nodes(layer) -> dict[str, object]:
    """The original-format nodes behind a target layer: its anchor, absorbed per-channel ops, and pads."""
    names = [o.name for o in layer.origins]
    anchor = next((o.name for o in layer.origins if o.op_type in ANCHOR_OPS), names[0] if names else None)
    return {
        "anchor_node": anchor,
        "affine_nodes": [o.name for o in layer.origins if o.op_type in AFFINE_OPS and o.name != anchor],
        "pad_nodes": [o.name for o in layer.origins if o.op_type in PAD_OPS],
        "nodes": names,
        "op_types": [o.op_type for o in layer.origins],
        "output_tensor": next((o.outputs[0] for o in reversed(layer.origins) if o.outputs), None),
    }


def _hyperparameter_finding(pair, attrs: dict) -> Finding:
    changes = ", ".join(f"{name} {src} -> {tgt}" for name, (src, tgt) in attrs.items())
    return Finding(
        category=Category.LH,
        summary=f"{pair.source.kind} hyperparameters differ: {changes}",
        source_layer=pair.source.name,
        target_layer=pair.target.name,
        evidence={"attributes": {k: {"source": _plain(s), "target": _plain(t)} for k, (s, t) in attrs.items()},
                  "source_index": pair.source.index, "target_index": pair.target.index},
        repair=RepairProposal("set_attributes", {"attrs": {k: s for k, (s, _) in attrs.items()}, "kind": pair.target.kind,
                                                  **target_nodes(pair.target)}),
    )


def _weight_finding(pair, diff) -> Finding:
    evidence = {"source_index": pair.source.index, "target_index": pair.target.index, "parameters": {}}
    causes = []
    for name in sorted(set(pair.source.params) & set(pair.target.params)):
        stats = weight_statistics(pair.source.params[name], pair.target.params[name])
        evidence["parameters"][name] = stats
        if stats["relative_error"] > 1e-5:
            causes.append(f"{name}: {stats['cause']} (max rel. error {stats['relative_error']:.2g})")
    if diff.missing_params:
        causes.append(f"parameters present on one side only: {', '.join(diff.missing_params)}")
    return Finding(
        category=Category.WB,
        summary=f"{pair.source.kind} parameters differ: " + "; ".join(causes),
        source_layer=pair.source.name,
        target_layer=pair.target.name,
        evidence=evidence,
        repair=RepairProposal("restore_parameters", {
            "weight": pair.source.params.get("weight", pair.source.params.get("scale")),
            "bias": pair.source.params.get("bias", pair.source.params.get("shift")),
            "kind": pair.target.kind,
            **target_nodes(pair.target),
        }),
    )


def weight_statistics(source: np.ndarray, target: np.ndarray) -> dict:
    """Per-parameter evidence: max abs, relative error, share of elements that differ, and a likely cause."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    scale = float(np.max(np.abs(source))) or 1.0
    if source.shape != target.shape:
        transposed = source.ndim == 2 and target.shape == source.shape[::-1] and np.allclose(target.T, source, rtol=1e-5, atol=1e-7 * scale)
        return {"max_abs": None, "relative_error": float("inf"), "share_differing": 1.0,
                "cause": "transposed" if transposed else f"shape {list(target.shape)} instead of {list(source.shape)}"}
    gap = np.abs(source - target)
    relative = float(gap.max() / scale)
    return {
        "max_abs": float(gap.max()),
        "relative_error": relative,
        "share_differing": float(np.mean(gap > 1e-6 * scale)),
        "cause": _likely_cause(source, target, relative),
    }


def _likely_cause(source: np.ndarray, target: np.ndarray, relative: float) -> str:
    if source.ndim == 4 and source.shape[2] == source.shape[3] and np.allclose(target, source.swapaxes(2, 3), rtol=1e-5, atol=1e-8):
        return "kernel transposed (height <-> width)"
    if source.ndim == 2 and source.shape[0] == source.shape[1] and np.allclose(target, source.T, rtol=1e-5, atol=1e-8):
        return "matrix transposed"
    if relative <= FLOAT16_STEP * 1.01:
        return "float16-level rounding"
    if relative <= INT8_STEP * 0.51 + 1e-6:
        return "8-bit quantisation-level error"
    return "values differ"


def _missing_op_finding(layer, alignment) -> Finding:
    before, _ = alignment.neighbours(layer, side="source")
    anchor = before.target if before is not None else None
    return Finding(
        category=Category.CG,
        summary=f"{layer.kind} of the source is missing from the target"
                + (f" (after {anchor.name})" if anchor is not None else " (at the input)"),
        source_layer=layer.name,
        target_layer=anchor.name if anchor is not None else None,
        evidence={"source_index": layer.index, "op": layer.kind, "attrs": {k: _plain(v) for k, v in layer.attrs.items()}},
        repair=RepairProposal("insert_op", {
            "kind": layer.kind,
            "attrs": dict(layer.attrs),
            "params": dict(layer.params),
            "after": target_nodes(anchor) if anchor is not None else None,
            "after_layer": anchor.index if anchor is not None else None,
        }),
    )


def _extra_op_finding(layer) -> Finding:
    return Finding(
        category=Category.CG,
        summary=f"the target has an extra {layer.kind} with no counterpart in the source",
        target_layer=layer.name,
        evidence={"target_index": layer.index, "op": layer.kind, "attrs": {k: _plain(v) for k, v in layer.attrs.items()}},
        repair=RepairProposal("remove_op", {"kind": layer.kind, **target_nodes(layer)}),
    )


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
