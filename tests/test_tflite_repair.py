"""TFLite repairs in the target's own format: faults planted in a small Keras CNN converted to float TFLite
are localized and repaired end to end, and the graph edits behind those repairs (input transforms,
inserted activations and pads, removed ops, clip bounds) compute what they claim while the model keeps
its input and output tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safeconvert.localize.findings import Category, Finding, RepairProposal
from safeconvert.repair import tflite_edit as tx
from safeconvert.repair.onnx_edit import InputTransform
from safeconvert.repair.tflite_repair import apply_to_tflite

LOGITS = "StatefulPartitionedCall_1:0"
STEM_PAD = "small_cnn_1/stem_pad_1/Pad"
# Fault kinds (and a site, where the default one would not exercise the repair) repaired in TFLite.
REPAIRED = [("pads_shifted", None), ("pads_dropped", STEM_PAD), ("clip_bounds", None), ("extra_op", None),
            ("layout_reinterpret", None), ("nchw_reinterpret", None), ("hw_swap", None), ("input_scale", None),
            ("channel_order", None)]


@pytest.fixture(scope="module")
def float_tflite(small_keras_file: Path, tmp_path_factory) -> Path:
    from safeconvert.pipeline import ConvertRequest, run_convert

    out = tmp_path_factory.mktemp("tflite_repair") / "small.tflite"
    assert run_convert(ConvertRequest(small_keras_file, out)).report.verified
    return out


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)


def run(model, batch: np.ndarray) -> np.ndarray:
    """Outputs of a ModelT (or .tflite path) on a batch, one image at a time."""
    from ai_edge_litert.interpreter import Interpreter

    content = Path(model).read_bytes() if isinstance(model, Path) else tx.model_bytes(model)
    interpreter = Interpreter(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    outputs = []
    for image in batch:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[np.newaxis])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    return np.stack(outputs)


def interface(model) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the graph inputs and outputs."""
    sg = model.subgraphs[0]
    return [(tx.tensor_name(model, int(t)), tuple(int(d) for d in sg.tensors[int(t)].shape)) for t in [*sg.inputs, *sg.outputs]]


def finding(action: str, **arguments) -> Finding:
    return Finding(Category.CG, "hand-made", repair=RepairProposal(action, arguments))


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("kind,site", REPAIRED, ids=[k if s is None else f"{k}@pad" for k, s in REPAIRED])
def test_injected_fault_is_repaired_in_tflite(kind, site, small_keras_file, float_tflite, tmp_path):
    from safeconvert.faults import inject
    from safeconvert.pipeline import RepairRequest, run_repair

    faulty, fixed = tmp_path / "faulty.tflite", tmp_path / "fixed.tflite"
    fault = inject(float_tflite, faulty, kind, layer=site, seed=0)
    report = run_repair(RepairRequest(small_keras_file, faulty, output=fixed)).report
    if report.metrics_before_repair is None:
        pytest.skip(f"{kind}: the planted fault stays within the verdict's tolerance")
    applied = [r for r in report.repairs if r["status"] == "applied"]
    assert report.verified and report.metrics["top1_mismatches"] == 0, report.repairs
    assert any(r["category"] == fault.category.value for r in applied), report.repairs
    assert interface(tx.load_model(fixed)) == interface(tx.load_model(float_tflite))


# ---------------------------------------------------------------- edit primitives


@pytest.mark.parametrize("transform,apply", [
    (InputTransform.permute([0, 2, 1, 3]), lambda x: x.transpose(0, 2, 1, 3)),
    (InputTransform.reinterpret("NHWC", "NCHW"), lambda x: x.transpose(0, 3, 1, 2).reshape(x.shape)),
    (InputTransform.channel_reverse(3), lambda x: x[..., ::-1]),
    (InputTransform.affine([2.0, 0.5, -1.0], [0.1, 0.0, -0.2], 3), lambda x: x * [2.0, 0.5, -1.0] + [0.1, 0.0, -0.2]),
], ids=["permute", "reinterpret", "channel_reverse", "affine"])
def test_input_transform_runs_the_model_on_the_transformed_input(transform, apply, float_tflite, images):
    model = tx.load_model(float_tflite)
    added = tx.insert_input_transform(model, transform)
    tx.check_model(model)
    assert added and interface(model) == interface(tx.load_model(float_tflite))
    want = run(float_tflite, np.ascontiguousarray(apply(images), dtype=np.float32))
    np.testing.assert_allclose(run(model, images), want, rtol=1e-5, atol=1e-5)


def test_clip_inserted_on_a_graph_output_and_removed_again(float_tflite, images):
    clean = run(float_tflite, images)
    model = tx.load_model(float_tflite)
    added = tx.insert_activation(model, LOGITS, "clip", -0.05, 0.05)
    assert [tx.op_name(model, tx.find_op(model, name)) for name in added] == ["MAXIMUM", "MINIMUM"]
    assert added[-1] == LOGITS  # the output keeps its tensor: the last inserted op writes it
    np.testing.assert_allclose(run(model, images), np.clip(clean, -0.05, 0.05), atol=1e-6)
    assert tx.remove_ops(model, added) == added
    tx.check_model(model)
    assert interface(model) == interface(tx.load_model(float_tflite))
    np.testing.assert_allclose(run(model, images), clean, atol=1e-6)


def test_missing_activation_is_inserted_when_the_producer_already_fuses_one(float_tflite, images):
    clean = run(float_tflite, images)
    model = tx.load_model(float_tflite)
    tx.set_builtin_options(model, tx.find_op(model, LOGITS), fused_activation_function="RELU_N1_TO_1")
    after = {"anchor_node": LOGITS, "output_tensor": LOGITS}
    described = apply_to_tflite(finding("insert_op", kind="relu", attrs={}, after=after), model)
    assert "inserted" in described
    np.testing.assert_allclose(run(model, images), np.clip(clean, 0.0, 1.0), atol=1e-6)


def test_clip_bounds_no_fused_activation_has_become_ops(float_tflite, images):
    clean = run(float_tflite, images)
    model = tx.load_model(float_tflite)
    stem = tx.weight_ops(model)[0].output
    arguments = {"attrs": {"max": 6.0 + 1e-6}, "kind": "clip", "anchor_node": stem, "nodes": [stem]}
    apply_to_tflite(Finding(Category.LH, "hand-made", repair=RepairProposal("set_attributes", arguments)), model)
    assert tx.fused_activation(model, tx.find_op(model, stem)) == "NONE"
    assert {tx.op_name(model, i) for i in range(len(model.subgraphs[0].operators))} >= {"MINIMUM", "MAXIMUM"}
    np.testing.assert_allclose(run(model, images), clean, atol=1e-4)


def test_standalone_clip_op_is_switched_and_removed(float_tflite, images):
    clean = run(float_tflite, images)
    model = tx.load_model(float_tflite)
    [relu6] = tx.insert_activation(model, LOGITS, "clip", 0.0, 6.0)
    assert tx.op_name(model, tx.find_op(model, relu6)) == "RELU6"
    assert "RELU_N1_TO_1" in tx.set_activation_bounds(model, tx.find_op(model, relu6), -1.0, 1.0)
    np.testing.assert_allclose(run(model, images), np.clip(clean, -1, 1), atol=1e-6)
    apply_to_tflite(finding("remove_op", kind="clip", nodes=[relu6]), model)
    np.testing.assert_allclose(run(model, images), clean, atol=1e-6)


def test_inserted_pad_before_a_valid_conv_equals_same_padding(float_tflite, images):
    clean = run(float_tflite, images)
    model = tx.load_model(float_tflite)
    conv2 = tx.weight_ops(model)[-2].output
    tx.insert_pad(model, tx.find_op(model, conv2), (1, 1, 1, 1))
    tx.set_builtin_options(model, tx.find_op(model, conv2), padding="VALID")
    np.testing.assert_allclose(run(model, images), clean, rtol=1e-5, atol=1e-5)


def test_padding_neither_same_nor_valid_gets_a_pad_op(float_tflite):
    model = tx.load_model(float_tflite)
    conv2 = tx.weight_ops(model)[-2].output
    arguments = {"attrs": {"padding": [2, 2, 0, 0]}, "kind": "conv2d", "anchor_node": conv2, "pad_nodes": []}
    apply_to_tflite(Finding(Category.LH, "hand-made", repair=RepairProposal("set_attributes", arguments)), model)
    op = tx.find_op(model, conv2)
    pad = tx.find_op(model, tx.tensor_name(model, int(model.subgraphs[0].operators[op].inputs[0])))
    assert tx.op_name(model, pad) == "PAD" and tx.pad_paddings(model, pad) == (2, 2, 0, 0)
    assert tx.builtin_options(model, op)["padding"] == "VALID"
    assert list(model.subgraphs[0].tensors[int(model.subgraphs[0].operators[pad].outputs[0])].shape) == [1, 10, 10, 24]


@pytest.mark.parametrize("width,want", [([0, 0, 0, 0, 2, 1, 1, 0], (2, 1, 1, 0)),  # NCHW: only this reading pads H, W
                                        ([0, 0, 2, 1, 1, 0, 0, 0], (2, 1, 1, 0))])  # NHWC
def test_pad_width_is_read_in_the_layout_that_pads_height_and_width(width, want, float_tflite):
    model = tx.load_model(float_tflite)
    arguments = {"attrs": {"pad_width": width}, "kind": "pad", "anchor_node": STEM_PAD, "pad_nodes": [STEM_PAD]}
    apply_to_tflite(Finding(Category.LH, "hand-made", repair=RepairProposal("set_attributes", arguments)), model)
    assert tx.pad_paddings(model, tx.find_op(model, STEM_PAD)) == want
