"""Localization and repair of injected faults on small seeded models: every category, ONNX and TorchScript
targets. Each fault must be found in the right category and layer and repaired to zero label changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safeconvert.faults import inject, inject_torch
from safeconvert.pipeline import ConvertRequest, RepairRequest, run_convert, run_localize, run_repair

ONNX_KINDS = ["int8_weights", "transposed_kernel", "pads_dropped", "pads_shifted", "stride", "dilation",
              "removed_activation", "extra_op", "layout_reinterpret", "nchw_reinterpret", "hw_swap", "input_scale",
              "channel_order"]


@pytest.fixture(scope="module")
def small_onnx(small_keras_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "small.onnx"
    assert run_convert(ConvertRequest(small_keras_file, out)).report.verified
    return out


def assert_localized_and_repaired(report, fault) -> None:
    before = report.metrics_before_repair
    assert before is not None, "the fault should make the conversion fail validation"
    top = report.findings[0]
    assert top["category"] == fault.category.value, [f["summary"] for f in report.findings]
    if fault.category.value not in ("PP", "ID"):  # input faults have no layer
        assert fault.target_node.split(";")[0] in json.dumps(top), (fault.target_node, top)
    applied = [r for r in report.repairs if r["status"] == "applied"]
    assert applied and applied[0]["category"] == fault.category.value
    assert report.verified and report.metrics["top1_mismatches"] == 0


@pytest.mark.parametrize("kind", ONNX_KINDS)
def test_onnx_fault_is_localized_and_repaired(kind: str, small_keras_file: Path, small_onnx: Path, tmp_path: Path):
    faulty = tmp_path / f"{kind}.onnx"
    fault = inject(small_onnx, faulty, kind, seed=0)
    outcome = run_repair(RepairRequest(small_keras_file, faulty, output=tmp_path / "fixed.onnx"))
    assert_localized_and_repaired(outcome.report, fault)
    assert (tmp_path / "fixed.onnx").exists()


@pytest.mark.parametrize("kind", ["transposed_kernel", "removed_activation", "channel_order"])
def test_torchscript_fault_is_repaired_through_onnx(kind: str, small_keras_file: Path, small_onnx: Path, tmp_path: Path):
    faulty = tmp_path / f"{kind}.pt"
    fault = inject_torch(small_onnx, faulty, kind, seed=0)
    outcome = run_repair(RepairRequest(small_keras_file, faulty, output=tmp_path / "fixed.pt", trust_model_code=True))
    report = outcome.report
    assert report.findings[0]["category"] == fault.category.value
    assert report.verified and report.metrics["top1_mismatches"] == 0 and (tmp_path / "fixed.pt").exists()


def test_clean_conversion_has_no_finding_and_no_repair(small_keras_file: Path, small_onnx: Path, tmp_path: Path):
    report = run_localize(RepairRequest(small_keras_file, small_onnx)).report
    assert report.verified and report.findings == [] and report.repairs == []
    report = run_convert(ConvertRequest(small_keras_file, tmp_path / "again.onnx")).report
    assert report.verified and report.findings == [] and report.repairs == [] and report.metrics_before_repair is None


def test_localize_reports_findings_without_writing(small_keras_file: Path, small_onnx: Path, tmp_path: Path):
    faulty = tmp_path / "stride.onnx"
    fault = inject(small_onnx, faulty, "stride", seed=0)
    before = set(tmp_path.iterdir())
    report = run_localize(RepairRequest(small_keras_file, faulty, report_path=tmp_path / "r.json")).report
    assert not report.verified and report.findings[0]["category"] == "LH"
    assert "stride" in report.findings[0]["summary"]
    assert report.divergence and report.divergence["first_divergent"] is not None
    assert set(tmp_path.iterdir()) - before == {tmp_path / "r.json"}
    assert json.loads((tmp_path / "r.json").read_text())["findings"][0]["category"] == fault.category.value
