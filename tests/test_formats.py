"""Format detection from content, target format choice, route planning and atomic output (pure logic)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from safeconvert.atomic import check_output_path, move_into_place, scratch_dir
from safeconvert.errors import BadInputError
from safeconvert.formats import Format, detect_format, format_for_output, guess_layout
from safeconvert.routes import hop_alternatives, plan_route, route_table
from safeconvert.wrappers.base import ConversionOptions


def _zip(path: Path, members: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in members:
            archive.writestr(name, b"x")
    return path


def test_detects_formats_by_content(tmp_path: Path):
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 32)
    (tmp_path / "m.onnx").write_bytes(b"\x08\x08\x12\x07tf2onnx")
    _zip(tmp_path / "m.keras", ["metadata.json", "config.json", "model.weights.h5"])
    _zip(tmp_path / "m.pt2", ["m/archive_format", "m/models/model.json"])
    _zip(tmp_path / "m.pt", ["m/data.pkl", "m/constants.pkl", "m/code/__torch__/x.py"])
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\x00")
    found = {p: detect_format(tmp_path / p) for p in ["m.tflite", "m.h5", "m.onnx", "m.keras", "m.pt2", "m.pt", "sm"]}
    assert found == {"m.tflite": Format.TFLITE, "m.h5": Format.KERAS, "m.onnx": Format.ONNX, "m.keras": Format.KERAS,
                     "m.pt2": Format.TORCH_EXPORT, "m.pt": Format.TORCHSCRIPT, "sm": Format.SAVEDMODEL}
    # the extension does not decide: a TFLite file named .onnx is still TFLite
    (tmp_path / "renamed.onnx").write_bytes((tmp_path / "m.tflite").read_bytes())
    assert detect_format(tmp_path / "renamed.onnx") is Format.TFLITE


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"hello world, not a model", "not a recognised model"),
    (b"PK\x03\x04broken zip", "corrupt archive"),
])
def test_bad_model_files(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=message):
        detect_format(path)


def test_pickled_checkpoints_and_plain_directories_are_refused(tmp_path: Path):
    _zip(tmp_path / "sd.pth", ["sd/data.pkl", "sd/version"])
    with pytest.raises(BadInputError, match="pickled PyTorch checkpoint"):
        detect_format(tmp_path / "sd.pth")
    with pytest.raises(BadInputError, match="not a TF SavedModel"):
        detect_format(tmp_path)
    with pytest.raises(BadInputError, match="no such file"):
        detect_format(tmp_path / "missing.onnx")


def test_target_format_from_suffix_or_flag(tmp_path: Path):
    assert format_for_output(Path("a.onnx"), None) is Format.ONNX
    assert format_for_output(Path("a.pt"), None) is Format.TORCHSCRIPT
    assert format_for_output(Path("exported"), None) is Format.SAVEDMODEL
    assert format_for_output(Path("a.bin"), "tflite") is Format.TFLITE
    with pytest.raises(BadInputError, match="pass --to"):
        format_for_output(Path("a.bin"), None)
    with pytest.raises(BadInputError, match="unknown format"):
        format_for_output(Path("a.onnx"), "caffe2")


def test_layout_guess():
    assert guess_layout((None, 224, 224, 3)) == "NHWC"
    assert guess_layout((1, 3, 224, 224)) == "NCHW"
    with pytest.raises(BadInputError):
        guess_layout((1, 1000))


def test_route_planning():
    assert [c.name for c in plan_route(Format.KERAS, Format.ONNX)] == ["tf2onnx"]
    assert [c.name for c in plan_route(Format.KERAS, Format.TFLITE)] == ["tflite-converter"]
    assert [c.name for c in plan_route(Format.KERAS, Format.SAVEDMODEL)] == ["keras-export"]
    assert [c.name for c in plan_route(Format.KERAS, Format.TORCHSCRIPT)] == ["tf2onnx", "onnx2torch"]
    assert [c.name for c in plan_route(Format.TORCH_EXPORT, Format.ONNX)] == ["torch.onnx-dynamo"]
    assert [c.name for c in plan_route(Format.TORCHSCRIPT, Format.ONNX)] == ["torch.onnx-torchscript"]
    assert [c.name for c in plan_route(Format.TFLITE, Format.ONNX)] == ["tf2onnx"]
    assert [c.name for c in plan_route(Format.ONNX, Format.SAVEDMODEL)] == ["onnx2tf"]
    assert [(c.name, c.target) for c in plan_route(Format.ONNX, Format.TFLITE)] == [("onnx2tf-tflite", Format.TFLITE)]
    assert [c.name for c in plan_route(Format.ONNX, Format.TORCH_EXPORT)] == ["onnx2torch-export"]
    assert [c.name for c in plan_route(Format.TFLITE, Format.SAVEDMODEL)] == ["tf2onnx", "onnx2tf"]
    # onnx2torch cannot read the dynamo exporter's opset-18 graphs: a route into it takes the TorchScript exporter
    assert [c.name for c in plan_route(Format.TORCH_EXPORT, Format.TORCHSCRIPT)] == ["torch.onnx-torchscript", "onnx2torch"]
    assert [c.name for c in plan_route(Format.TORCHSCRIPT, Format.TORCH_EXPORT)] == ["torch.onnx-torchscript", "onnx2torch-export"]
    with pytest.raises(BadInputError, match="nothing to convert"):
        plan_route(Format.ONNX, Format.ONNX)


def test_torch_dynamo_option_picks_the_preferred_exporter():
    legacy = ConversionOptions(torch_dynamo=False)
    assert [c.name for c in plan_route(Format.TORCH_EXPORT, Format.ONNX, options=legacy)] == ["torch.onnx-torchscript"]
    chosen = plan_route(Format.TORCH_EXPORT, Format.ONNX)[0]
    assert [c.name for c in hop_alternatives(chosen, Format.TORCH_EXPORT)] == ["torch.onnx-dynamo", "torch.onnx-torchscript"]


def test_same_hop_alternatives_are_real_other_converters():
    keras_onnx = plan_route(Format.KERAS, Format.ONNX)[0]
    assert [c.name for c in hop_alternatives(keras_onnx, Format.KERAS)] == ["tf2onnx", "tf2onnx-savedmodel"]
    onnx_savedmodel = plan_route(Format.ONNX, Format.SAVEDMODEL)[0]
    assert [c.name for c in hop_alternatives(onnx_savedmodel, Format.ONNX)] == ["onnx2tf", "onnx2tf-fused", "onnx-tf"]
    # the SavedModel and TFLite entries of onnx2tf are different hops
    onnx_tflite = plan_route(Format.ONNX, Format.TFLITE)[0]
    assert [(c.name, c.target) for c in hop_alternatives(onnx_tflite, Format.ONNX)] == [
        ("onnx2tf-tflite", Format.TFLITE), ("onnx2tf-fused-tflite", Format.TFLITE)]


@pytest.mark.parametrize("source", [f for f in Format if f is not Format.KERAS])
def test_no_route_to_keras_says_why(source: Format):
    with pytest.raises(BadInputError, match="Keras 3") as raised:
        plan_route(source, Format.KERAS)
    assert "TFOpLambda" in str(raised.value)


def test_route_table_covers_every_ordered_pair():
    rows = route_table()
    assert len(rows) == len(Format) * (len(Format) - 1)
    assert {(r["source"], r["target"]) for r in rows} == {(a.value, b.value) for a in Format for b in Format if a != b}
    for row in rows:
        if row["target"] == "keras":
            assert not row["works"] and row["route"] is None and "no converter chain" in row["why"]
        else:  # every other pair has a chain of converters installed here
            assert row["works"] and row["why"] == "ok", row
            assert len(row["converters"]) == len(row["alternatives"]) == row["route"].count("->")


def test_unavailable_converter_is_named_with_its_reason(monkeypatch):
    from safeconvert.wrappers.onnx_tf_wrapper import ENV_VAR, OnnxTfConverter

    monkeypatch.delenv(ENV_VAR, raising=False)
    ok, why = OnnxTfConverter().availability()
    assert not ok and "no onnx-tf interpreter configured" in why and "make onnx-tf-env" in why
    rows = route_table([OnnxTfConverter()])
    onnx_savedmodel = next(r for r in rows if (r["source"], r["target"]) == ("onnx", "savedmodel"))
    assert not onnx_savedmodel["works"] and onnx_savedmodel["why"].startswith("onnx-tf: no onnx-tf interpreter configured")
    monkeypatch.setenv(ENV_VAR, "/nonexistent/python")
    assert OnnxTfConverter().availability() == (False, "the onnx-tf interpreter /nonexistent/python does not exist or is not executable")


def test_output_path_checks_and_atomic_move(tmp_path: Path):
    with pytest.raises(BadInputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "m.onnx", force=False)
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"old")
    with pytest.raises(BadInputError, match="--force"):
        check_output_path(existing, force=False)
    check_output_path(existing, force=True)
    with scratch_dir(existing) as work:
        built = work / "new.onnx"
        built.write_bytes(b"new")
        move_into_place(built, existing)
        assert work.exists()
    assert existing.read_bytes() == b"new"
    assert not any(p.name.startswith(".safeconvert-") for p in tmp_path.iterdir())


def test_read_only_output_directory(tmp_path: Path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(BadInputError, match="not writable"):
            check_output_path(locked / "m.onnx", force=False)
    finally:
        locked.chmod(0o700)
