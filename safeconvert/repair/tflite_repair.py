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
    """Edit a TFLite object model in place for one finding; return a one-line description.
    Handlers take (model, arguments, evidence): evidence tells how localization read the target where
    the arguments alone are ambiguous (the layout of a pad_width)."""
    proposal = finding.repair
    if proposal is None or proposal.action not in _HANDLERS:
        raise NotApplicable(f"'{proposal.action if proposal else None}' is not a TFLite edit")
    try:
        described = _HANDLERS[proposal.action](model, proposal.arguments, finding.evidence)
    except (KeyError, ValueError, IndexError) as exc:
        raise NotApplicable(f"{proposal.action}: {one_line(exc)}") from None
    try:
        tflite_edit.check_model(model)
    except Exception as exc:  # LiteRT raises ValueError / RuntimeError from its C++ checks
        raise NotApplicable(f"{proposal.action}: the edited model does not run ({one_line(exc)})") from None
    return described


def _op(model, args: dict) -> int:
    return tflite_edit.find_op(model, args["anchor_node"])


def _op_type(model, output_name: str) -> str:
    """The builtin name of the op writing `output_name`."""
    return tflite_edit.op_name(model, tflite_edit.find_op(model, output_name))


def _fused(model, output_name: str) -> str | None:
    """The fused activation of the op writing `output_name` (None: the op has no such option)."""
    return tflite_edit.fused_activation(model, tflite_edit.find_op(model, output_name))


def _restore_parameters(model, args: dict, evidence: dict) -> str:
    if args.get("kind") not in ("conv2d", "dense", "matmul"):
        raise NotApplicable(f"restoring parameters of a {args.get('kind')} layer is not supported")
    tflite_edit.set_layer_parameters(model, _op(model, args), args["weight"], args.get("bias"))
    return f"restored the source's weights and bias into {args['anchor_node']}"


# ---------------------------------------------------------------- set_attributes


def _set_attributes(model, args: dict, evidence: dict) -> str:
    attrs = dict(args["attrs"])
    if args.get("kind") == "clip" or {"min", "max"} & set(attrs):
        return _set_clip_bounds(model, args, attrs)
    if "padding" in attrs or "pad_width" in attrs:
        seen = (evidence.get("attributes") or {}).get("pad_width") or {}
        return _set_padding(model, args, attrs, seen.get("target"))
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
    if _op_type(model, name) in (*tflite_edit.CLIP_OPS, "MINIMUM", "MAXIMUM"):
        return True
    return _fused(model, name) not in (None, "NONE")


def _set_padding(model, args: dict, attrs: dict, seen_width=None) -> str:
    """Padding as TFLite can hold it: a PAD op's paddings, a conv's SAME / VALID, or a PAD op before a
    conv set to VALID for any other padding (zero padding either way, so the result is exact).
    seen_width: the target's pad_width as localization read it, to tell which layout it speaks."""
    op = _op(model, args)
    if "padding" in attrs:
        padding = tflite_edit.four_sided(attrs.pop("padding"))
        attrs.pop("pad_width", None)
    else:
        padding = _pad_width_padding(model, op, attrs.pop("pad_width"), seen_width)
    rest = _without_zero_padding_mode(attrs)
    if tflite_edit.op_name(model, op) in ("PAD", "PADV2"):
        if rest:
            raise NotApplicable(f"a PAD op has no {sorted(rest)}")
        tflite_edit.set_pad_paddings(model, op, padding)
        done = f"set the paddings of {args['anchor_node']} to {padding}"
    elif args.get("pad_nodes"):
        done = _pad_through_pad_op(model, args, rest, padding)
    else:
        done = _pad_in_options(model, args, rest, padding)
    tflite_edit.refresh_shapes(model)
    return done


def _without_zero_padding_mode(attrs: dict) -> dict:
    """The attributes other than a zero constant pad mode, which is the only padding these edits write."""
    for key, default in (("pad_mode", "constant"), ("pad_value", 0.0)):
        value = attrs.pop(key, default)
        if value != default:
            raise NotApplicable(f"TFLite pads with zeros here, not {key} {value!r}")
    return attrs


def _pad_width_padding(model, op: int, width, seen=None) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from a pad_width [d0_before, d0_after, d1_before, ...]. Localization
    reports it in NCHW where it moved the pad's layout, else in the model's NHWC order: the reading that
    pads only height and width wins; when both do, the one under which the target's pad_width as
    localization saw it matches the PAD op's current paddings."""
    readings = {layout: _spatial_reading(width, layout) for layout in ("NCHW", "NHWC")}
    valid = [layout for layout, value in readings.items() if value is not None]
    if not valid:
        raise ValueError(f"pad_width {list(width)} pads more than height and width")
    if len(valid) > 1 and seen is not None and tflite_edit.op_name(model, op) in ("PAD", "PADV2"):
        current = tflite_edit.pad_paddings(model, op)
        valid = [layout for layout in valid if _spatial_reading(seen, layout) == current] or valid
    return readings[valid[0]]


def _spatial_reading(width, layout: str) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of a 4-D pad_width read in `layout`, None if it pads N or C."""
    values = [int(w) for w in width]
    if len(values) != 8:
        return None
    pairs = {axis: values[2 * i: 2 * i + 2] for i, axis in enumerate(layout)}
    if any(pairs["N"]) or any(pairs["C"]):
        return None
    return pairs["H"][0], pairs["W"][0], pairs["H"][1], pairs["W"][1]


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


def _insert_op(model, args: dict, evidence: dict) -> str:
    """Fuse a missing ReLU / ReLU6 / ReLU_N1_TO_1 into its producer when that op can hold it; otherwise
    (it fuses another activation already, or fuses none at all) insert the op after the tensor."""
    after = args.get("after") or {}
    tensor = after.get("output_tensor") or after.get("anchor_node")
    if not tensor:
        raise NotApplicable(f"a {args['kind']} missing at the input is not inserted")
    kind = args["kind"]
    low, high = _bounds(kind, args.get("attrs") or {})
    fused = tflite_edit.fused_activation_for(low, high) if kind in ("relu", "clip") else None
    op = tflite_edit.find_op(model, tensor)
    if fused is not None and tflite_edit.can_fuse(model, op):
        tflite_edit.set_builtin_options(model, op, fused_activation_function=fused)
        return f"fused the missing {fused} back into {after.get('anchor_node') or tensor}"
    added = tflite_edit.insert_activation(model, tensor, kind, low, high)
    return f"inserted the missing {kind} after {tensor} ({', '.join(added)})"


def _bounds(kind: str, attrs: dict) -> tuple[float, float]:
    """What a relu or clip clips to (unbounded sides as infinities)."""
    if kind == "relu":
        return 0.0, np.inf
    return float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf))


def _remove_op(model, args: dict, evidence: dict) -> str:
    names = list(dict.fromkeys(args.get("nodes") or []))
    if not names:
        raise NotApplicable("no op to remove")
    if args.get("kind") in ACTIVATION_KINDS:
        return _remove_activation(model, args["kind"], names)
    if args.get("reinterpret"):
        names = tflite_edit.reinterpreting_chain(model, names)
    ops = {n: _op_type(model, n) for n in names}
    weighted = [n for n, op in ops.items() if op in tflite_edit.WEIGHTED_OPS]
    if weighted:
        raise NotApplicable(f"a {args.get('kind')} finding does not remove the layer ops {weighted}")
    removed = tflite_edit.remove_ops(model, names)
    tflite_edit.refresh_shapes(model)  # a removed RESHAPE or PAD changes the sizes after it
    if not removed:
        return f"made {', '.join(names)} an identity"
    return f"removed {', '.join(f'{ops[n]} {n}' for n in removed)}"


def _remove_activation(model, kind: str, names: list[str]) -> str:
    """A standalone activation op is removed; one TFLite fused into its producer is cleared there."""
    standalone = [n for n in names if _op_type(model, n) in tflite_edit.ACTIVATION_OPS]
    if standalone:
        removed = tflite_edit.remove_ops(model, standalone)
        return f"removed the extra {kind} ({', '.join(removed) or 'now an identity'})"
    fused = [n for n in names if _fused(model, n) not in (None, "NONE")]
    if not fused:
        raise NotApplicable(f"no {kind} found in {names}")
    for name in fused:
        tflite_edit.set_builtin_options(model, tflite_edit.find_op(model, name), fused_activation_function="NONE")
    return f"cleared the extra fused {kind} from {', '.join(fused)}"


# ---------------------------------------------------------------- input_transform


def _input_transform(model, args: dict, evidence: dict) -> str:
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
