"""The evaluation's figures that must be able to fail, each produced through the real pipeline on the small CNN:
the evaluation's own case runner (evaluation.child.run: safeconvert convert or repair, then the hold-out check)
with real converters and runtimes, read by the same code that writes the tables.

- "edits on clean conversions": a clean route (nothing planted) whose conversion needs an edit is counted;
- "false verifications on held-out photos": a planted fault that does not show on the repair photos is
  verified there and caught on the held-out photos, and counted;
- a --keep-quantisation case records whether its written output is still quantised.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from safeconvert.evaluation.cases import Case
from safeconvert.evaluation.child import run
from safeconvert.evaluation.prepare import Prepared
from safeconvert.evaluation.results import case_result, totals

PRESET = "tf"  # x/127.5 - 1 on every channel alike: a grey photo stays grey after preprocessing


def _photos(folder: Path, indices: range, grey: bool) -> Path:
    """Packaged photos written as PNGs, optionally in greyscale (R = G = B)."""
    from PIL import Image

    from safeconvert.validators.calibration import IMAGE_SUFFIXES, default_calibration_dir

    photos = sorted(p for p in default_calibration_dir().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    folder.mkdir(parents=True)
    for index in indices:
        image = Image.open(photos[index]).convert("RGB")
        (image.convert("L").convert("RGB") if grey else image).save(folder / f"{photos[index].stem}.png")
    return folder


def _result(case: Case, prepared: Prepared, folder: Path):
    return case_result(run(case, prepared, folder), 0.0, 0.0)


@pytest.mark.slow
def test_a_clean_conversion_that_needs_an_edit_is_counted(small_keras_file: Path, tmp_path: Path):
    """The clean Keras -> TFLite route run with TFLite's Optimize.DEFAULT (a user's option, no planted fault)
    is not verified as converted and safeconvert re-runs the converter without it: one edit on a clean
    conversion. The same route without the option gets none."""
    photos = _photos(tmp_path / "repair", range(0, 16), grey=False)
    prepared = Prepared("small", PRESET, photos, _photos(tmp_path / "holdout", range(16, 24), grey=False),
                        sources={"keras": str(small_keras_file)})
    edited = _result(Case("small", "keras", "tflite", "clean", options="tflite-optimize-default"), prepared,
                     tmp_path / "edited")
    plain = _result(Case("small", "keras", "tflite", "clean"), prepared, tmp_path / "plain")
    assert edited.status == "ok" and edited.clean and edited.first_validation_failed
    assert edited.repairs_applied == ["TOOL"] and edited.verified and edited.edit_on_clean
    assert plain.status == "ok" and plain.clean and not plain.repairs_applied and not plain.edit_on_clean
    summary = totals([edited, plain])
    assert (summary.edits_on_clean, summary.clean_cases) == (1, 2)


@pytest.mark.slow
def test_a_fault_hidden_from_the_repair_photos_is_a_false_verification(small_keras_file: Path, tmp_path: Path):
    """Input channels reversed (a PP fault planted in the ONNX target) change nothing on greyscale photos: the
    verdict passes on the grey repair photos and `repair` writes the target as verified. On the coloured
    held-out photos the same verdict fails: a false verification, counted."""
    from safeconvert.pipeline import ConvertRequest, run_convert

    grey = _photos(tmp_path / "grey", range(0, 16), grey=True)
    colour = _photos(tmp_path / "colour", range(16, 28), grey=False)
    onnx = tmp_path / "small.onnx"
    assert run_convert(ConvertRequest(small_keras_file, onnx, calib=grey, preprocess=PRESET)).report.verified
    prepared = Prepared("small", PRESET, grey, colour, sources={"keras": str(small_keras_file), "onnx": str(onnx)})
    result = _result(Case("small", "keras", "onnx", "injected", "channel_order"), prepared, tmp_path / "case")
    assert result.status == "ok" and result.planted and result.expected_category == "PP"
    assert not result.detected and result.verified and result.max_abs_before < 1e-5  # invisible on grey photos
    assert result.holdout_verified is False and result.false_verification is True
    summary = totals([result])
    assert (summary.false_verifications, summary.verified_cases, summary.faults_detected) == (1, 1, 0)


@pytest.mark.slow
def test_keep_quantisation_records_whether_the_output_is_still_quantised(small_keras_file: Path, tmp_path: Path):
    """The dynamic-range case with --keep-quantisation: the quantised tensors and size of what was written are
    recorded, and "kept" is claimed only when the output is verified and still stores quantised tensors."""
    from safeconvert.formats import Format
    from safeconvert.localize.tool import quantised_tensors
    from safeconvert.pipeline import ConvertRequest, run_convert

    photos = _photos(tmp_path / "repair", range(0, 16), grey=False)
    float_tflite = tmp_path / "small.tflite"
    assert run_convert(ConvertRequest(small_keras_file, float_tflite, calib=photos, preprocess=PRESET)).report.verified
    prepared = Prepared("small", PRESET, photos, _photos(tmp_path / "holdout", range(16, 24), grey=False),
                        sources={"keras": str(small_keras_file), "tflite": str(float_tflite)})
    folder = tmp_path / "case"
    raw = run(Case("small", "keras", "tflite", "tflite-dynamic-range", keep_quantisation=True), prepared, folder)
    result = case_result(raw, 0.0, 0.0)
    assert result.status == "ok" and result.keep_quantisation and not result.planted
    output = folder / "out.tflite"
    if not output.exists():
        assert not result.verified and result.quantised_tensors is None and result.kept_quantisation is False
        return
    stored = quantised_tensors(output, Format.TFLITE)
    assert result.quantised_tensors == stored and result.output_bytes == output.stat().st_size
    assert result.float_bytes == float_tflite.stat().st_size
    assert sum(result.converted_quantised_tensors.values()) > 0  # the converter's own output is quantised
    assert result.kept_quantisation is (result.verified and sum(stored.values()) > 0)
    if result.kept_quantisation:  # int8 weights: the written model is smaller than the float one
        assert result.output_bytes < result.float_bytes
