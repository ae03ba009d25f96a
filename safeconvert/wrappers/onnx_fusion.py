"""Simplify an ONNX graph with ONNX Runtime's basic optimisations, for converters that fail on it as written.

tf2onnx writes a Keras model's BatchNorm after a depthwise convolution as a Mul and an Add on the convolution's
output, and keeps Keras' explicit Pad nodes. onnx2tf 1.29 fails on those Muls (it takes the per-channel
constant for the wrong layout: "Dimensions must be equal, but are 112 and 32" on MobileNetV2). ONNX Runtime's
basic level folds each Mul/Add into the convolution's weights and bias, each Pad into the convolution's pads,
and folds constants; it writes standard ONNX operators only (the extended levels add Microsoft's own), so
the result is a plain ONNX model that computes the same function up to float rounding. onnx2tf converts it.
Validation against the source still decides whether the conversion is kept.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConverterFailedError, one_line

STANDARD_DOMAINS = ("", "ai.onnx")


def fuse_in_place(model: Path, converter: str) -> None:
    """Replace `model` by ONNX Runtime's basic-level optimisation of it; fail as `converter` if that cannot be done."""
    import onnx
    import onnxruntime as ort

    fused = model.with_name(f"{model.stem}.fused.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(fused)
    try:
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        proto = onnx.load(str(fused))
    except Exception as exc:  # ONNX Runtime raises its own types
        raise ConverterFailedError(converter, f"ONNX Runtime cannot simplify the model ({one_line(exc)})") from None
    _keep_standard_opsets(proto, converter)
    onnx.save(proto, str(model))
    fused.unlink(missing_ok=True)


def _keep_standard_opsets(proto, converter: str) -> None:
    """ONNX Runtime declares every domain it knows; drop those no node uses, and refuse a non-standard node."""
    foreign = sorted({node.op_type for node in proto.graph.node if node.domain not in STANDARD_DOMAINS})
    if foreign:
        raise ConverterFailedError(converter, f"the simplified model uses non-standard operators {foreign}")
    kept = [opset for opset in proto.opset_import if opset.domain in STANDARD_DOMAINS]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
