"""The verdict cannot be talked into "verified": every output is compared, tolerances are relative to a robust
scale, near-ties are bounded, and --keep-quantisation keeps a numeric floor and a quantised model.

Each integration test builds small real models (Keras, converted to ONNX/TFLite by the real converters) and
plants one fault from the recipes of the paths it closes.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from safeconvert.models.small import CLASSES, INPUT_SIZE
from safeconvert.pipeline import CheckRequest, ConvertRequest, RepairRequest, run_check, run_convert, run_repair
from safeconvert.runners.base import NamedOutput
from safeconvert.validators.metrics import compare_all, compare_outputs, match_outputs, robust_scale
from safeconvert.validators.verdict import Thresholds, judge


# ---------------------------------------------------------------- model builders


def _stem(seed: int = 0):
    from safeconvert.runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="input")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    return keras, layers, inputs, layers.GlobalAveragePooling2D(name="gap")(x)


def two_head_model():
    """A detector-like model: class logits and 4 box values from one trunk."""
    keras, layers, inputs, x = _stem()
    logits = layers.Dense(CLASSES, name="logits")(x)
    boxes = layers.Dense(4, name="boxes")(x)
    return keras.Model(inputs, [logits, boxes], name="two_heads")


def masked_classifier():
    """A classifier whose head masks class 3 with logits + (-1e9) (an identity Dense with a masking bias)."""
    keras, layers, inputs, x = _stem()
    logits = layers.Dense(CLASSES, name="logits")(x)
    mask = layers.Dense(CLASSES, name="mask")
    masked = mask(logits)
    bias = np.zeros(CLASSES, np.float32)
    bias[3] = -1e9
    mask.set_weights([np.eye(CLASSES, dtype=np.float32), bias])
    return keras.Model(inputs, masked, name="masked")


def plain_classifier():
    keras, layers, inputs, x = _stem()
    return keras.Model(inputs, layers.Dense(CLASSES, name="logits")(x), name="plain")


def _set(model, layer: str, change) -> None:
    weights = model.get_layer(layer).get_weights()
    model.get_layer(layer).set_weights(change(*weights))


def _dynamic_range_tflite(model, path: Path) -> Path:
    """Dynamic-range quantisation (int8 weights) with TensorFlow directly."""
    from safeconvert.runners.tf_runner import quiet_tensorflow

    tf = quiet_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with contextlib.redirect_stdout(io.StringIO()):
        path.write_bytes(converter.convert())
    return path


def _to_onnx(keras_path: Path, out: Path) -> Path:
    """A faithful ONNX conversion of a (possibly faulty) Keras model, through safeconvert's own route."""
    assert run_convert(ConvertRequest(keras_path, out, repair=False)).report.verified
    return out


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("two_heads")
    model = two_head_model()
    model.save(folder / "clean.keras")
    _set(model, "boxes", lambda kernel, bias: (kernel * 0.0, bias * 0.0 - 68.0))  # the box head destroyed
    model.save(folder / "broken.keras")
    return {"clean": folder / "clean.keras", "broken_onnx": _to_onnx(folder / "broken.keras", folder / "broken.onnx")}


@pytest.fixture(scope="module")
def masked(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("masked")
    model = masked_classifier()
    model.save(folder / "clean.keras")
    _set(model, "conv2", lambda kernel, bias: (np.concatenate([kernel[..., :16], 0 * kernel[..., 16:]], axis=-1),
                                               np.concatenate([bias[:16], 0 * bias[16:]])))
    model.save(folder / "half_zeroed.keras")
    return {"clean": folder / "clean.keras", "faulty": _to_onnx(folder / "half_zeroed.keras", folder / "faulty.onnx")}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("plain")
    model = plain_classifier()
    model.save(folder / "clean.keras")
    clean_weights = model.get_weights()
    _set(model, "logits", lambda kernel, bias: (kernel * 5.0, bias))
    times5 = _dynamic_range_tflite(model, folder / "dense_x5_dynamic.tflite")
    _set(model, "logits", lambda kernel, bias: (kernel, bias * 5.0 + 7.0))
    model.save(folder / "x5_plus_7.keras")  # outputs 5 x logits + 7, stored in float
    model.set_weights(clean_weights)
    return {"clean": folder / "clean.keras", "dense_x5_dynamic": times5,
            "clean_dynamic": _dynamic_range_tflite(model, folder / "clean_dynamic.tflite"),
            "x5_plus_7_onnx": _to_onnx(folder / "x5_plus_7.keras", folder / "x5_plus_7.onnx")}


# ---------------------------------------------------------------- every output is compared (path 5)


def test_a_destroyed_second_head_is_not_verified_and_named(two_heads):
    report = run_check(CheckRequest(two_heads["clean"], two_heads["broken_onnx"])).report
    assert not report.verified
    assert report.verdict["failed_outputs"] == ["boxes"]
    assert any("'boxes'" in reason for reason in report.verdict["reasons"])
    assert report.metrics["top1_mismatches"] == 0  # the logits alone agree: what was compared before
    outputs = {o["name"]: o for o in report.metrics["outputs"]}
    assert set(outputs) == {"logits", "boxes"} and outputs["boxes"]["max_abs_diff"] > 10


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])  # TFLite renames (and may reorder) outputs
def test_a_faithful_two_head_conversion_is_verified_with_both_outputs(two_heads, tmp_path, suffix):
    report = run_convert(ConvertRequest(two_heads["clean"], tmp_path / f"two{suffix}", repair=False)).report
    assert report.verified, report.verdict
    assert sorted(o["name"] for o in report.metrics["outputs"]) == ["boxes", "logits"]
    assert report.metrics["outputs"][0]["name"] == "logits"


@pytest.mark.slow
def test_repair_does_not_write_a_destroyed_second_head_as_verified(two_heads, tmp_path):
    out = tmp_path / "out.onnx"
    report = run_repair(RepairRequest(two_heads["clean"], two_heads["broken_onnx"], output=out)).report
    if report.verified:  # only a real repair may be written as verified
        assert out.read_bytes() != two_heads["broken_onnx"].read_bytes()
        assert run_check(CheckRequest(two_heads["clean"], out)).report.verified
    else:
        assert not out.exists()


# ---------------------------------------------------------------- robust scale and bounded near-ties (path 3)


def test_a_masked_head_with_half_a_conv_zeroed_is_not_verified(masked):
    report = run_check(CheckRequest(masked["clean"], masked["faulty"])).report
    assert not report.verified
    # even allowing every label change, the numbers are judged on a scale the -1e9 mask does not blow up
    lenient = run_check(CheckRequest(masked["clean"], masked["faulty"], thresholds=Thresholds(max_mismatch=42))).report
    assert not lenient.verified
    assert lenient.metrics["source_scale"] < 1e3 < 1e9 <= lenient.metrics["source_output_range"]


@pytest.mark.slow
def test_repair_does_not_write_the_masked_fault_as_verified(masked, tmp_path):
    out = tmp_path / "out.onnx"
    report = run_repair(RepairRequest(masked["clean"], masked["faulty"], output=out)).report
    if report.verified:
        assert out.read_bytes() != masked["faulty"].read_bytes()
        assert run_check(CheckRequest(masked["clean"], out)).report.verified
    else:
        assert not out.exists()


# ---------------------------------------------------------------- --keep-quantisation floor (path 4)


def test_keep_quantisation_accepts_a_clean_dynamic_range_model(classifier):
    report = run_check(CheckRequest(classifier["clean"], classifier["clean_dynamic"],
                                    thresholds=Thresholds(labels_only=True))).report
    assert report.verified, report.verdict
    assert report.verdict["quantised_tensors"]


def test_keep_quantisation_rejects_dense_weights_times_five(classifier):
    report = run_check(CheckRequest(classifier["clean"], classifier["dense_x5_dynamic"],
                                    thresholds=Thresholds(labels_only=True))).report
    assert not report.verified
    assert any("--keep-quantisation" in reason for reason in report.verdict["reasons"])


def test_keep_quantisation_rejects_a_float_target_scaled_and_shifted(classifier):
    report = run_check(CheckRequest(classifier["clean"], classifier["x5_plus_7_onnx"],
                                    thresholds=Thresholds(labels_only=True))).report
    assert not report.verified
    assert report.verdict["quantisation_undone"]
    assert any(reason.startswith("quantisation undone") for reason in report.verdict["reasons"])


@pytest.mark.slow
def test_repair_keep_quantisation_never_writes_the_corrupted_target(classifier, tmp_path):
    from safeconvert.formats import Format
    from safeconvert.localize.tool import quantised_tensors

    out = tmp_path / "out.tflite"
    target = classifier["dense_x5_dynamic"]
    report = run_repair(RepairRequest(classifier["clean"], target, output=out, keep_quantisation=True)).report
    if report.verified:  # a real repair: a different, still quantised model that passes the floor
        assert out.read_bytes() != target.read_bytes()
        assert quantised_tensors(out, Format.TFLITE)
    else:
        assert not out.exists()


def test_a_float_layer_search_that_ends_all_float_reports_quantisation_undone(classifier, tmp_path):
    """Only every quantised layer in float passes a floor this strict: that is not a kept quantisation."""
    from safeconvert.repair.mixed_precision import keep_fewest_float
    from safeconvert.runners import load_runner
    from safeconvert.validators.calibration import load_calibration
    from safeconvert.validators.validate import validate
    from model_factories import keras_to_tflite

    source, calib = load_runner(classifier["clean"]), load_calibration(None)
    strict = Thresholds(max_mismatch=42, keep_quantisation=True, quantised_rtol=1e-4, min_cosine=0.0)
    check = lambda path: validate(source, load_runner(path), calib, "tf", strict)  # noqa: E731
    reference = keras_to_tflite(classifier["clean"], tmp_path / "float.tflite")
    search = keep_fewest_float(classifier["clean_dynamic"], reference, tmp_path, check,
                               lambda path: check(path).metrics.max_abs_diff)
    assert search.quantised_layers >= 1
    assert search.path is None and search.quantisation_undone
    assert search.describe().startswith("quantisation undone")


# ---------------------------------------------------------------- the pure verdict logic


def _named(**outputs) -> list[NamedOutput]:
    return [NamedOutput(name, np.asarray(values, np.float32)) for name, values in outputs.items()]


def test_outputs_pair_by_name_then_position_then_unique_shape():
    rng = np.random.default_rng(0)
    logits, boxes = rng.normal(size=(5, 10)), rng.normal(size=(5, 4))
    assert match_outputs(_named(a=logits, b=boxes), _named(b=boxes, a=logits))[:2] == ([(0, 1), (1, 0)], "name")
    assert match_outputs(_named(a=logits, b=boxes), _named(x=logits, y=boxes))[:2] == ([(0, 0), (1, 1)], "position")
    assert match_outputs(_named(a=logits, b=boxes), _named(y=boxes, x=logits))[:2] == ([(0, 1), (1, 0)], "shape")
    pairs, how, problem = match_outputs(_named(a=logits, b=boxes, c=boxes), _named(x=boxes, y=logits, z=boxes))
    assert pairs == [] and "cannot be paired" in problem
    assert "2 output(s), the source 1" in match_outputs(_named(a=logits), _named(a=logits, b=boxes))[2]


def test_outputs_that_cannot_be_paired_are_not_verified():
    rng = np.random.default_rng(0)
    one, two = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    source, target = _named(a=one, b=two, c=rng.normal(size=(4, 3))), _named(x=rng.normal(size=(4, 3)), y=one, z=two)
    verdict = judge(compare_all(source, target, list("abcd")), Thresholds(max_mismatch=4, rtol=1e9))
    assert not verdict.verified and "cannot be paired" in verdict.reasons[0]


def test_each_output_has_its_own_scale_and_the_failing_one_is_named():
    rng = np.random.default_rng(1)
    logits, boxes = rng.normal(size=(8, 10)) * 10, rng.normal(size=(8, 4)) * 0.01
    moved = boxes + 0.001  # small next to the logits, 10% of the boxes' own scale
    metrics = compare_all(_named(logits=logits, boxes=boxes), _named(logits=logits, boxes=moved), [str(i) for i in range(8)])
    verdict = judge(metrics, Thresholds())
    assert not verdict.verified and verdict.failed_outputs == ["boxes"]
    assert [o.name for o in metrics.outputs] == ["logits", "boxes"] and metrics.outputs[0].max_abs_diff == 0


def test_the_robust_scale_ignores_a_masking_constant():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(42, 10))
    masked = logits.copy()
    masked[:, 3] = -1e9
    assert robust_scale(masked)[1] == pytest.approx(robust_scale(np.delete(logits, 3, axis=1))[1], rel=0.5)
    assert robust_scale(masked)[1] < 10
    softmax = np.exp(logits * 3) / np.exp(logits * 3).sum(axis=1, keepdims=True)
    assert robust_scale(softmax)[1] > 0.1  # a sparse output keeps its real size


def test_a_masked_output_cannot_excuse_label_changes_as_near_ties():
    """The old rule: margin < 1% of the range (1e9 here) excused every label change."""
    rng = np.random.default_rng(3)
    source = rng.normal(size=(42, 10)).astype(np.float32)
    source[:, 3] = -1e9
    target = source.copy()
    order = np.argsort(-source, axis=1)
    rows = np.arange(42)
    target[rows, order[:, 0]], target[rows, order[:, 1]] = source[rows, order[:, 1]], source[rows, order[:, 0]]
    target[:, 0] += 0.5  # and the numbers move well beyond a tie
    metrics = compare_outputs(source, target, [str(i) for i in range(42)])
    verdict = judge(metrics, Thresholds(max_mismatch=0, rtol=1e9))  # labels alone
    assert not verdict.verified and verdict.near_ties_excused == 0


def test_near_ties_need_a_small_difference_and_are_capped():
    names = [f"img{i}" for i in range(6)]
    base = np.array([[5.0, 5.001, 0.0, -5.0]] * 6, np.float32) + np.arange(6, dtype=np.float32)[:, None]
    swapped = base.copy()
    swapped[:, [0, 1]] = base[:, [1, 0]]  # every image swaps its two nearly tied labels, moving 0.001
    tied = compare_outputs(base, swapped, names)
    assert tied.top1_mismatches == 6
    capped = judge(tied, Thresholds(max_near_ties=2))
    assert not capped.verified and capped.near_ties_excused == 2 and capped.near_ties_over_cap == 4
    assert judge(tied, Thresholds(max_near_ties=6)).verified
    far = swapped.copy()
    far[:, 2] += 0.5  # same swap, but the target moved far more than the tie at those images
    assert judge(compare_outputs(base, far, names), Thresholds(max_near_ties=6, rtol=1e9)).near_ties_excused == 0


def test_keep_quantisation_floor_is_numeric_not_labels_only():
    rng = np.random.default_rng(4)
    source = rng.normal(size=(10, 10)).astype(np.float32)
    metrics = compare_outputs(source, source * 5, [str(i) for i in range(10)])
    assert metrics.top1_mismatches == 0
    verdict = judge(metrics, Thresholds(keep_quantisation=True))
    assert not verdict.verified and "--keep-quantisation" in verdict.reasons[0]
    noisy = compare_outputs(source, source + rng.normal(scale=0.02, size=source.shape).astype(np.float32),
                            [str(i) for i in range(10)])
    assert judge(noisy, Thresholds(max_mismatch=10, keep_quantisation=True)).verified
