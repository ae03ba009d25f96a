"""End to end on the real MobileNetV2 (torchvision ImageNet weights): every foundation route, verified."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from safeconvert.pipeline import ConvertRequest, run_convert
from safeconvert.runners import load_runner
from safeconvert.summary import class_names
from safeconvert.validators.calibration import default_calibration_dir, read_image
from safeconvert.validators.preprocess import Preprocessing, to_model_layout
from safeconvert.wrappers.base import ConversionOptions

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["pt2", "keras"])
def test_source_model_names_well_known_photos(mobilenet_files: dict[str, Path], kind: str):
    runner = load_runner(mobilenet_files[kind])
    photos = ["orange.jpg", "baboon.jpg", "coffee.jpg"]
    batch = Preprocessing("torch", 224, 224).apply([read_image(default_calibration_dir() / p) for p in photos])
    labels = [class_names()[i] for i in runner.run(to_model_layout(batch, runner.spec)).argmax(1)]
    assert labels == ["orange", "baboon", "espresso"]


@pytest.fixture(scope="module")
def converted(mobilenet_files: dict[str, Path], tmp_path_factory) -> dict[str, object]:
    """Run each foundation route once; tests below read the reports."""
    work = tmp_path_factory.mktemp("routes")
    routes = {
        "keras->onnx": (mobilenet_files["keras"], work / "k.onnx"),
        "keras->tflite": (mobilenet_files["keras"], work / "k.tflite"),
        "pt2->onnx": (mobilenet_files["pt2"], work / "t.onnx"),
        "keras->torch": (mobilenet_files["keras"], work / "k.pt"),
    }
    reports = {name: run_convert(ConvertRequest(src, out, preprocess="torch")).report for name, (src, out) in routes.items()}
    reports["onnx->torch"] = run_convert(ConvertRequest(work / "k.onnx", work / "o.pt", preprocess="torch")).report
    return reports


@pytest.mark.parametrize("route", ["keras->onnx", "keras->tflite", "pt2->onnx", "keras->torch", "onnx->torch"])
def test_faithful_routes_are_verified(converted, route: str):
    report = converted[route]
    assert report.verified, report.verdict
    assert report.metrics["images"] == 42 and report.metrics["top1_agreement"] == 1.0
    assert report.metrics["max_abs_diff"] < 1e-3 * report.metrics["source_output_range"]
    assert Path(report.output).exists()
    assert all(h.tool_version for h in report.route)


def test_torchscript_output_loads_without_safeconvert(converted):
    """The PyTorch file must run in a plain interpreter with only torch imported."""
    path = converted["keras->torch"].output
    code = (f"import torch; m = torch.jit.load({path!r}); y = m(torch.zeros(2, 224, 224, 3)); "
            "print(tuple(y.shape))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 1000)"


def test_default_weight_quantisation_is_caught(mobilenet_files: dict[str, Path], tmp_path: Path):
    out = tmp_path / "dyn.tflite"
    report = run_convert(ConvertRequest(mobilenet_files["keras"], out, preprocess="torch",
                                        options=ConversionOptions(tflite_optimizations=["DEFAULT"]), repair=False)).report
    assert not report.verified and not out.exists()
    assert 1 <= report.metrics["top1_mismatches"] <= 10
    assert report.route[0].numeric_options


def test_demo_command_on_a_few_photos(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "safeconvert", "demo", "--workdir", str(tmp_path), "--images", "6"],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "every case came out as expected" in result.stdout
    assert "orange.jpg -> orange" in result.stdout
