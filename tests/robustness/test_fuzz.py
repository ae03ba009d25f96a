"""Property-based fuzzing of the pure-Python gates every input passes first.

Whatever the bytes, format detection, the .pt2 audit, the TFLite flatbuffer walk and the calibration
loader either succeed or raise BadInputError (or the audit's NeedsTrust): never another exception, which
the CLI would report as an internal error (exit 4).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safeconvert.errors import BadInputError
from safeconvert.formats import Format, detect_format

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
                database=None)
pytestmark = pytest.mark.timeout(300)

MEMBER_NAMES = ("config.json", "model.weights.h5", "metadata.json", "m/archive_format", "m/models/model.json",
                "m/data/weights/weight_0", "m/data/weights/model_weights_config.json", "m/data/sample_inputs/model.pt",
                "m/data.pkl", "m/constants.pkl", "m/code/__torch__/x.py", "m/data/aotinductor/x.so", "ü/ñ.json", "a/../b")
SUFFIXES = ("", ".onnx", ".tflite", ".keras", ".h5", ".pt", ".pt2", ".bin")


@st.composite
def zip_archives(draw) -> bytes:
    """Zip archives with model-like member names and arbitrary contents, sometimes damaged afterwards."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        names = st.text(min_size=1, max_size=20).filter(lambda n: n.strip("/") and not n.endswith("/") and "\x00" not in n)
        for name in draw(st.lists(st.one_of(st.sampled_from(MEMBER_NAMES), names), max_size=6, unique=True)):
            archive.writestr(name, draw(st.binary(max_size=200)))
    data = bytearray(buffer.getvalue())
    for index, value in draw(st.lists(st.tuples(st.integers(0, max(len(data) - 1, 0)), st.integers(0, 255)), max_size=3)):
        data[index] = value
    return bytes(data[: draw(st.integers(1, len(data)))]) if draw(st.booleans()) else bytes(data)


def _file(directory: str, data: bytes, suffix: str) -> Path:
    path = Path(directory) / f"model{suffix}"
    path.write_bytes(data)
    return path


@FUZZ
@given(data=st.binary(max_size=512), suffix=st.sampled_from(SUFFIXES),
       magic=st.sampled_from((b"", b"\x1c\x00\x00\x00TFL3", b"\x89HDF\r\n\x1a\n", b"PK\x03\x04", b"\x08\x07")))
def test_detect_format_on_arbitrary_bytes(data: bytes, suffix: str, magic: bytes):
    with tempfile.TemporaryDirectory() as directory:
        try:
            assert isinstance(detect_format(_file(directory, magic + data, suffix)), Format)
        except BadInputError:
            pass


@FUZZ
@given(archive=zip_archives(), suffix=st.sampled_from(SUFFIXES))
def test_detect_format_on_arbitrary_zip_archives(archive: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as directory:
        try:
            assert isinstance(detect_format(_file(directory, archive, suffix)), Format)
        except BadInputError:
            pass


@FUZZ
@given(archive=zip_archives())
def test_torch_export_audit_on_arbitrary_archives(archive: bytes):
    from safeconvert.safety.torch_export_audit import NeedsTrust, audit_torch_export

    with tempfile.TemporaryDirectory() as directory:
        try:
            audit_torch_export(_file(directory, archive, ".pt2"))
        except (NeedsTrust, BadInputError):
            pass


@FUZZ
@given(text=st.text(max_size=80))
def test_shape_expressions_outside_the_grammar_are_refused(text: str):
    """Anything accepted is made only of the grammar's pieces: no quotes outside Symbol(), no dunders, no dots."""
    from safeconvert.safety.torch_export_audit import SYMBOL_CALL, NeedsTrust, _check_expression

    try:
        _check_expression(text)
    except NeedsTrust:
        return
    rest = SYMBOL_CALL.sub("s0", text)
    assert "__" not in rest and "'" not in rest and '"' not in rest and "**" not in rest and "[" not in rest


@FUZZ
@given(data=st.binary(min_size=0, max_size=300), patches=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
       cut=st.integers(8, 5000))
def test_tflite_walk_on_damaged_flatbuffers(data: bytes, patches, cut: int, tflite_bytes: bytes):
    from safeconvert.safety.tflite_structure import check_tflite_structure

    damaged = bytearray(tflite_bytes[:cut] + data)
    for index, value in patches:
        if index < len(damaged):
            damaged[index] = value
    with tempfile.TemporaryDirectory() as directory:
        try:
            check_tflite_structure(_file(directory, bytes(damaged), ".tflite"))
        except BadInputError:
            pass


@pytest.fixture(scope="module")
def tflite_bytes(base_models) -> bytes:
    return base_models["tflite"].read_bytes()


@pytest.fixture(scope="module")
def image_bytes() -> dict[str, bytes]:
    from PIL import Image

    from safeconvert.validators.calibration import default_calibration_dir

    encoded = {}
    with Image.open(default_calibration_dir() / "dog.jpg") as photo:
        small = photo.convert("RGB").resize((24, 16))
        for fmt in ("PNG", "JPEG", "BMP", "WEBP"):
            buffer = io.BytesIO()
            small.save(buffer, format=fmt)
            encoded[fmt] = buffer.getvalue()
    return encoded


def _read_all(calib_path: Path) -> list[np.ndarray]:
    """Every item of the set, preprocessed as validation would (a 32x32 model, 'tf' preset)."""
    from safeconvert.validators.calibration import load_calibration
    from safeconvert.validators.preprocess import Preprocessing

    calib = load_calibration(calib_path)
    items = calib.read(0, len(calib))
    if not calib.preprocessed:
        batch = Preprocessing("tf", 32, 32).apply(items)
        assert batch.shape == (len(items), 32, 32, 3) and np.isfinite(batch).all()
    return items


@FUZZ
@given(fmt=st.sampled_from(("PNG", "JPEG", "BMP", "WEBP")), suffix=st.sampled_from((".png", ".jpg", ".bmp", ".webp")),
       patches=st.lists(st.tuples(st.integers(0, 2047), st.integers(0, 255)), max_size=6), cut=st.integers(0, 2048),
       tail=st.binary(max_size=64))
def test_calibration_images_from_damaged_bytes(fmt, suffix, patches, cut, tail, image_bytes):
    data = bytearray(image_bytes[fmt][: cut or None] + tail)
    for index, value in patches:
        if index < len(data):
            data[index] = value
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / f"image{suffix}").write_bytes(bytes(data))
        try:
            images = _read_all(Path(directory))
        except BadInputError:
            return
        assert all(image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 for image in images)


@FUZZ
@given(shape=st.lists(st.integers(0, 9), min_size=0, max_size=5),
       dtype=st.sampled_from(("u1", "<u2", ">i4", "<f4", ">f8", "f2", "?", "c8", "V4", "<i8")),
       fortran=st.booleans(), cut=st.one_of(st.none(), st.integers(0, 400)), junk=st.binary(max_size=32))
def test_calibration_npy_from_arbitrary_arrays(shape, dtype, fortran, cut, junk):
    array = np.zeros(shape, dtype=dtype, order="F" if fortran else "C")
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = buffer.getvalue()[:cut] + junk if cut is not None else buffer.getvalue()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "calib.npy"
        path.write_bytes(data)
        try:
            items = _read_all(path)
        except BadInputError:
            return
        assert items and all(item.ndim == 3 for item in items)
