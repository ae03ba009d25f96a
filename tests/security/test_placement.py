"""Output placement: OUT gets the verified model with its own data files, never replaces a file that appeared
during the run without --force, and concurrent runs on one OUT never both write; nothing is left beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from safeconvert.errors import BadInputError

from .test_cache import cli, onnx_logits, tiny_onnx  # noqa: F401  (cli is a fixture)

pytestmark = pytest.mark.timeout(300)


def leftovers(folder: Path) -> list[str]:
    """Scratch directories and lock files a run must remove."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".safeconvert-")]


def one_line_error(stderr: str, fragment: str) -> bool:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return len(lines) == 1 and fragment in lines[0]


def test_repair_writes_an_onnx_target_with_its_own_external_data(tmp_path, cli):
    source = tiny_onnx(tmp_path / "source.onnx", external=False)
    (tmp_path / "target").mkdir()
    target = tiny_onnx(tmp_path / "target" / "target.onnx")  # the same model, weights in target.onnx.data
    (tmp_path / "stale").mkdir()
    tiny_onnx(tmp_path / "stale" / "target.onnx", seed=1)  # another model's data, under the name OUT would borrow
    out = tmp_path / "stale" / "repaired.onnx"

    result = cli("repair", source, target, "-o", out)
    assert result.code == 0, result.stderr
    np.testing.assert_allclose(onnx_logits(out), onnx_logits(target), rtol=1e-6)
    (tmp_path / "target" / "target.onnx.data").unlink()  # OUT does not lean on the target's data either
    np.testing.assert_allclose(onnx_logits(out), onnx_logits(source), rtol=1e-6)
    assert leftovers(tmp_path / "stale") == []


def test_a_file_written_at_out_during_the_run_is_not_replaced(tmp_path, cli, monkeypatch):
    from safeconvert import pipeline

    source, out = tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.pt"
    real_load_source = pipeline.load_source

    def user_writes_out_meanwhile(*args, **kwargs):  # the real loading; meanwhile the user saves a file at OUT
        out.write_bytes(b"the user's own model")
        return real_load_source(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_source", user_writes_out_meanwhile)
    result = cli("convert", source, "-o", out, "--no-repair")
    assert result.code == 2 and one_line_error(result.stderr, "--force"), result.stderr
    assert out.read_bytes() == b"the user's own model"
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_two_concurrent_converts_to_one_out_never_both_write(tmp_path):
    source, out = tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.pt"
    command = [sys.executable, "-m", "safeconvert", "convert", str(source), "-o", str(out), "--no-repair", "--quiet"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=280), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert one_line_error(loser, str(out)), loser
    assert out.is_file() and leftovers(tmp_path) == []


def test_placing_onnx_with_external_data_ignores_and_replaces_neighbours(tmp_path):
    from safeconvert.atomic import place_model, scratch_dir
    from safeconvert.model_files import model_digest

    out = tmp_path / "model.onnx"
    (tmp_path / "old").mkdir()
    tiny_onnx(tmp_path / "old" / "model.onnx", seed=1)
    os.replace(tmp_path / "old" / "model.onnx.data", tmp_path / "model.onnx.data")  # a stale neighbour
    with scratch_dir(out) as work:
        built = tiny_onnx(work / "built.onnx", seed=0)
        expected = onnx_logits(built)
        written = place_model(built, out, force=False, work=work)
    np.testing.assert_allclose(onnx_logits(out), expected, rtol=1e-6)
    assert model_digest(out) == written
    first_data = {p.name for p in tmp_path.glob("model.onnx.*.data")}
    assert len(first_data) == 1

    with scratch_dir(out) as work:  # replaced (--force) by another model: its data replaces the earlier data
        built = tiny_onnx(work / "built.onnx", seed=2)
        expected = onnx_logits(built)
        place_model(built, out, force=True, work=work)
    np.testing.assert_allclose(onnx_logits(out), expected, rtol=1e-6)
    now = {p.name for p in tmp_path.glob("model.onnx.*.data")}
    assert len(now) == 1 and now != first_data
    assert (tmp_path / "model.onnx.data").exists()  # not ours: left alone
    assert leftovers(tmp_path) == []


def test_a_directory_that_appeared_at_out_is_not_replaced(tmp_path):
    from safeconvert.atomic import place_model, scratch_dir

    out = tmp_path / "saved"
    with scratch_dir(out) as work:
        built = work / "built"
        built.mkdir()
        (built / "saved_model.pb").write_bytes(b"graph")
        out.mkdir()  # appeared during the run: empty, which a plain rename would silently replace
        with pytest.raises(BadInputError, match="--force"):
            place_model(built, out, force=False, work=work)
    assert out.is_dir() and not any(out.iterdir())
    assert leftovers(tmp_path) == []


def test_a_run_placing_while_another_holds_out_waits_then_fails_with_exit_2(tmp_path, monkeypatch):
    from safeconvert import atomic

    out = tmp_path / "m.onnx"
    monkeypatch.setattr(atomic, "LOCK_WAIT_SECONDS", 0.3)
    held, release = threading.Event(), threading.Event()

    def other_run():
        with atomic.output_lock(out):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_run)
    thread.start()
    try:
        held.wait(10)
        with atomic.scratch_dir(out) as work:
            built = work / "built.tflite"
            built.write_bytes(b"model")
            with pytest.raises(BadInputError, match="another safeconvert run is writing") as refused:
                atomic.place_model(built, out, force=True, work=work)
        assert refused.value.exit_code == 2 and not out.exists()
    finally:
        release.set()
        thread.join()
    assert leftovers(tmp_path) == []
