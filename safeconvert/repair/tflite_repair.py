"""Turn findings into TFLite edits (see tflite_edit): weights restored into an op, builtin options set,
a missing activation fused back into the op that produces its input."""

from __future__ import annotations

from ..localize.findings import Finding
from . import tflite_edit
from .onnx_repair import NotApplicable

# A missing activation after an op that can fuse one: the fused_activation_function that restores it.
_FUSABLE = {("relu", None): "RELU", ("clip", (0.0, 6.0)): "RELU6", ("clip", (-1.0, 1.0)): "RELU_N1_TO_1"}


def apply_to_tflite(finding: Finding, model) -> str:
    """Edit a TFLite object model in place for one finding; return a one-line description."""
    proposal = finding.repair
    if proposal is None or proposal.action not in _HANDLERS:
        raise NotApplicable(f"'{proposal.action if proposal else None}' is not a TFLite edit")
    try:
        return _HANDLERS[proposal.action](model, proposal.arguments)
    except (KeyError, ValueError, IndexError) as exc:
        raise NotApplicable(f"{proposal.action}: {exc}") from None


def _op(model, args: dict) -> int:
    return tflite_edit.find_op(model, args["anchor_node"])


def _restore_parameters(model, args: dict) -> str:
    if args.get("kind") not in ("conv2d", "dense", "matmul"):
        raise NotApplicable(f"restoring parameters of a {args.get('kind')} layer is not supported")
    tflite_edit.set_layer_parameters(model, _op(model, args), args["weight"], args.get("bias"))
    return f"restored the source's weights and bias into {args['anchor_node']}"


def _set_attributes(model, args: dict) -> str:
    written = tflite_edit.set_attributes(model, _op(model, args), args["attrs"])
    return f"set {', '.join(written)} on {args['anchor_node']} to the source's values"


def _insert_op(model, args: dict) -> str:
    attrs = args.get("attrs") or {}
    bounds = (float(attrs["min"]), float(attrs["max"])) if args["kind"] == "clip" else None
    fused = _FUSABLE.get((args["kind"], bounds))
    after = args.get("after") or {}
    if fused is None or not after.get("anchor_node"):
        raise NotApplicable(f"a missing {args['kind']} cannot be fused here")
    op = tflite_edit.find_op(model, after["output_tensor"] or after["anchor_node"])
    current = tflite_edit.builtin_options(model, op).get("fusedActivationFunction")
    if current not in (None, 0, "NONE"):
        raise NotApplicable(f"{after['anchor_node']} already fuses an activation")
    tflite_edit.set_builtin_options(model, op, fused_activation_function=fused)
    return f"fused the missing {fused} back into {after['anchor_node']}"


_HANDLERS = {"restore_parameters": _restore_parameters, "set_attributes": _set_attributes, "insert_op": _insert_op}
