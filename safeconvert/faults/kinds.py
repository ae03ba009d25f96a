"""The fault kinds, each with the category it belongs to and the formats it can be planted in.

A kind keeps one category whatever the format, so a localizer is scored the same way on an ONNX and a
TFLite model. Where a format stores a fault differently (TFLite fuses activations into the producing op, so
removing a ReLU there clears the op's fused-activation field), the category follows what the fault does to
the computation, not where the field lives.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..localize.findings import Category
from .fault import FaultNotApplicableError

ONNX = "onnx"
TFLITE = "tflite"


@dataclass(frozen=True)
class FaultKind:
    name: str
    category: Category
    summary: str
    formats: tuple[str, ...]


_KIND_LIST = [
    FaultKind("fp16_weights", Category.WB, "one layer's weights rounded to float16", (ONNX, TFLITE)),
    FaultKind("int8_weights", Category.WB, "one layer's weights fake-quantised to int8, one scale per tensor", (ONNX, TFLITE)),
    FaultKind("transposed_kernel", Category.WB, "one kernel transposed (H<->W, or in<->out when square)", (ONNX, TFLITE)),
    FaultKind("pads_dropped", Category.LH, "a conv's, pool's or Pad op's padding dropped (TFLite: SAME -> VALID, or a PAD op zeroed)", (ONNX, TFLITE)),
    FaultKind("pads_shifted", Category.LH, "a conv's or Pad op's symmetric padding moved to the bottom/right (TF-style asymmetric SAME)", (ONNX, TFLITE)),
    FaultKind("stride", Category.LH, "a conv's stride changed (s > 1 -> 1, 1 -> 2)", (ONNX, TFLITE)),
    FaultKind("dilation", Category.LH, "a conv's dilation changed (1 -> 2, d > 1 -> 1)", (ONNX, TFLITE)),
    FaultKind("bn_epsilon", Category.LH, "a BatchNormalization epsilon changed (1e-5 <-> 1e-3)", (ONNX,)),
    FaultKind("ceil_mode", Category.LH, "a pool's ceil_mode flipped where it changes the output size", (ONNX,)),
    FaultKind("count_include_pad", Category.LH, "an average pool's count_include_pad flipped", (ONNX,)),
    FaultKind("clip_bounds", Category.LH, "a Clip/ReLU6's bounds changed (ONNX: max halved; TFLite: RELU6 -> RELU_N1_TO_1)", (ONNX, TFLITE)),
    FaultKind("removed_activation", Category.CG, "an activation removed (TFLite: fused activation -> NONE)", (ONNX, TFLITE)),
    FaultKind("extra_op", Category.CG, "an extra ReLU after a layer whose output goes negative", (ONNX, TFLITE)),
    FaultKind("relu6_to_relu", Category.CG, "a ReLU6 substituted by a plain ReLU", (ONNX, TFLITE)),
    FaultKind("flatten_order", Category.TSS, "a flatten reads a spatial feature map in the other layout's order", (ONNX, TFLITE)),
    FaultKind("layout_reinterpret", Category.TSS, "an inner feature map reshaped instead of transposed between layouts", (ONNX, TFLITE)),
    FaultKind("nchw_reinterpret", Category.ID, "the input buffer reshaped instead of transposed between NHWC and NCHW", (ONNX, TFLITE)),
    FaultKind("hw_swap", Category.ID, "the input's height and width swapped (square inputs)", (ONNX, TFLITE)),
    FaultKind("input_scale", Category.PP, "the input multiplied by a constant (255 by default)", (ONNX, TFLITE)),
    FaultKind("channel_order", Category.PP, "the input's channels reversed (RGB <-> BGR)", (ONNX, TFLITE)),
]

KINDS: dict[str, FaultKind] = {kind.name: kind for kind in _KIND_LIST}


def kind_named(name: str, fmt: str) -> FaultKind:
    """The kind called `name`, refusing kinds the format cannot carry."""
    kind = KINDS.get(name)
    if kind is None:
        raise FaultNotApplicableError(f"unknown fault kind {name!r} (known: {', '.join(KINDS)})")
    if fmt not in kind.formats:
        raise FaultNotApplicableError(f"fault kind {name!r} cannot be planted in a {fmt} model")
    return kind


def kinds_for(fmt: str) -> list[str]:
    """Kind names a format supports, in a fixed order (for sweeps)."""
    return [kind.name for kind in _KIND_LIST if fmt in kind.formats]
