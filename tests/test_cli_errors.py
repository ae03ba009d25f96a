"""Bad input through the real command line: one line on stderr, exit code 2, nothing at OUT."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safeconvert", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


def test_missing_source(tmp_path: Path):
    out = tmp_path / "out.onnx"
    assert_one_line_error(run_cli("convert", str(tmp_path / "nope.keras"), "-o", str(out)), 2, "no such file")
    assert not out.exists()


@pytest.mark.parametrize("name,content,fragment", [
    ("empty.onnx", b"", "is empty"),
    ("notes.txt", b"just some text", "not a recognised model"),
    ("corrupt.onnx", b"\x08\x07\x12\x05junk" + bytes(range(200)), "not a loadable ONNX model"),
    ("corrupt.tflite", b"\x1c\x00\x00\x00TFL3" + b"\xff" * 64, "not a loadable TFLite model"),
    ("corrupt.keras", b"PK\x03\x04 truncated", "corrupt archive"),
])
def test_broken_source_files(tmp_path: Path, name: str, content: bytes, fragment: str):
    source = tmp_path / name
    source.write_bytes(content)
    out = tmp_path / "out.pt"
    result = run_cli("convert", str(source), "-o", str(out))
    assert_one_line_error(result, 2, fragment)
    assert not out.exists()
    assert not any(p.name.startswith(".safeconvert-") for p in tmp_path.iterdir())


def test_unknown_target_format_and_preset(tmp_path: Path):
    source = tmp_path / "m.tflite"
    source.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    assert_one_line_error(run_cli("convert", str(source), "-o", str(tmp_path / "x.bin")), 2, "pass --to")
    assert_one_line_error(run_cli("convert", str(source), "-o", str(tmp_path / "x.onnx"), "--preprocess", "magic"), 2,
                          "unknown preprocessing")


def test_output_directory_missing(tmp_path: Path):
    source = tmp_path / "m.tflite"
    source.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    assert_one_line_error(run_cli("convert", str(source), "-o", str(tmp_path / "no" / "x.onnx")), 2, "does not exist")


def test_empty_calibration_directory(tmp_path: Path):
    source = tmp_path / "m.tflite"
    source.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    empty = tmp_path / "calib"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert_one_line_error(run_cli("convert", str(source), "-o", str(tmp_path / "x.onnx"), "--calib", str(empty)), 2, "no images")


def test_usage_error_exit_code():
    result = run_cli("convert")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_help_and_doctor_start_without_heavy_frameworks():
    probe = "import sys, safeconvert.cli; print(any(m in sys.modules for m in ('tensorflow', 'torch', 'tvm', 'onnxruntime')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False"
    assert run_cli("--help").returncode == 0
