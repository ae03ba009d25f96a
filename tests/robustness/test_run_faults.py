"""Faults during a run: Ctrl-C and SIGTERM mid-conversion, a converter failure, a full disk, a read-only
output location. In every case: nothing (partial or unverified) at OUT, no scratch directory left, one line
on stderr, and the exit code from the README's table.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .contract import RunResult, assert_contract

pytestmark = pytest.mark.timeout(300)
SCRATCH = ".safeconvert-"


def run_main(argv: list[str], capfd) -> RunResult:
    from safeconvert.cli import main

    capfd.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(argv)
    captured = capfd.readouterr()
    return RunResult(ended.value.code, captured.out, captured.err)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def no_scratch(directory: Path) -> bool:
    return not any(p.name.startswith(SCRATCH) for p in directory.iterdir())


@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_mid_conversion_unwinds_cleanly(signum, code: int, word: str, small_keras_file: Path, tmp_path: Path):
    """The signal arrives while the scratch directory exists, i.e. during conversion or validation."""
    out, report = tmp_path / "out" / "m.onnx", tmp_path / "report.json"
    out.parent.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "safeconvert", "convert", str(small_keras_file), "-o", str(out),
                                "--report", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while no_scratch(out.parent):
            assert process.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.01)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=240)
    finally:
        process.kill()
    assert process.returncode == code, stderr
    assert word in one_line(stderr) and "Traceback" not in stderr
    assert not out.exists() and no_scratch(out.parent)
    assert json.loads(report.read_text())["exit_code"] == code


def _hardmax_onnx(path: Path) -> Path:
    """A valid image model ONNX Runtime runs, using an operator onnx2torch 1.5.15 has no converter for."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Hardmax", ["flat"], ["scores"])],
        "hardmax", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_converter_failure_leaves_nothing(tmp_path: Path, small_calib: Path, capfd):
    out = tmp_path / "out" / "m.pt"
    out.parent.mkdir()
    result = run_main(["convert", str(_hardmax_onnx(tmp_path / "hardmax.onnx")), "-o", str(out), "--calib", str(small_calib)], capfd)
    assert_contract(result, out, [out.parent])
    assert result.code == 3 and "onnx2torch failed" in result.stderr


@pytest.fixture
def mounted_tmpfs(tmp_path: Path, request):
    """A fresh tmpfs (size and options from the test's param); skipped where mounting is not allowed."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", request.param, "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("mounted_tmpfs", ["size=512k"], indirect=True)
def test_full_disk_while_writing(mounted_tmpfs: Path, small_keras_file: Path, small_calib: Path, capfd):
    """The filesystem under OUT has 8 KB left; the converted ONNX model needs about 36 KB."""
    filler = mounted_tmpfs / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(mounted_tmpfs).free - 8192))
    out = mounted_tmpfs / "m.onnx"
    result = run_main(["convert", str(small_keras_file), "-o", str(out), "--calib", str(small_calib)], capfd)
    assert_contract(result, out, [mounted_tmpfs])
    assert result.code == 2 and "No space left on device" in one_line(result.stderr)


def test_file_size_limit_while_writing(small_keras_file: Path, small_calib: Path, tmp_path: Path):
    """Without a mount: RLIMIT_FSIZE makes writes beyond 16 KB fail with EFBIG, like a full quota would."""
    trampoline = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                  "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384)); "
                  "os.execv(sys.executable, [sys.executable, '-m', 'safeconvert', *sys.argv[1:]])")
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    completed = subprocess.run([sys.executable, "-c", trampoline, "convert", str(small_keras_file), "-o", str(out),
                                "--calib", str(small_calib)], capture_output=True, text=True, timeout=280)
    result = RunResult(completed.returncode, completed.stdout, completed.stderr)
    assert_contract(result, out, [out.parent])
    assert result.code == 2 and "File too large" in one_line(result.stderr)


@pytest.mark.parametrize("mounted_tmpfs", ["size=64k,ro"], indirect=True)
def test_read_only_output_directory(mounted_tmpfs: Path, small_keras_file: Path, capfd):
    """Root ignores permission bits, not a read-only mount: the honest way to test this as root."""
    result = run_main(["convert", str(small_keras_file), "-o", str(mounted_tmpfs / "m.onnx")], capfd)
    assert result.code == 2 and "not writable" in one_line(result.stderr)
