"""Pure logic of calibration loading, preprocessing, metrics and the verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from safeconvert.errors import BadInputError
from safeconvert.formats import InputSpec
from safeconvert.validators.calibration import default_calibration_dir, load_calibration, read_image
from safeconvert.validators.metrics import compare_outputs, source_margins
from safeconvert.validators.preprocess import Preprocessing, normalise, resize_and_crop, to_model_layout
from safeconvert.validators.verdict import Thresholds, judge


def test_packaged_photos_are_42_real_images():
    calib = load_calibration(None)
    assert len(calib) == 42
    assert (default_calibration_dir() / "SOURCES.md").is_file()
    first = calib.read(0, 2)
    assert all(img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 for img in first)


def test_image_modes_are_converted_to_rgb(tmp_path: Path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8), "L").save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 255, (40, 50, 4), dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (40, 50), dtype=np.uint16)).save(tmp_path / "deep.png")
    calib = load_calibration(tmp_path)
    images = calib.read(0, len(calib))
    assert [img.shape for img in images] == [(40, 50, 3)] * 3
    deep = read_image(tmp_path / "deep.png")
    assert deep.max() > 200  # 16-bit rescaled to 8 bits, not clipped to white or black


def test_empty_and_broken_calibration_sets_are_bad_input(tmp_path: Path):
    with pytest.raises(BadInputError, match="no images"):
        load_calibration(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInputError, match="no images"):
        load_calibration(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(BadInputError, match="broken.jpg"):
        load_calibration(tmp_path)
    with pytest.raises(BadInputError, match="not found"):
        load_calibration(tmp_path / "missing")


def test_npy_sets_uint8_and_float(tmp_path: Path):
    images = np.random.default_rng(1).integers(0, 255, (3, 3, 32, 32), dtype=np.uint8)  # NCHW
    np.save(tmp_path / "imgs.npy", images)
    calib = load_calibration(tmp_path / "imgs.npy")
    assert len(calib) == 3 and not calib.preprocessed
    assert calib.read(0, 1)[0].shape == (32, 32, 3)
    np.save(tmp_path / "ready.npy", np.zeros((2, 8, 8, 3), np.float32))
    assert load_calibration(tmp_path / "ready.npy").preprocessed
    np.save(tmp_path / "flat.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(BadInputError, match="shape"):
        load_calibration(tmp_path / "flat.npy")


def test_presets():
    pixels = np.full((1, 2, 2, 3), 255.0, np.float32)
    assert np.allclose(normalise(pixels, "tf"), 1.0)
    assert np.allclose(normalise(pixels, "raw"), 1.0)
    assert np.allclose(normalise(pixels, "torch")[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], atol=1e-6)
    rgb = np.zeros((1, 1, 1, 3), np.float32)
    rgb[..., 0] = 200.0  # red only
    bgr = normalise(rgb, "caffe")
    assert np.isclose(bgr[0, 0, 0, 2], 200.0 - 123.68) and np.isclose(bgr[0, 0, 0, 0], -103.939)
    with pytest.raises(BadInputError):
        normalise(pixels, "nope")


def test_resize_and_crop_centre():
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 250:350] = 255  # a bright vertical band in the middle
    out = resize_and_crop(image, 224, 224)
    assert out.shape == (224, 224, 3)
    assert out[:, 112].mean() > 200 and out[:, 0].mean() < 10


def test_layout_follows_the_model():
    batch = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    nchw = to_model_layout(batch, InputSpec("x", (None, 3, 4, 5), "NCHW", "float32"))
    assert nchw.shape == (2, 3, 4, 5) and np.array_equal(nchw[1, 2], batch[1, :, :, 2])
    assert to_model_layout(batch, InputSpec("x", (None, 4, 5, 3), "NHWC", "float32")).shape == batch.shape
    assert Preprocessing("raw", 8, 8).apply([np.zeros((10, 12, 3), np.uint8)]).shape == (1, 8, 8, 3)


def test_metrics_and_verdict():
    rng = np.random.default_rng(2)
    source = rng.normal(size=(6, 10)).astype(np.float32)
    same = compare_outputs(source, source.copy(), [f"img{i}" for i in range(6)])
    assert same.top1_agreement == 1.0 and same.max_abs_diff == 0.0 and judge(same, Thresholds()).verified
    flipped = source.copy()
    flipped[3] = -flipped[3]
    metrics = compare_outputs(source, flipped, [f"img{i}" for i in range(6)])
    assert metrics.top1_mismatches == 1 and metrics.disagreements[0].image == "img3"
    assert metrics.disagreements[0].source_label == int(np.argmax(source[3]))
    verdict = judge(metrics, Thresholds(max_mismatch=0))
    assert not verdict.verified and any("change top-1" in r for r in verdict.reasons)
    assert not judge(metrics, Thresholds(max_mismatch=1, rtol=1e-3)).verified  # numbers still differ
    assert judge(metrics, Thresholds(max_mismatch=1, rtol=10.0)).verified


def test_small_numeric_drift_is_judged_by_rtol():
    source = np.array([[0.0, 10.0, 5.0]], np.float32)
    drift = source + np.array([[0.0, 0.005, 0.0]], np.float32)
    metrics = compare_outputs(source, drift, ["a"])
    assert judge(metrics, Thresholds(rtol=1e-3)).verified  # 0.005 / 10 = 5e-4
    assert not judge(metrics, Thresholds(rtol=1e-4)).verified


def test_shape_mismatch_is_not_verified():
    metrics = compare_outputs(np.zeros((2, 10)), np.zeros((2, 5)), ["a", "b"])
    assert not metrics.output_shape_matches and not judge(metrics, Thresholds(max_mismatch=5, rtol=1e9)).verified


def test_source_margins():
    margins = source_margins(np.array([[1.0, 3.0, 2.5], [0.0, 0.0, 0.0]]))
    assert np.allclose(margins, [0.5, 0.0])


def test_near_tied_label_swaps_are_ambiguous_not_faults():
    # image 0: the source nearly ties (margin 0.001 of a range of ~10); the target swaps its two best labels
    source = np.array([[5.0, 5.001, 0.0, -5.0], [9.0, 1.0, 0.0, -1.0]], np.float32)
    swapped = source.copy()
    swapped[0, 0], swapped[0, 1] = 5.0004, 5.0
    metrics = compare_outputs(source, swapped, ["tie", "clear"])
    assert metrics.top1_mismatches == 1
    verdict = judge(metrics, Thresholds(rtol=1e-3))
    assert verdict.verified and verdict.ambiguous_images == ["tie"]
    # a clear image that flips is a fault whatever the numbers
    flipped = source.copy()
    flipped[1] = [1.0, 9.0, 0.0, -1.0]
    assert not judge(compare_outputs(source, flipped, ["tie", "clear"]), Thresholds(labels_only=True)).verified


def test_labels_only_ignores_rtol():
    source = np.array([[0.0, 10.0, 5.0]], np.float32)
    drift = source + np.array([[0.0, 0.5, 0.0]], np.float32)
    metrics = compare_outputs(source, drift, ["a"])
    assert not judge(metrics, Thresholds()).verified
    assert judge(metrics, Thresholds(labels_only=True)).verified


def test_keras_runner_traced_graph_matches_the_eager_call(small_keras_file):
    """The Keras source runs as a traced graph (less memory, faster); its outputs are Keras' own, for every
    chunk size (the last chunk of a calibration set is usually smaller)."""
    import numpy as np

    from safeconvert.runners.tf_runner import KerasRunner

    runner = KerasRunner(small_keras_file)
    batch = np.random.default_rng(0).random((runner.max_chunk + 3, *runner.spec.shape[1:]), dtype=np.float32)
    eager = np.asarray(runner.model(batch, training=False))
    np.testing.assert_allclose(runner.run(batch), eager, rtol=1e-5, atol=1e-6)
    assert runner._graph not in (None, False), "the traced graph ran"
