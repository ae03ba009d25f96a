"""Localization and repair on the real MobileNetV2: one planted fault of every category (ONNX and TFLite
targets) and the real converter faults (TFLite quantisation). Slow: each case runs TVM on the full model."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeconvert.faults import inject
from safeconvert.pipeline import ConvertRequest, RepairRequest, run_convert, run_repair
from safeconvert.validators.verdict import Thresholds
from safeconvert.wrappers.base import ConversionOptions

from test_localize_repair import assert_localized_and_repaired

pytestmark = pytest.mark.slow

ONNX_FAULTS = ["transposed_kernel", "dilation", "removed_activation", "layout_reinterpret", "hw_swap", "channel_order"]
TFLITE_FAULTS = ["transposed_kernel", "stride"]


@pytest.fixture(scope="module")
def clean_targets(mobilenet_files: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("mv2-clean")
    targets = {"onnx": work / "mv2.onnx", "tflite": work / "mv2.tflite"}
    for path in targets.values():
        assert run_convert(ConvertRequest(mobilenet_files["keras"], path, preprocess="torch")).report.verified
    return targets


@pytest.mark.parametrize("kind", ONNX_FAULTS)
def test_planted_onnx_fault(kind: str, mobilenet_files, clean_targets, tmp_path: Path):
    faulty = tmp_path / f"{kind}.onnx"
    fault = inject(clean_targets["onnx"], faulty, kind, seed=0)
    report = run_repair(RepairRequest(mobilenet_files["keras"], faulty, preprocess="torch", output=tmp_path / "fixed.onnx")).report
    assert report.metrics_before_repair["top1_mismatches"] > 0, "the planted fault should change labels"
    assert_localized_and_repaired(report, fault)


@pytest.mark.parametrize("kind", TFLITE_FAULTS)
def test_planted_tflite_fault(kind: str, mobilenet_files, clean_targets, tmp_path: Path):
    faulty = tmp_path / f"{kind}.tflite"
    fault = inject(clean_targets["tflite"], faulty, kind, seed=0)
    report = run_repair(RepairRequest(mobilenet_files["keras"], faulty, preprocess="torch", output=tmp_path / "fixed.tflite")).report
    assert_localized_and_repaired(report, fault)


def test_default_weight_quantisation_is_undone(mobilenet_files, tmp_path: Path):
    report = run_convert(ConvertRequest(mobilenet_files["keras"], tmp_path / "dyn.tflite", preprocess="torch",
                                        options=ConversionOptions(tflite_optimizations=["DEFAULT"]))).report
    assert report.metrics_before_repair["top1_mismatches"] >= 1
    assert report.findings[0]["category"] == "TOOL"
    assert report.verified and report.metrics["top1_mismatches"] == 0


def test_wanted_quantisation_keeps_fewest_layers_float(mobilenet_files, tmp_path: Path):
    options = ConversionOptions(tflite_optimizations=["DEFAULT"], keep_quantisation=True)
    out = tmp_path / "q.tflite"
    report = run_convert(ConvertRequest(mobilenet_files["keras"], out, preprocess="torch", options=options,
                                        thresholds=Thresholds(labels_only=True))).report
    applied = [r for r in report.repairs if r["status"] == "applied"]
    assert report.verified and out.exists(), report.verdict
    if report.metrics_before_repair is not None:  # the quantised model already agreeing needs no repair
        assert applied and "kept" in applied[0]["detail"] and "in float" in applied[0]["detail"]
        from safeconvert.repair.tflite_edit import load_model, weight_ops

        assert any(w.quantised for w in weight_ops(load_model(out))), "the quantisation must not be undone"
