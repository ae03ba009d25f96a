"""Real conversions of small seeded models through the whole pipeline: verdicts, outputs, reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from safeconvert.pipeline import CheckRequest, ConvertRequest, run_check, run_convert
from safeconvert.runners import load_runner
from safeconvert.validators.calibration import load_calibration
from safeconvert.validators.preprocess import to_model_layout
from safeconvert.validators.validate import iter_inputs, preprocessing_for
from safeconvert.wrappers.base import ConversionOptions


@pytest.fixture(scope="module")
def small_onnx(small_keras_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "small.onnx"
    outcome = run_convert(ConvertRequest(small_keras_file, out))
    assert outcome.report.verified, outcome.report.verdict
    return out


def test_faithful_conversion_is_verified_and_written(small_onnx: Path):
    assert small_onnx.is_file() and small_onnx.stat().st_size > 1000
    assert not any(p.name.startswith(".safeconvert-") for p in small_onnx.parent.iterdir())


def test_report_records_route_metrics_and_timings(small_keras_file: Path, tmp_path: Path):
    out, report_path = tmp_path / "m.tflite", tmp_path / "r.json"
    run_convert(ConvertRequest(small_keras_file, out, report_path=report_path))
    report = json.loads(report_path.read_text())
    assert report["verdict"]["verified"] and report["exit_code"] == 0 and report["output"] == str(out)
    assert report["route"][0]["converter"] == "tflite-converter" and report["route"][0]["tool_version"]
    assert report["source"]["input"]["layout"] == "NHWC" and report["calibration"]["images"] == 42
    assert report["metrics"]["top1_agreement"] == 1.0 and report["metrics"]["max_abs_diff"] < 1e-3
    assert {"plan", "load_source", "validate", "write"} <= set(report["timings"])


def _labels(path: Path, calib, preprocessing) -> np.ndarray:
    runner = load_runner(path)
    return np.concatenate([runner.run(to_model_layout(b, runner.spec)).argmax(1) for b in iter_inputs(calib, preprocessing)])


def test_corrupted_target_is_not_verified_with_the_right_images(small_keras_file: Path, small_onnx: Path, tmp_path: Path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(small_onnx)
    dense = max(model.graph.initializer, key=lambda t: (len(t.dims) == 2, int(np.prod(t.dims))))
    weights = numpy_helper.to_array(dense)
    dense.CopyFrom(numpy_helper.from_array(np.roll(weights, 1, axis=-1), dense.name))  # shuffle the classes
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(model, corrupted)

    outcome = run_check(CheckRequest(small_keras_file, corrupted))
    calib = load_calibration(None)
    preprocessing = preprocessing_for(load_runner(small_keras_file), "tf")
    expected = {calib.names[i] for i in np.flatnonzero(_labels(small_keras_file, calib, preprocessing) != _labels(corrupted, calib, preprocessing))}
    assert expected, "the corruption should change some labels"
    assert not outcome.report.verified and outcome.report.exit_code == 1
    assert {d["image"] for d in outcome.report.metrics["disagreements"]} == expected


def test_unverified_conversion_writes_nothing_unless_allowed(small_keras_file: Path, tmp_path: Path):
    out = tmp_path / "quantised.tflite"
    quantise = ConversionOptions(tflite_optimizations=["DEFAULT"])
    outcome = run_convert(ConvertRequest(small_keras_file, out, options=quantise, repair=False))
    assert not outcome.report.verified and not out.exists() and outcome.report.output is None
    assert any("DEFAULT" in o for o in outcome.report.route[0].numeric_options)
    outcome = run_convert(ConvertRequest(small_keras_file, out, options=ConversionOptions(tflite_optimizations=["DEFAULT"]),
                                         allow_unverified=True, repair=False))
    assert out.exists() and outcome.report.exit_code == 1


def test_unwanted_quantisation_is_a_tool_finding_and_is_undone(small_keras_file: Path, tmp_path: Path):
    out = tmp_path / "repaired.tflite"
    report = run_convert(ConvertRequest(small_keras_file, out, options=ConversionOptions(tflite_optimizations=["DEFAULT"]))).report
    assert report.verified and out.exists()
    assert report.findings[0]["category"] == "TOOL" and "Optimize.DEFAULT" in report.findings[0]["summary"]
    assert [r["status"] for r in report.repairs] == ["applied"] 
    before = report.metrics_before_repair
    assert before["max_abs_diff"] > 1e-3 * before["source_output_range"]


def test_cli_convert_and_check_exit_codes(small_keras_file: Path, tmp_path: Path):
    out = tmp_path / "cli.onnx"
    cmd = [sys.executable, "-m", "safeconvert"]
    result = subprocess.run([*cmd, "convert", str(small_keras_file), "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout and out.exists()
    before = out.read_bytes()
    again = subprocess.run([*cmd, "convert", str(small_keras_file), "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "up to date" in again.stdout and out.read_bytes() == before  # idempotent
    other = subprocess.run([*cmd, "convert", str(small_keras_file), "-o", str(out), "--rtol", "0.01"], capture_output=True,
                           text=True, timeout=600)  # other settings: OUT is not up to date, so --force is needed
    assert other.returncode == 2 and "--force" in other.stderr and out.read_bytes() == before
    checked = subprocess.run([*cmd, "check", str(small_keras_file), str(out)], capture_output=True, text=True, timeout=600)
    assert checked.returncode == 0, checked.stderr


def test_torch_source_to_onnx(small_pt2_file: Path, tmp_path: Path):
    outcome = run_convert(ConvertRequest(small_pt2_file, tmp_path / "t.onnx"))
    assert outcome.report.verified, outcome.report.verdict
    assert outcome.report.source["input"]["layout"] == "NCHW"
    assert outcome.report.calibration["preprocess"] == "torch"


def test_a_wanted_quantisation_is_judged_on_labels_whatever_the_caller():
    """The CLI sets labels_only with --keep-quantisation; API callers who only set the option get the same."""
    from safeconvert.pipeline import _for_quantisation
    from safeconvert.validators.verdict import Thresholds

    assert _for_quantisation(Thresholds(max_mismatch=2), True) == Thresholds(max_mismatch=2, labels_only=True)
    assert _for_quantisation(Thresholds(), False) == Thresholds()
