"""The command line in CI: --version, a reason under --quiet/--json, calibration sets that do not fit, the
names a user knows in progress and reports, and framework chatter kept off the terminal unless --verbose."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from safeconvert import __version__, progress


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


def stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- version ----------------------------------------------------------------------------------------------

def test_version_flag():
    result = run("-m", "safeconvert", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"safeconvert {__version__}\n"


def test_doctor_shows_safeconvert_version():
    from safeconvert.environment import print_doctor

    console = Console(file=io.StringIO(), width=200)
    print_doctor(console)
    assert console.file.getvalue().splitlines()[0].startswith(f"safeconvert {__version__} ")


# --- a reason on stderr in the machine-read modes -----------------------------------------------------------

def test_quiet_run_that_is_not_verified_says_why(small_keras_file: Path, tmp_path: Path, cli):
    out = tmp_path / "q.tflite"
    result = cli("convert", small_keras_file, "-o", out, "--tflite-optimize", "--no-repair", "--quiet")
    assert result.returncode == 1 and result.stdout == "" and not out.exists()
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("safeconvert: NOT verified: ") and "max |diff|" in lines[0]


@pytest.mark.slow  # a second conversion of the same model, for the same line under --json
def test_json_run_that_is_not_verified_says_why_on_stderr(small_keras_file: Path, tmp_path: Path, cli):
    out = tmp_path / "q.tflite"
    as_json = cli("convert", small_keras_file, "-o", out, "--tflite-optimize", "--no-repair", "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["verdict"]["verified"] is False
    lines = stderr_lines(as_json)
    assert len(lines) == 1 and lines[0].startswith("safeconvert: NOT verified: "), as_json.stderr


# --- calibration sets that do not fit the model --------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 28, 28, 1), (4, 28, 28, 3), (4, 3, 24, 24)])
def test_calibration_set_of_the_wrong_shape(small_keras_file: Path, tmp_path: Path, cli, shape):
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).random(shape, dtype=np.float32))
    result = cli("check", small_keras_file, small_keras_file, "--calib", calib, "--quiet")
    assert result.returncode == 2, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("safeconvert: error: your calibration set does not match the model's input (N,32,32,3): ")


def test_channels_first_model_names_its_own_input_shape():
    from safeconvert.formats import InputSpec
    from safeconvert.validators.preprocess import to_model_layout

    spec = InputSpec("input", (None, 1, 28, 28), "NCHW", "float32")
    with pytest.raises(Exception, match=r"model's input \(N,1,28,28\): its images are 32x32 with 3 channel"):
        to_model_layout(np.zeros((2, 32, 32, 3), np.float32), spec)
    assert to_model_layout(np.zeros((2, 28, 28, 3), np.float32), spec).shape == (2, 1, 28, 28)


# --- names in the progress display and the report -------------------------------------------------------------

@contextmanager
def task_descriptions(monkeypatch) -> list[str]:
    """The description of every progress task a run starts (the real display is drawn ten times a second, so a
    short task may never be drawn; its description is what a person would read)."""
    seen: list[str] = []
    real_task = progress.task

    @contextmanager
    def recording(description: str, total: int | None = None):
        seen.append(description)
        with real_task(description, total) as advance:
            yield advance

    monkeypatch.setattr(progress, "task", recording)
    yield seen


def test_progress_and_report_use_names_the_user_knows(small_keras_file: Path, tmp_path: Path, monkeypatch):
    import safeconvert
    from safeconvert.summary import print_summary

    out = tmp_path / "m.tflite"
    with task_descriptions(monkeypatch) as seen, progress.shown(True, console=Console(file=io.StringIO())):
        report = safeconvert.convert(small_keras_file, out, repair=False)
    assert report.verified, report.verdict
    assert "running the conversion to m.tflite" in seen, seen  # the source's outputs may come from the cache
    assert not any("hop1" in text for text in seen), seen

    assert [hop.converter for hop in report.route] == ["tflite-converter"]
    assert set(report.route[0].options) == {"tflite_optimizations", "tflite_supported_types", "tflite_int8"}

    summary = Console(file=io.StringIO(), width=200)
    print_summary(report, summary)
    text = summary.file.getvalue()
    assert "torch_dynamo" not in text and "hop1" not in text and "m.tflite" in text


def test_display_name_of_scratch_models(tmp_path: Path):
    work = tmp_path / ".safeconvert-abc"
    assert progress.display_name(work / "hop1-tflite.tflite") == "hop1-tflite.tflite"
    with progress.named(work, "the conversion to m.tflite"):
        assert progress.display_name(work / "hop1-tflite.tflite") == "the conversion to m.tflite"
        assert progress.display_name(tmp_path / "model.keras") == "model.keras"
    assert progress.display_name(work / "hop1-tflite.tflite") == "hop1-tflite.tflite"


# --- framework output off the terminal ------------------------------------------------------------------------

FRAMEWORK_CHATTER = '''
import sys, warnings
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from safeconvert.quiet import framework_output_captured

shape = helper.make_tensor("shape", TensorProto.INT64, [2], [7, 5])
graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
with framework_output_captured(verbose=sys.argv[1] == "verbose") as terminal:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    try:
        session.run(None, {"x": np.zeros((2, 3), np.float32)})  # ONNX Runtime logs the failure natively
    except Exception:
        pass
    warnings.warn("a framework FutureWarning", FutureWarning)
    print("progress display", file=terminal)
print("safeconvert: the run's own line", file=sys.stderr)
'''


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_framework_output_is_shown_only_with_verbose(tmp_path: Path, mode: str):
    script = tmp_path / "chatter.py"
    script.write_text(FRAMEWORK_CHATTER)
    result = run(str(script), mode)
    assert result.returncode == 0, result.stderr
    chatter = ("[E:onnxruntime:" in result.stderr, "FutureWarning" in result.stderr)
    assert chatter == ((True, True) if mode == "verbose" else (False, False)), result.stderr
    assert result.stderr.index("progress display") < result.stderr.index("safeconvert: the run's own line")


@pytest.mark.slow  # a real repair: conversion to ONNX, a fault, localization and a re-validated fix
def test_repair_under_quiet_prints_nothing_from_the_frameworks(small_keras_file: Path, tmp_path: Path):
    """The TFLite float reference of a repair used to let absl's 'Please consider providing the trackable_obj'
    warning through to the terminal of a --quiet run."""
    from safeconvert.faults.api import inject

    converted, faulty, fixed = tmp_path / "m.onnx", tmp_path / "faulty.onnx", tmp_path / "fixed.onnx"
    assert run("-m", "safeconvert", "convert", str(small_keras_file), "-o", str(converted), "--quiet").returncode == 0
    inject(converted, faulty, "pads_dropped")
    result = run("-m", "safeconvert", "repair", str(small_keras_file), str(faulty), "-o", str(fixed), "--quiet")
    assert result.returncode == 0 and fixed.exists(), result.stderr
    assert result.stdout == "" and result.stderr == ""
