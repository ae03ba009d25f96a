"""The float-reference cache: keyed by content, reused, bounded, and never in the way of a result."""

from __future__ import annotations

import numpy as np
import pytest

from safeconvert.ir import reference_cache
from safeconvert.ir.reference_cache import cached_float_tflite, source_key
from safeconvert.user_cache import ENV_VAR, CacheFolder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(ENV_VAR, str(root))
    return root


def _exporter(payload: bytes, calls: list):
    def export() -> bytes:
        calls.append(1)
        return payload

    return export


def test_same_bytes_are_exported_once(tmp_path, cache):
    source = tmp_path / "m.keras"
    source.write_bytes(b"model one")
    calls: list = []
    assert cached_float_tflite(source, _exporter(b"flat", calls)) == b"flat"
    assert cached_float_tflite(source, _exporter(b"other", calls)) == b"flat"
    assert len(calls) == 1
    assert [p.suffix for p in (cache / "float-reference").iterdir()] == [".tflite"]  # no temporary file left


def test_changed_bytes_are_exported_again(tmp_path, cache):
    source = tmp_path / "m.keras"
    source.write_bytes(b"model one")
    calls: list = []
    cached_float_tflite(source, _exporter(b"first", calls))
    source.write_bytes(b"model two")
    assert cached_float_tflite(source, _exporter(b"second", calls)) == b"second"
    assert len(calls) == 2


def test_key_covers_savedmodel_files_and_their_names(tmp_path):
    folder = tmp_path / "sm"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "v.data").write_bytes(b"weights")
    before = source_key(folder, "2.0")
    (folder / "variables" / "v.data").write_bytes(b"weightz")
    assert source_key(folder, "2.0") != before
    (folder / "variables" / "v.data").write_bytes(b"weights")
    assert source_key(folder, "2.0") == before
    assert source_key(folder, "2.1") != before  # another TensorFlow may export differently


def test_off_exports_every_time(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "off")
    source = tmp_path / "m.keras"
    source.write_bytes(b"model")
    calls: list = []
    cached_float_tflite(source, _exporter(b"a", calls))
    cached_float_tflite(source, _exporter(b"a", calls))
    assert len(calls) == 2


def test_unwritable_cache_still_gives_the_export(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(ENV_VAR, str(blocker))
    source = tmp_path / "m.keras"
    source.write_bytes(b"model")
    assert cached_float_tflite(source, _exporter(b"flat", [])) == b"flat"


def test_oldest_entries_are_dropped(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(reference_cache, "EXPORTS", CacheFolder("float-reference", ".tflite", max_entries=2))
    for index in range(4):
        source = tmp_path / f"m{index}.keras"
        source.write_bytes(f"model {index}".encode())
        cached_float_tflite(source, _exporter(b"x" * index, []))
    assert len(list((cache / "float-reference").glob("*.tflite"))) == 2


def test_keras_source_imported_from_cache_matches_a_fresh_export(small_keras_file, cache, monkeypatch):
    """The second import of the same file does not export again and gives the same reference."""
    from safeconvert.ir import keras_reference, load_ir

    first = load_ir(small_keras_file)

    def no_export(model):
        raise AssertionError("exported again although the source did not change")

    monkeypatch.setattr(keras_reference, "keras_to_tflite", no_export)
    second = load_ir(small_keras_file)
    assert [layer.kind for layer in first.layers] == [layer.kind for layer in second.layers]
    batch = np.random.default_rng(0).random(first.imported.input_shape, dtype=np.float32)
    np.testing.assert_array_equal(first.run(batch), second.run(batch))
