"""Turn findings into ONNX edits (see onnx_edit for the primitives and their guarantees)."""

from __future__ import annotations

from ..localize.findings import Finding
from . import onnx_edit

# Canonical op kinds (safeconvert.ir) -> ONNX op types, for inserting a missing op.
INSERTABLE = {"relu": "Relu", "clip": "Clip", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax"}


class NotApplicable(Exception):
    """This finding has no ONNX edit (e.g. it needs a converter re-run, or the nodes are not found)."""


def apply_to_onnx(finding: Finding, model) -> str:
    """Edit `model` in place for one finding; return a one-line description of the edit."""
    proposal = finding.repair
    if proposal is None:
        raise NotApplicable("no repair proposed")
    handler = _HANDLERS.get(proposal.action)
    if handler is None:
        raise NotApplicable(f"'{proposal.action}' is not an ONNX edit")
    try:
        return handler(model, proposal.arguments)
    except (KeyError, ValueError, IndexError) as exc:
        raise NotApplicable(f"{proposal.action}: {exc}") from None


def _restore_parameters(model, args: dict) -> str:
    if args.get("kind") not in ("conv2d", "dense", "matmul"):
        raise NotApplicable(f"restoring parameters of a {args.get('kind')} layer is not supported")
    onnx_edit.set_layer_parameters(model, args["anchor_node"], args["weight"], args.get("bias"),
                                   neutralise_nodes=args.get("affine_nodes", ()))
    return f"restored the source's weights and bias into {args['anchor_node']}"


def _set_attributes(model, args: dict) -> str:
    attrs = dict(args["attrs"])
    node = args["anchor_node"]
    if "padding" in attrs:
        for pad in args.get("pad_nodes", ()):  # the conv's own pads take over what a separate Pad did
            onnx_edit.zero_pad_node(model, pad)
    changed = onnx_edit.set_attributes(model, node, attrs)
    return f"set {', '.join(changed)} on {node} to the source's values"


def _insert_op(model, args: dict) -> str:
    op_type = INSERTABLE.get(args["kind"])
    after = args.get("after") or {}
    tensor = after.get("output_tensor")
    if op_type is None or tensor is None:
        raise NotApplicable(f"cannot insert a {args['kind']} here")
    constants = None
    if op_type == "Clip":
        constants = {"min": args["attrs"].get("min", 0.0), "max": args["attrs"].get("max", 6.0)}
    attrs = {"axis": int(args["attrs"]["axis"])} if op_type == "Softmax" and "axis" in args["attrs"] else None
    name = onnx_edit.insert_after(model, tensor, op_type, attrs=attrs, constants=constants)
    return f"inserted the missing {op_type} ({name}) after {tensor}"


def _remove_op(model, args: dict) -> str:
    nodes = args.get("nodes") or []
    if not nodes:
        raise NotApplicable("no node to remove")
    for node in nodes:
        onnx_edit.remove_node(model, node)
    return f"removed {', '.join(nodes)}"


def _input_transform(model, args: dict) -> str:
    names = onnx_edit.insert_input_transform(model, args["transform"])
    return f"folded the input transform into the model's input ({len(names)} ops)"


def _permute_features(model, args: dict) -> str:
    consumer = args.get("consumer") or {}
    node = consumer.get("anchor_node")
    if node is None:
        raise NotApplicable("no consumer layer to reorder the features for")
    name = onnx_edit.insert_gather(model, node, 0, args["indices"], axis=1)
    return f"reordered the features {node} reads ({name})"


_HANDLERS = {
    "restore_parameters": _restore_parameters,
    "set_attributes": _set_attributes,
    "insert_op": _insert_op,
    "remove_op": _remove_op,
    "input_transform": _input_transform,
    "permute_features": _permute_features,
}
