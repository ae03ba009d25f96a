"""The verdict's numbers cannot be switched off: NaN/inf, repeated or overflowing calibration images, outputs
mixing sizes, a batch-dependent target, an empty output and a decoy quantised tensor each leave it failing.

Small ONNX models built with onnx.helper (input [N,3,32,32] -> GlobalAveragePool -> Gemm heads 'logits' [N,10]
and 'aux' [N,4]), run by ONNX Runtime through the real pipeline; the rest is the pure verdict logic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safeconvert.formats import Format
from safeconvert.pipeline import CheckRequest, run_check
from safeconvert.runners.base import NamedOutput
from safeconvert.validators.metrics import compare_all, robust_scale
from safeconvert.validators.verdict import QuantisationCheck, Thresholds, judge

RNG = np.random.default_rng(0)
W1, W2 = RNG.normal(size=(10, 3)) * 3, RNG.normal(size=(4, 3)) * 3


def build(path: Path, w1=W1, w2=W2, extra_nodes=(), extra_inits=(), opset: int = 17) -> Path:
    """The two-head model; extra_nodes may produce 'logits' or 'aux' from 'logits_raw' / 'aux_raw'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(w1, np.float32), "W1"), numpy_helper.from_array(np.zeros(10, np.float32), "B1"),
             numpy_helper.from_array(np.asarray(w2, np.float32), "W2"), numpy_helper.from_array(np.zeros(4, np.float32), "B2"),
             *extra_inits]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W1", "B1"], ["logits_raw"], transB=1),
             helper.make_node("Gemm", ["f", "W2", "B2"], ["aux_raw"], transB=1), *extra_nodes]
    for name in ("logits", "aux"):
        if not any(node.output[0] == name for node in extra_nodes):
            nodes.append(helper.make_node("Identity", [f"{name}_raw"], [name]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
               helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["N", None])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def const(name: str, values) -> object:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values), name)


def node(op: str, inputs: list[str], outputs: list[str], **attrs):
    from onnx import helper

    return helper.make_node(op, inputs, outputs, **attrs)


def check(source: Path, target: Path, **request):
    return run_check(CheckRequest(source, target, **request)).report


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("numerics") / "source.onnx")


def _named(**outputs) -> list[NamedOutput]:
    return [NamedOutput(name, np.asarray(values, np.float32)) for name, values in outputs.items()]


def _verdict(source: dict, target: dict, thresholds: Thresholds | None = None):
    images = len(next(iter(source.values())))
    return judge(compare_all(_named(**source), _named(**target), [str(i) for i in range(images)]), thresholds or Thresholds())


# ---------------------------------------------------------------- 1. NaN in the target


def test_nan_in_a_target_output_fails_naming_the_output(source, tmp_path):
    nan_aux = build(tmp_path / "nan_aux.onnx", extra_nodes=[node("Mul", ["aux_raw", "NAN"], ["aux"])],
                    extra_inits=[const("NAN", np.array([np.nan], np.float32))])
    mask = np.zeros(10, np.float32)
    mask[9] = np.nan
    nan_logit = build(tmp_path / "nan_logit.onnx", extra_nodes=[node("Add", ["logits_raw", "MASK"], ["logits"])],
                      extra_inits=[const("MASK", mask)])
    for target, name in ((nan_aux, "aux"), (nan_logit, "logits")):
        report = check(source, target)
        assert not report.verified and report.verdict["failed_outputs"] == [name]
        assert any(f"output '{name}'" in r and "NaN/inf" in r for r in report.verdict["reasons"])
    assert check(source, build(tmp_path / "same.onnx")).verified  # the faithful target still verifies


# ---------------------------------------------------------------- 2 and 3. NaN / inf in the source


def test_nan_in_the_source_does_not_switch_the_check_off():
    rng = np.random.default_rng(1)
    logits, aux = rng.normal(size=(12, 10)), rng.normal(size=(12, 4))
    aux[::3] = np.nan  # the source's aux is NaN on some images
    assert np.isfinite(robust_scale(aux)[1]) and robust_scale(aux)[1] > 0
    garbage = np.where(np.isnan(aux), np.nan, -100 * aux + 7)  # same NaN pattern, numbers destroyed
    verdict = _verdict({"logits": logits, "aux": aux}, {"logits": logits, "aux": garbage})
    assert not verdict.verified and verdict.failed_outputs == ["aux"]
    filled = np.nan_to_num(aux, nan=0.0)  # finite where the source is NaN
    verdict = _verdict({"logits": logits, "aux": aux}, {"logits": logits, "aux": filled})
    assert not verdict.verified and any("NaN/inf" in r for r in verdict.reasons)
    assert _verdict({"logits": logits, "aux": aux}, {"logits": logits, "aux": aux.copy()}).verified


def test_a_minus_inf_mask_does_not_switch_the_check_off():
    rng = np.random.default_rng(2)
    masked = rng.normal(size=(12, 10)) * 3
    masked[:, 9] = -np.inf  # masked_fill(mask, -inf)
    scaled = np.where(np.isfinite(masked), masked * 1.5, masked)
    assert not _verdict({"logits": masked}, {"logits": scaled}).verified
    flipped = masked.copy()
    flipped[:, 9] = np.inf
    assert not _verdict({"logits": masked}, {"logits": flipped}).verified  # the sign of inf counts
    unmasked = masked.copy()
    unmasked[:, 9] = -1e4
    assert not _verdict({"logits": masked}, {"logits": unmasked}).verified
    assert _verdict({"logits": masked}, {"logits": masked.copy()}).verified


def test_a_minus_inf_mask_model_scaled_is_not_verified(tmp_path):
    mask = np.zeros(10, np.float32)
    mask[9] = -np.inf

    def masked(path, w1):
        return build(path, w1=w1, extra_nodes=[node("Add", ["logits_raw", "MASK"], ["logits"])], extra_inits=[const("MASK", mask)])

    source = masked(tmp_path / "src.onnx", W1)
    assert not check(source, masked(tmp_path / "x15.onnx", W1 * 1.5)).verified
    assert check(source, masked(tmp_path / "same.onnx", W1)).verified


# ---------------------------------------------------------------- 4. calibration values that overflow


def test_calibration_that_overflows_the_source_verifies_nothing(source, tmp_path):
    huge = (np.random.default_rng(0).normal(size=(8, 32, 32, 3)) * 3e38).clip(-3.3e38, 3.3e38).astype(np.float32)
    np.save(tmp_path / "huge.npy", huge)
    report = check(source, build(tmp_path / "bad_aux.onnx", w2=W2 * 100), calib=tmp_path / "huge.npy")
    assert not report.verified
    assert any("cannot be verified numerically" in r for r in report.verdict["reasons"])
    assert not _verdict({"out": np.full((4, 3), np.nan)}, {"out": np.full((4, 3), np.nan)}).verified


# ---------------------------------------------------------------- 5. repeated images


@pytest.mark.parametrize("identical", [9, 5])  # all images identical; a majority identical
def test_repeated_images_do_not_bring_back_the_masking_constant(identical):
    rng = np.random.default_rng(3)
    logits = np.repeat(rng.normal(size=(1, 10)), 9, axis=0)
    logits[identical:] = rng.normal(size=(9 - identical, 10))
    logits[:, 9] = -1e9
    assert robust_scale(logits)[1] < 100
    moved = logits.copy()
    top = np.argmax(logits, axis=1)
    moved[:, :9] -= 50.0
    moved[np.arange(9), top] = logits[np.arange(9), top]  # labels kept, every other score 50 lower
    assert not _verdict({"logits": logits}, {"logits": moved}, Thresholds(rtol=0.1)).verified


# ---------------------------------------------------------------- 6. one output holding values of different sizes


def test_a_small_part_of_a_mixed_scale_output_is_judged_on_its_own():
    rng = np.random.default_rng(4)
    boxes, scores = rng.normal(size=(42, 4)) * 3000, rng.normal(size=(42, 10))
    mixed = np.concatenate([boxes, scores], axis=1)
    offset = mixed + np.concatenate([np.zeros(4), np.tile([2.9, -2.9], 5)])
    assert not _verdict({"out": mixed}, {"out": offset}).verified
    noise = mixed * (1 + rng.normal(scale=1e-7, size=mixed.shape))
    assert _verdict({"out": mixed}, {"out": noise}).verified


# ---------------------------------------------------------------- 7. --keep-quantisation counts what the graph reads


def test_an_unused_int8_tensor_is_not_quantisation(source, tmp_path):
    from safeconvert.localize.tool import quantised_tensors, quantised_weights

    decoy = build(tmp_path / "decoy.onnx", w1=W1 * 1.08, extra_inits=[const("decoy", np.ones((2, 2), np.int8))])
    assert quantised_tensors(decoy, Format.ONNX) == {}
    report = check(source, decoy, thresholds=Thresholds(keep_quantisation=True))
    assert not report.verified and report.verdict["quantisation_undone"]
    # a QDQ weight read by its layer counts; a quantised layer holding a small share of the weights is not enough
    scale, zero = const("S", np.array(0.05, np.float32)), const("Z", np.array(0, np.int8))

    def quantised_head(path: Path, head: str, weight: np.ndarray) -> Path:
        bias = "B1" if head == "logits" else "B2"
        nodes = [node("DequantizeLinear", ["Wq", "S", "Z"], ["Wd"]), node("Gemm", ["f", "Wd", bias], [head], transB=1)]
        return build(path, extra_nodes=nodes, extra_inits=[const("Wq", np.round(weight / 0.05).astype(np.int8)), scale, zero])

    logits_int8 = quantised_weights(quantised_head(tmp_path / "q_logits.onnx", "logits", W1), Format.ONNX)
    assert logits_int8.tensors == {"int8": 1} and logits_int8.share == pytest.approx(30 / 42)  # W1 30, W2 12 values
    aux_int8 = quantised_weights(quantised_head(tmp_path / "q_aux.onnx", "aux", W2), Format.ONNX)
    assert aux_int8.tensors == {"int8": 1} and aux_int8.share == pytest.approx(12 / 42)
    undone = judge(compare_all(_named(a=np.eye(3)), _named(a=np.eye(3)), list("abc")), Thresholds(keep_quantisation=True),
                   QuantisationCheck({"int8": 1}, share=0.2))
    assert not undone.verified and undone.quantisation_undone and "20%" in undone.reasons[0]


# ---------------------------------------------------------------- 8. batch-dependent target


def test_a_target_that_depends_on_the_batch_is_not_verified(source, tmp_path):
    bump = np.zeros(10, np.float32)
    bump[0] = 100.0  # +100 to class 0 when the batch's images do not vary (a batch of one)
    nodes = [node("ReduceMax", ["f"], ["mx"], axes=[0], keepdims=1), node("ReduceMin", ["f"], ["mn"], axes=[0], keepdims=1),
             node("Sub", ["mx", "mn"], ["d"]), node("Add", ["d", "EPS"], ["de"]), node("Div", ["d", "de"], ["g"]),
             node("Sub", ["ONE", "g"], ["ng"]), node("ReduceMax", ["ng"], ["ng1"], axes=[1], keepdims=1),
             node("Mul", ["ng1", "K"], ["b"]), node("Add", ["logits_raw", "b"], ["logits"])]
    inits = [const("EPS", np.array([1e-9], np.float32)), const("ONE", np.array([1.0], np.float32)), const("K", bump)]
    report = check(source, build(tmp_path / "batchdep.onnx", extra_nodes=nodes, extra_inits=inits, opset=13))
    assert not report.verified and any("depend on the batch" in r for r in report.verdict["reasons"])
    assert report.metrics["single_images"] and report.verdict["failed_outputs"] == ["logits"]


# ---------------------------------------------------------------- 9. an output with no values


def test_an_empty_output_is_a_one_line_reason(tmp_path):
    empty = [node("Slice", ["aux_raw", "S0", "S0", "AX"], ["aux"])]
    inits = [const("S0", np.array([0], np.int64)), const("AX", np.array([1], np.int64))]
    source = build(tmp_path / "src.onnx", extra_nodes=empty, extra_inits=inits)
    report = check(source, build(tmp_path / "tgt.onnx", extra_nodes=empty, extra_inits=inits))
    assert not report.verified and report.verdict["failed_outputs"] == ["aux"]
    assert any("holds no values" in r for r in report.verdict["reasons"])
