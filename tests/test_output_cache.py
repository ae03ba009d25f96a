"""Source outputs kept between runs: reused for the same source and images, recomputed when anything changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from safeconvert.pipeline import CheckRequest, ConvertRequest, run_check, run_convert
from safeconvert.runners import load_runner
from safeconvert.runners.base import NamedOutput
from safeconvert.runners.tf_runner import KerasRunner
from safeconvert.user_cache import ENV_VAR
from safeconvert.validators import output_cache
from safeconvert.validators import validate as validate_module
from safeconvert.validators.calibration import default_calibration_dir, load_calibration
from safeconvert.validators.preprocess import Preprocessing


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(ENV_VAR, str(root))
    validate_module._SOURCE_OUTPUTS.clear()  # each check below starts as a new process would
    yield root
    validate_module._SOURCE_OUTPUTS.clear()


@pytest.fixture(scope="module")
def small_onnx(small_keras_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "small.onnx"
    assert run_convert(ConvertRequest(small_keras_file, out, repair=False)).report.verified
    return out


def _source_must_not_run(self, chunk):
    raise AssertionError("the source ran although its outputs were cached")


def test_a_second_check_reads_the_source_outputs_from_the_cache(small_keras_file, small_onnx, cache, monkeypatch):
    first = run_check(CheckRequest(small_keras_file, small_onnx)).report
    assert "source_outputs" not in first.calibration
    assert [p.suffix for p in (cache / "source-outputs").iterdir()] == [".npz"]

    validate_module._SOURCE_OUTPUTS.clear()
    monkeypatch.setattr(KerasRunner, "_run_chunk", _source_must_not_run)
    monkeypatch.setattr(KerasRunner, "_run_chunk_outputs", _source_must_not_run)
    second = run_check(CheckRequest(small_keras_file, small_onnx)).report
    assert second.calibration["source_outputs"].startswith("cached")
    assert second.metrics == first.metrics and second.verified


def test_other_images_or_preprocessing_run_the_source_again(small_keras_file, small_onnx, cache, tmp_path, monkeypatch):
    run_check(CheckRequest(small_keras_file, small_onnx))
    fewer = tmp_path / "photos"
    fewer.mkdir()
    for photo in sorted(default_calibration_dir().glob("*.jpg"))[:5]:
        shutil.copy(photo, fewer)
    validate_module._SOURCE_OUTPUTS.clear()
    assert "source_outputs" not in run_check(CheckRequest(small_keras_file, small_onnx, calib=fewer)).report.calibration
    validate_module._SOURCE_OUTPUTS.clear()
    report = run_check(CheckRequest(small_keras_file, small_onnx, preprocess="torch")).report
    assert "source_outputs" not in report.calibration
    assert len(list((cache / "source-outputs").iterdir())) == 3


def test_key_follows_image_bytes_source_bytes_and_preprocessing(small_keras_file, cache, tmp_path):
    runner = load_runner(small_keras_file)
    photos = tmp_path / "photos"
    shutil.copytree(default_calibration_dir(), photos)
    calib = load_calibration(photos)
    tf = Preprocessing("tf", *runner.spec.shape[1:3])
    key = output_cache.outputs_key(runner, calib, tf, 16)
    assert key == output_cache.outputs_key(runner, load_calibration(photos), tf, 16)
    assert key != output_cache.outputs_key(runner, calib, Preprocessing("torch", *runner.spec.shape[1:3]), 16)
    assert key != output_cache.outputs_key(runner, calib, tf, 8)

    first = calib.paths[0]
    first.write_bytes(calib.paths[1].read_bytes())  # same name, other photo
    assert output_cache.outputs_key(runner, load_calibration(photos), tf, 16) != key

    copy = tmp_path / "copy.keras"
    copy.write_bytes(small_keras_file.read_bytes() + b"\0")
    runner.path = copy
    assert output_cache.outputs_key(runner, calib, tf, 16) != key


def test_no_key_without_a_file_or_with_the_cache_off(small_keras_file, cache, monkeypatch):
    runner = load_runner(small_keras_file)
    calib, tf = load_calibration(None), Preprocessing("tf", *runner.spec.shape[1:3])
    runner.path = Path("<Keras model>")
    assert output_cache.outputs_key(runner, calib, tf, 16) is None
    runner.path = small_keras_file
    monkeypatch.setenv(ENV_VAR, "off")
    assert output_cache.outputs_key(runner, calib, tf, 16) is None


def test_npy_sets_are_keyed_by_their_values(tmp_path, small_keras_file, cache):
    runner = load_runner(small_keras_file)
    tf = Preprocessing("tf", *runner.spec.shape[1:3])
    array = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "a.npy", array)
    key = output_cache.outputs_key(runner, load_calibration(tmp_path / "a.npy"), tf, 16)
    array[0, 0, 0, 0] += 1
    np.save(tmp_path / "a.npy", array)
    assert output_cache.outputs_key(runner, load_calibration(tmp_path / "a.npy"), tf, 16) != key


def test_a_damaged_or_mismatched_entry_is_ignored(cache):
    output_cache.OUTPUTS.store("k", b"not an array")
    assert output_cache.load("k", 3) is None
    output_cache.store("k", [NamedOutput("logits", np.ones((2, 10))), NamedOutput("boxes", np.zeros((2, 4)))])
    assert output_cache.load("k", 3) is None  # written for another number of images
    loaded = output_cache.load("k", 2)  # every output comes back, named, in order
    assert [o.name for o in loaded] == ["logits", "boxes"]
    np.testing.assert_array_equal(loaded[0].values, np.ones((2, 10), dtype=np.float32))
    np.testing.assert_array_equal(loaded[1].values, np.zeros((2, 4), dtype=np.float32))


def _must_not_load(self, *args, **kwargs):
    raise AssertionError("the source was loaded although its outputs were cached")


def test_with_cached_outputs_the_source_is_not_even_loaded(small_keras_file, small_onnx, cache, monkeypatch):
    first = run_check(CheckRequest(small_keras_file, small_onnx)).report
    validate_module._SOURCE_OUTPUTS.clear()
    monkeypatch.setattr(KerasRunner, "__init__", _must_not_load)
    second = run_check(CheckRequest(small_keras_file, small_onnx)).report
    assert second.metrics == first.metrics and second.source["input"] == first.source["input"]
    assert [p.suffix for p in (cache / "source-specs").iterdir()] == [".json"]


def test_a_deferred_source_loads_when_asked_to_run_and_matches_the_real_one(small_keras_file, small_onnx, cache):
    from safeconvert.formats import Format
    from safeconvert.runners.deferred import DeferredRunner
    from safeconvert.validators.validate import load_source

    calib = load_calibration(None)
    run_check(CheckRequest(small_keras_file, small_onnx))  # caches the spec and the outputs on these photos
    deferred = load_source(small_keras_file, Format.KERAS, None, calib, "tf")
    assert isinstance(deferred, DeferredRunner) and deferred.kind == "KerasRunner"
    other_preset = load_source(small_keras_file, Format.KERAS, None, calib, "torch")
    assert isinstance(other_preset, KerasRunner)  # nothing cached for that preprocessing: loaded now, as before
    batch = np.random.default_rng(0).random((3, *deferred.spec.shape[1:]), dtype=np.float32)
    np.testing.assert_array_equal(deferred.run(batch), load_runner(small_keras_file).run(batch))
