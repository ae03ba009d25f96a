"""Paths others can predict or plant: a report never lands on a model, OUT's data file and lock file are never
taken over by a file or link found at their names, an unsafe cache is not used, and the up-to-date rule sees
new calibration pixels written with the old size and time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from safeconvert.errors import BadInputError
from safeconvert.user_cache import ENV_VAR

from .test_cache import cli, onnx_logits, tiny_onnx  # noqa: F401  (cli is a fixture)

pytestmark = pytest.mark.timeout(120)


def one_line_error(stderr: str, fragment: str) -> bool:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return len(lines) == 1 and fragment in lines[0]


@pytest.fixture
def pair(tmp_path, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.setenv(ENV_VAR, "off")
    source = tiny_onnx(tmp_path / "src.onnx")
    target = tiny_onnx(tmp_path / "tgt.onnx", external=False)
    return source, target


# 1. report and page paths


@pytest.mark.parametrize("existing", [False, True])
def test_a_report_naming_out_is_refused_before_any_work(tmp_path, cli, pair, existing):
    source, target = pair
    out = tmp_path / "o2.onnx"
    if existing:
        out.write_bytes(b"the user's model")
    result = cli("repair", source, target, "-o", out, "--report", out, "--quiet")
    assert result.code == 2 and one_line_error(result.stderr, "OUT"), result.stderr
    assert out.read_bytes() == b"the user's model" if existing else not out.exists()


def test_a_report_naming_the_source_its_data_or_a_link_to_the_target_is_refused(tmp_path, cli, pair):
    source, target = pair
    before = {p: p.read_bytes() for p in (source, Path(f"{source}.data"), target)}
    os.symlink(target, tmp_path / "link.json")
    os.link(target, tmp_path / "hard.json")
    for report in (source, Path(f"{source}.data"), tmp_path / "link.json", tmp_path / "hard.json"):
        result = cli("check", source, target, "--report", report, "--quiet")
        assert result.code == 2 and one_line_error(result.stderr, "would overwrite"), (report, result.stderr)
    assert {p: p.read_bytes() for p in before} == before


def test_a_page_naming_out_or_the_report_is_refused_and_no_old_report_is_rendered(tmp_path, cli, pair):
    source, target = pair
    out, old = tmp_path / "o6.onnx", tmp_path / "old.json"
    old.write_text('{"command": "check", "source": {}, "target": {}}')
    result = cli("repair", source, target, "-o", out, "--report", old, "--html", out, "--quiet")
    assert result.code == 2 and one_line_error(result.stderr, "OUT"), result.stderr
    assert not out.exists()
    result = cli("check", source, target, "--report", old, "--html", old, "--quiet")
    assert result.code == 2 and one_line_error(result.stderr, "the report"), result.stderr


def test_the_python_api_refuses_a_report_over_the_source(pair):
    from safeconvert.pipeline import CheckRequest, ConvertRequest, run_check, run_convert

    source, target = pair
    with pytest.raises(BadInputError, match="SRC"):
        run_check(CheckRequest(source, target, report_path=source))
    with pytest.raises(BadInputError, match="OUT"):
        run_convert(ConvertRequest(source, source.with_name("x.onnx"), report_path=source.with_name("x.onnx")))
    assert not source.with_name("x.onnx").exists()


# 2. OUT's data file


def _staged(tmp_path: Path) -> tuple[Path, Path]:
    from safeconvert.atomic import stage_onnx

    model = tiny_onnx(tmp_path / "m.onnx")
    work = tmp_path / "work"
    work.mkdir()
    return stage_onnx(model, work / "out.onnx"), next(work.glob("out.onnx.*.data"))


@pytest.mark.parametrize("planted", ["symlink", "other bytes"])
def test_a_link_or_other_bytes_at_the_data_name_are_replaced_only_with_force(tmp_path, planted):
    from safeconvert import atomic

    staged, data = _staged(tmp_path)  # the name is predictable: the same model gives the same name
    elsewhere = tmp_path / "attacker.data"
    elsewhere.write_bytes(data.read_bytes() if planted == "symlink" else b"other")
    final, out = tmp_path / data.name, tmp_path / "out.onnx"
    os.symlink(elsewhere, final) if planted == "symlink" else shutil.copyfile(elsewhere, final)

    with pytest.raises(BadInputError, match="--force"):
        atomic._place_file(staged, out, force=False)
    assert not out.exists() and (final.is_symlink() == (planted == "symlink"))

    atomic._place_file(staged, out, force=True)
    assert not final.is_symlink() and os.stat(final).st_nlink == 1
    elsewhere.write_bytes(b"\0" * elsewhere.stat().st_size)  # the planted file changes: OUT does not
    np.testing.assert_allclose(onnx_logits(out), onnx_logits(tmp_path / "m.onnx"), rtol=1e-6)


def test_a_hard_link_with_the_right_bytes_at_the_data_name_is_not_adopted(tmp_path):
    from safeconvert import atomic

    staged, data = _staged(tmp_path)
    elsewhere = tmp_path / "attacker.data"
    shutil.copyfile(data, elsewhere)
    final, out = tmp_path / data.name, tmp_path / "out.onnx"
    os.link(elsewhere, final)

    atomic._place_file(staged, out, force=False)  # same bytes: no --force needed, but its own copy
    assert os.stat(final).st_nlink == 1 and not os.path.samefile(final, elsewhere)
    elsewhere.write_bytes(b"\0" * elsewhere.stat().st_size)
    np.testing.assert_allclose(onnx_logits(out), onnx_logits(tmp_path / "m.onnx"), rtol=1e-6)


# 3. the lock file


def test_the_lock_file_does_not_follow_a_planted_link(tmp_path):
    from safeconvert.atomic import SCRATCH_PREFIX, output_lock

    out, victim = tmp_path / "o7.onnx", tmp_path / "created_by_the_lock"
    os.symlink(victim, tmp_path / f"{SCRATCH_PREFIX}lock-{out.name}")
    with pytest.raises(BadInputError, match="symbolic link"):
        with output_lock(out, wait_seconds=0):
            pass
    assert not victim.exists()


# 4. the cache


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    from safeconvert import user_cache

    monkeypatch.setattr(user_cache, "_NOTICES", [], raising=False)
    root = tmp_path / "cache"
    monkeypatch.setenv(ENV_VAR, str(root))
    return root


def test_the_cache_is_created_private(private_cache):
    from safeconvert.user_cache import CacheFolder

    CacheFolder("kind", ".bin", 4).store("key", b"payload")
    assert (private_cache.stat().st_mode & 0o777) == 0o700
    assert ((private_cache / "kind").stat().st_mode & 0o777) == 0o700
    assert CacheFolder("kind", ".bin", 4).load("key") == b"payload"


@pytest.mark.parametrize("loosened", ["root", "folder", "entry"])
def test_a_cache_others_can_write_is_not_used_and_the_notes_say_so(private_cache, loosened):
    from safeconvert import user_cache

    kind = user_cache.CacheFolder("kind", ".bin", 4)
    kind.store("key", b"payload")
    path = {"root": private_cache, "folder": private_cache / "kind",
            "entry": kind.entry(private_cache, "key")}[loosened]
    os.chmod(path, path.stat().st_mode | 0o022)
    assert kind.load("key") is None
    cache_notices = user_cache.cache_notices
    assert len(cache_notices()) == 1 and "writable by other users" in cache_notices()[0]


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_cache_of_another_user_is_not_used(private_cache):
    from safeconvert.user_cache import CacheFolder

    kind = CacheFolder("kind", ".bin", 4)
    kind.store("key", b"payload")
    os.chown(private_cache / "kind", 12345, -1)
    assert kind.load("key") is None


def test_a_run_with_an_unsafe_cache_succeeds_and_its_report_says_so(tmp_path, cli, private_cache):
    import json

    source = tiny_onnx(tmp_path / "src.onnx")
    private_cache.mkdir(mode=0o777)
    os.chmod(private_cache, 0o777)
    result = cli("check", source, source, "--report", tmp_path / "r.json", "--quiet")
    assert result.code == 0, result.stderr
    notes = json.loads((tmp_path / "r.json").read_text())["notes"]
    assert len(notes) == 1 and "cache was not used" in notes[0]
    assert list(private_cache.iterdir()) == []


# 5. the up-to-date rule and calibration images


def test_new_calibration_pixels_with_the_old_size_and_time_change_the_fingerprint(tmp_path, monkeypatch):
    from PIL import Image

    from safeconvert.pipeline import ConvertRequest
    from safeconvert.uptodate import fingerprint

    monkeypatch.setenv(ENV_VAR, "off")
    source, calib = tiny_onnx(tmp_path / "src.onnx"), tmp_path / "cal"
    calib.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(calib / f"{i}.bmp")
    request = ConvertRequest(source, tmp_path / "out.pt2", calib=calib)
    first = fingerprint(request)
    for i in range(3):
        image, replacement = calib / f"{i}.bmp", calib / f"{i}.new"
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(replacement, format="BMP")
        stamp = image.stat()
        os.utime(replacement, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        os.replace(replacement, image)
    assert fingerprint(request) == fingerprint(request)
    assert fingerprint(request)["settings_sha256"] != first["settings_sha256"]
