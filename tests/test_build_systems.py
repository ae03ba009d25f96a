"""The Makefile rule and the CI step exactly as docs/build-systems.md shows them, run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "build-systems.md"


def code_block(language: str) -> str:
    """The first fenced block of `language` in the build-systems document."""
    match = re.search(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"no {language} block in {DOC.name}"
    return match.group(1)


@pytest.fixture
def shell_env() -> dict[str, str]:
    """PATH with this interpreter's `safeconvert` first, as an activated environment would have it."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_makefile_pattern_rule(small_keras_file: Path, tmp_path: Path, shell_env: dict[str, str]):
    (tmp_path / "Makefile").write_text(code_block("make"))
    shutil.copy(small_keras_file, tmp_path / "model.keras")
    shutil.copy(small_keras_file, tmp_path / "strict.keras")

    first = run(["make", "model.onnx"], tmp_path, shell_env)
    assert first.returncode == 0, first.stdout + first.stderr
    target = tmp_path / "model.onnx"
    assert target.is_file() and json.loads((tmp_path / "model.report.json").read_text())["verdict"]["verified"]
    built = (target.read_bytes(), target.stat().st_mtime_ns)

    second = run(["make", "model.onnx"], tmp_path, shell_env)
    assert second.returncode == 0 and "up to date" in second.stdout, second.stdout + second.stderr
    assert (target.read_bytes(), target.stat().st_mtime_ns) == built

    # A limit no float conversion meets: verification fails, so make fails and the target does not appear.
    failing = run(["make", "strict.onnx", "SAFECONVERT_FLAGS=--rtol 1e-12 --no-repair"], tmp_path, shell_env)
    assert failing.returncode != 0
    assert not (tmp_path / "strict.onnx").exists()
    assert json.loads((tmp_path / "strict.report.json").read_text())["exit_code"] == 1
    assert not any(p.name.startswith(".safeconvert-") for p in tmp_path.iterdir())


def test_ci_step_converts_again_to_the_same_bytes(small_keras_file: Path, tmp_path: Path, shell_env: dict[str, str]):
    step = code_block("sh")
    assert all(line.strip() in code_block("yaml") for line in step.splitlines())  # the two examples agree
    (tmp_path / "models").mkdir()
    shutil.copy(small_keras_file, tmp_path / "models" / "classifier.keras")

    first = run(["bash", "-e", "-c", step], tmp_path, shell_env)
    assert first.returncode == 0 and first.stdout == "", first.stdout + first.stderr
    target = tmp_path / "dist" / "classifier.onnx"
    built = (target.read_bytes(), target.stat().st_mtime_ns)

    again = run(["bash", "-e", "-c", step], tmp_path, shell_env)  # --force: converted and verified again
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
    assert target.read_bytes() == built[0] and target.stat().st_mtime_ns != built[1]

    rebuilt = target.stat().st_mtime_ns
    unforced = step.replace(" --force", "")  # without --force the same step is a no-op
    assert run(["bash", "-e", "-c", unforced], tmp_path, shell_env).returncode == 0
    assert target.stat().st_mtime_ns == rebuilt
    assert not any(p.name.startswith(".safeconvert-") for p in target.parent.iterdir())
    assert json.loads((tmp_path / "dist" / "classifier.report.json").read_text())["verdict"]["verified"]
