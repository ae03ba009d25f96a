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
TFLITE_FAULTS = ["transposed_kernel", "stride", "layout_reinterpret"]


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


@pytest.fixture(scope="module")
def int8_tflite(mobilenet_files: dict[str, Path], tmp_path_factory) -> Path:
    """Full-integer MobileNetV2 (as `safeconvert convert --tflite-int8` writes it, unrepaired)."""
    out = tmp_path_factory.mktemp("mv2-int8") / "int8.tflite"
    run_convert(ConvertRequest(mobilenet_files["keras"], out, preprocess="torch", allow_unverified=True, repair=False,
                               options=ConversionOptions(tflite_int8=True)))
    return out


def test_int8_tflite_to_onnx_is_reported_as_runtime_rounding(int8_tflite: Path, tmp_path: Path):
    """tf2onnx's conversion of an int8 model is as close to LiteRT as LiteRT's own kernels are to each other:
    a TOOL finding with the numbers, no futile edits, and no TVM run."""
    report = run_convert(ConvertRequest(int8_tflite, tmp_path / "int8.onnx", preprocess="torch")).report
    assert report.metrics_before_repair["top1_mismatches"] > 0, "ONNX Runtime and LiteRT round int8 differently"
    top = report.findings[0]
    evidence = top["evidence"]
    assert top["category"] == "TOOL" and "kernels" in top["summary"]
    assert evidence["source_runtime_spread"]["label_changes"] > 0
    assert evidence["target"]["label_changes"] == report.metrics_before_repair["top1_mismatches"]
    assert {"target_onnxruntime_basic", "target_onnxruntime_all"} <= set(evidence)
    assert not [r for r in report.repairs if r["status"] == "applied"]
    assert report.timings["localize_and_repair"] < 20.0, report.timings  # no TVM import or compile


def test_a_real_fault_in_an_int8_conversion_is_not_excused(int8_tflite: Path, tmp_path: Path):
    """The runtime-spread finding must not hide a real fault: an input read at 1/255 scale is far outside it."""
    import numpy as np

    from safeconvert.localize.runtime_spread import runtime_findings
    from safeconvert.runners import load_runner
    from safeconvert.validators.calibration import load_calibration
    from safeconvert.validators.validate import iter_inputs, preprocessing_for, validate

    clean = tmp_path / "int8.onnx"
    run_convert(ConvertRequest(int8_tflite, clean, preprocess="torch", allow_unverified=True, repair=False))
    faulty = tmp_path / "scaled.onnx"
    inject(clean, faulty, "input_scale", seed=0)
    source, calib = load_runner(int8_tflite), load_calibration(None)
    validation = validate(source, load_runner(faulty), calib, "torch", Thresholds())
    batch = np.concatenate(list(iter_inputs(calib, preprocessing_for(source, "torch"))))
    found = runtime_findings(int8_tflite, source.format, faulty, load_runner(faulty).format, lambda: batch,
                             validation.source_outputs, validation.target_outputs)
    assert validation.metrics.top1_mismatches > 10 and found == []


def test_wanted_full_integer_quantisation_that_cannot_verify_says_so_quickly(mobilenet_files, tmp_path: Path):
    """Full-int8 MobileNetV2 changes labels even with every conv/dense layer in float (its activations are
    quantised): one candidate with all of them in float is tried, and the record says why nothing verifies."""
    options = ConversionOptions(tflite_int8=True, keep_quantisation=True)
    report = run_convert(ConvertRequest(mobilenet_files["keras"], tmp_path / "int8.tflite", preprocess="torch",
                                        options=options, thresholds=Thresholds(labels_only=True))).report
    assert not report.verified and report.metrics_before_repair["top1_mismatches"] > 0
    search = report.findings[0]["evidence"]["float_layer_search"]
    assert len(search["tried"]) == 1 and not search["tried"][0]["verified"] and search["ranking"] == []
    assert search["tried"][0]["mismatches"] > 0
    record = next(r for r in report.repairs if r["action"] == "keep_float")
    assert record["status"] == "not applicable" and "activations" in record["detail"]
