"""Turn findings into TFLite edits (see tflite_edit): weights restored into an op, builtin options, clip
bounds and padding set, a missing activation fused back or inserted, extra ops removed, and the input
transform a PP/ID finding names folded in front of the model. Every edited model is loaded and run once
before it is handed back, so a bad edit is refused here rather than in validation."""

from __future__ import annotations

import numpy as np

from ..errors import one_line
from ..localize.findings import Finding
from . import tflite_edit
from .onnx_repair import NotApplicable

# Canonical layer kinds that are activations: an extra one TFLite may have fused into its producer.
ACTIVATION_KINDS = {"relu", "clip", "relu6", "sigmoid", "tanh", "softmax", "leaky_relu", "hardtanh", "gelu",
                    "elu", "hard_swish"}
_CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def apply_to_tflite(finding: Finding, model) -> str:
    """Edit a TFLite object model in place for one finding; return a one-line description."""
    proposal = finding.repair
    if proposal is None or proposal.action not in _HANDLERS:
        raise NotApplicable(f"'{proposal.action if proposal else None}' is not a TFLite edit")
    try:
        described = _HANDLERS[proposal.action](model, proposal.arguments)
    except (KeyError, ValueError, IndexError) as exc:
        raise NotApplicable(f"{proposal.action}: {one_line(exc)}") from None
    try:
        tflite_edit.check_model(model)
    except Exception as exc:  # LiteRT raises ValueError / RuntimeError from its C++ checks
        raise NotApplicable(f"{proposal.action}: the edited model does not run ({one_line(exc)})") from None
    return described


def _op(model, args: dict) -> int:
    return tflite_edit.find_op(model, args["anchor_node"])


def _restore_parameters(model, args: dict) -> str:
    if args.get("kind") not in ("conv2d", "dense", "matmul"):
        raise NotApplicable(f"restoring parameters of a {args.get('kind')} layer is not supported")
    tflite_edit.set_layer_parameters(model, _op(model, args), args["weight"], args.get("bias"))
    return f"restored the source's weights and bias into {args['anchor_node']}"


# ---------------------------------------------------------------- set_attributes


def _set_attributes(model, args: dict) -> str:
    attrs = dict(args["attrs"])
    if args.get("kind") == "clip" or {"min", "max"} & set(attrs):
        return _set_clip_bounds(model, args, attrs)
    if "padding" in attrs or "pad_width" in attrs:
        return _set_padding(model, args, attrs)
    written = tflite_edit.set_attributes(model, _op(model, args), attrs)
    return f"set {', '.join(written)} on {args['anchor_node']} to the source's values"


def _set_clip_bounds(model, args: dict, attrs: dict) -> str:
    """A clip's bounds live in the op that clips: a fused activation (TFLite folds ReLU6 into the conv),
    a RELU-family op, or a MINIMUM / MAXIMUM pair. Bounds the finding leaves out keep their value."""
    names = [n for n in dict.fromkeys(args.get("nodes") or [args["anchor_node"]]) if _clips(model, n)]
    if not names:
        raise NotApplicable(f"no op of {args['anchor_node']} clips its output")
    current = [tflite_edit.activation_bounds(model, tflite_edit.find_op(model, n)) for n in names]
    low = float(attrs.get("min", max(b[0] for b in current)))
    high = float(attrs.get("max", min(b[1] for b in current)))
    done = [tflite_edit.set_activation_bounds(model, tflite_edit.find_op(model, n), low, high) for n in names]
    return f"set the clip of {args['anchor_node']} to [{low:g}, {high:g}] ({', '.join(done)})"


def _clips(model, name: str) -> bool:
    """An op that clips: standalone ones first; a fused activation only when one is set (NONE: the
    clip is elsewhere)."""
    op = tflite_edit.find_op(model, name)
    if tflite_edit.op_name(model, op) in (*tflite_edit.CLIP_OPS, "MINIMUM", "MAXIMUM"):
        return True
    return tflite_edit.fused_activation(model, op) not in (None, "NONE")


def _set_padding(model, args: dict, attrs: dict) -> str:
    """Padding as TFLite can hold it: a PAD op's paddings, a conv's SAME / VALID, or a PAD op before a
    conv set to VALID for any other padding (zero padding either way, so the result is exact)."""
    op = _op(model, args)
    padding = _spatial_padding(attrs.pop("padding", None), attrs.pop("pad_width", None))
    for key, default in (("pad_mode", "constant"), ("pad_value", 0.0)):
        value = attrs.pop(key, default)
        if value != default:
            raise NotApplicable(f"TFLite pads with zeros here, not {key} {value!r}")
    rest = attrs
    if tflite_edit.op_name(model, op) in ("PAD", "PADV2"):
        tflite_edit.set_pad_paddings(model, op, padding)
        done = f"set the paddings of {args['anchor_node']} to {padding}"
    elif args.get("pad_nodes"):
        done = _pad_through_pad_op(model, args, rest, padding)
    else:
        done = _pad_in_options(model, args, rest, padding)
    tflite_edit.refresh_shapes(model)
    return done


def _spatial_padding(padding, pad_width) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from canonical padding, or from a canonical (NCHW) pad_width
    [n0, n1, c0, c1, h0, h1, w0, w1] that pads only height and width."""
    if padding is not None:
        return tflite_edit.four_sided(padding)
    width = [int(w) for w in pad_width]
    if len(width) != 8 or any(width[:4]):
        raise ValueError(f"pad_width {width} does not pad only height and width")
    return width[4], width[6], width[5], width[7]


def _pad_through_pad_op(model, args: dict, rest: dict, padding) -> str:
    """The layer's padding includes a PAD op before the conv: that op takes all of it, the conv none."""
    pads = list(dict.fromkeys(args["pad_nodes"]))
    op = _op(model, args)
    if len(pads) != 1 or tflite_edit.op_name(model, op) not in _CONVS:
        raise NotApplicable(f"padding split over {pads} and a {tflite_edit.op_name(model, op)} is not edited")
    if rest:
        tflite_edit.set_attributes(model, op, rest)
    tflite_edit.set_pad_paddings(model, tflite_edit.find_op(model, pads[0]), padding)
    tflite_edit.set_builtin_options(model, op, padding="VALID")
    return f"set the paddings of {pads[0]} to {padding} and {args['anchor_node']} to VALID"


def _pad_in_options(model, args: dict, rest: dict, padding) -> str:
    """SAME / VALID on the op when one of them is the padding; else a new PAD op before a conv."""
    op = _op(model, args)
    try:
        written = tflite_edit.set_attributes(model, op, {**rest, "padding": padding})
        return f"set {', '.join(written)} on {args['anchor_node']} to the source's values"
    except ValueError:
        if tflite_edit.op_name(model, op) not in _CONVS:
            raise
    if rest:
        tflite_edit.set_attributes(model, op, rest)
    pad = tflite_edit.insert_pad(model, op, padding)
    tflite_edit.set_builtin_options(model, _op(model, args), padding="VALID")
    return f"padded the input of {args['anchor_node']} by {padding} ({pad}) and set it to VALID"


# ---------------------------------------------------------------- insert_op / remove_op


def _insert_op(model, args: dict) -> str:
    """Fuse a missing ReLU / ReLU6 / ReLU_N1_TO_1 into its producer when that op can hold it; otherwise
    (it fuses another activation already, or fuses none at all) insert the op after the tensor."""
    after = args.get("after") or {}
    tensor = after.get("output_tensor") or after.get("anchor_node")
    if not tensor:
        raise NotApplicable(f"a {args['kind']} missing at the input is not inserted")
    kind, attrs = args["kind"], args.get("attrs") or {}
    low, high = (0.0, np.inf) if kind == "relu" else (float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf)))
    fused = tflite_edit.fused_activation_for(low, high) if kind in ("relu", "clip") else None
    op = tflite_edit.find_op(model, tensor)
    if fused is not None and tflite_edit.can_fuse(model, op):
        tflite_edit.set_builtin_options(model, op, fused_activation_function=fused)
        return f"fused the missing {fused} back into {after.get('anchor_node') or tensor}"
    added = tflite_edit.insert_activation(model, tensor, kind, low, high)
    return f"inserted the missing {kind} after {tensor} ({', '.join(added)})"


def _remove_op(model, args: dict) -> str:
    names = list(dict.fromkeys(args.get("nodes") or []))
    if not names:
        raise NotApplicable("no op to remove")
    if args.get("kind") in ACTIVATION_KINDS:
        return _remove_activation(model, args["kind"], names)
    ops = {n: tflite_edit.op_name(model, tflite_edit.find_op(model, n)) for n in names}
    weighted = [n for n, op in ops.items() if op in tflite_edit.WEIGHTED_OPS]
    if weighted:
        raise NotApplicable(f"a {args.get('kind')} finding does not remove the layer ops {weighted}")
    removed = tflite_edit.remove_ops(model, names)
    tflite_edit.refresh_shapes(model)
    return f"removed {', '.join(f'{ops[n]} {n}' for n in removed)}" if removed else f"made {names[0]} an identity"


def _remove_activation(model, kind: str, names: list[str]) -> str:
    """A standalone activation op is removed; one TFLite fused into its producer is cleared there."""
    standalone = [n for n in names if tflite_edit.op_name(model, tflite_edit.find_op(model, n)) in tflite_edit.ACTIVATION_OPS]
    if standalone:
        removed = tflite_edit.remove_ops(model, standalone)
        return f"removed the extra {kind} ({', '.join(removed) or 'now an identity'})"
    fused = [n for n in names if tflite_edit.fused_activation(model, tflite_edit.find_op(model, n)) not in (None, "NONE")]
    if not fused:
        raise NotApplicable(f"no {kind} found in {names}")
    for name in fused:
        tflite_edit.set_builtin_options(model, tflite_edit.find_op(model, name), fused_activation_function="NONE")
    return f"cleared the extra fused {kind} from {', '.join(fused)}"


# ---------------------------------------------------------------- input_transform


def _input_transform(model, args: dict) -> str:
    added = tflite_edit.insert_input_transform(model, args["transform"])
    if not added:
        raise NotApplicable("the input transform is the identity")
    return f"folded the input transform into the model's input ({len(added)} ops: {', '.join(added)})"


_HANDLERS = {
    "restore_parameters": _restore_parameters,
    "set_attributes": _set_attributes,
    "insert_op": _insert_op,
    "remove_op": _remove_op,
    "input_transform": _input_transform,
}
