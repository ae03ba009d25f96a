"""Same inputs, same verdict, metrics and report, run after run (timings aside).

A build system that reruns safeconvert must get the same answer, and a disagreement list that changed
between runs would make a report useless for review. Runs are compared in-process (with the source-output
caches cleared and the on-disk one off, so the source really runs again) and across processes (different
hash seeds and thread schedules).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from safeconvert.pipeline import ConvertRequest, run_convert
from safeconvert.user_cache import ENV_VAR
from safeconvert.validators import validate as validate_module
from safeconvert.wrappers.base import ConversionOptions

VOLATILE = {"timings", "seconds"}  # wall-clock durations: the only fields allowed to differ


@pytest.fixture(autouse=True)
def no_disk_cache(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "off")


def stable(report: dict, *paths: Path) -> dict:
    """The report without durations, with run-specific paths replaced by placeholders."""
    text = json.dumps(report)
    for index, path in enumerate(paths):
        text = text.replace(str(path), f"<path{index}>")
    return _drop(json.loads(text))


def _drop(value):
    if isinstance(value, dict):
        return {k: _drop(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_drop(v) for v in value]
    return value


def convert_once(source: Path, directory: Path, options: ConversionOptions | None = None) -> tuple[dict, bytes]:
    validate_module._SOURCE_OUTPUTS.clear()  # make the source run again, as in a fresh process without a cache
    directory.mkdir()
    out, report = directory / "model.onnx", directory / "report.json"
    run_convert(ConvertRequest(source, out, report_path=report, options=options or ConversionOptions(), repair=False))
    return stable(json.loads(report.read_text()), directory), out.read_bytes()


def test_convert_twice_gives_the_same_report_and_bytes(small_keras_file: Path, tmp_path: Path):
    first, first_bytes = convert_once(small_keras_file, tmp_path / "a")
    second, second_bytes = convert_once(small_keras_file, tmp_path / "b")
    assert first["verdict"]["verified"] and first == second
    assert first_bytes == second_bytes


@pytest.fixture(scope="module")
def quantised_tflite(small_keras_file: Path, tmp_path_factory) -> Path:
    """A dynamic-range quantised conversion: not verified, so the comparison covers a failing verdict's numbers."""
    out = tmp_path_factory.mktemp("quantised") / "q.tflite"
    run_convert(ConvertRequest(small_keras_file, out, options=ConversionOptions(tflite_optimizations=["DEFAULT"]),
                               allow_unverified=True, repair=False))
    return out


def test_check_in_separate_processes_gives_the_same_report(small_keras_file: Path, quantised_tflite: Path, tmp_path: Path):
    reports = []
    for run in range(2):
        path = tmp_path / f"report{run}.json"
        result = subprocess.run([sys.executable, "-m", "safeconvert", "check", str(small_keras_file), str(quantised_tflite),
                                 "--report", str(path)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr
        reports.append(stable(json.loads(path.read_text())))
    assert not reports[0]["verdict"]["verified"] and reports[0]["metrics"]["max_abs_diff"] > 0
    assert reports[0] == reports[1]
