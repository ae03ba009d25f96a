"""Resource limits: calibration sets and ONNX models that would exhaust memory or time are refused up front.

Each hostile input here costs a few KB on disk (sparse files, constant shapes, PNG headers) and would cost
gigabytes once loaded or run; safeconvert must refuse it with one line before allocating that.
"""

from __future__ import annotations

import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)


def sparse_npy(path: Path, shape: tuple[int, ...], dtype) -> Path:
    """A valid .npy whose data is a hole in the file: gigabytes long, a few KB on disk."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    del array
    return path


def anonymous_memory() -> int:
    """Bytes of this process's anonymous resident memory (a memory-mapped file's pages are not counted)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no /proc/self/status")


# --- calibration sets -------------------------------------------------------------------------------------

def test_npy_over_the_byte_limit_is_refused_from_its_header(tmp_path: Path, monkeypatch):
    from safeconvert.errors import BadInputError
    from safeconvert.validators.calibration import load_calibration

    monkeypatch.setenv("SAFECONVERT_MAX_CALIB_BYTES", str(64 << 20))
    path = sparse_npy(tmp_path / "big.npy", (600, 224, 224, 3), np.float32)  # 361 MB of zeros, ~4 KB on disk
    with pytest.raises(BadInputError, match="SAFECONVERT_MAX_CALIB_BYTES"):
        load_calibration(path)


def test_the_default_byte_limit_refuses_a_sparse_npy_of_gigabytes_at_once(tmp_path: Path):
    """The issue's 2.8 GB sparse .npy took 6.2 GB of memory and two minutes; now the header alone refuses it."""
    from safeconvert.errors import BadInputError
    from safeconvert.validators.calibration import load_calibration

    path = sparse_npy(tmp_path / "huge.npy", (4650, 224, 224, 3), np.float32)
    started = time.monotonic()
    with pytest.raises(BadInputError, match="more than the limit"):
        load_calibration(path)
    assert time.monotonic() - started < 5


def test_npy_over_the_image_limit_is_refused(tmp_path: Path, monkeypatch):
    from safeconvert.errors import BadInputError
    from safeconvert.validators.calibration import load_calibration

    monkeypatch.setenv("SAFECONVERT_MAX_CALIB_IMAGES", "10")
    path = tmp_path / "eleven.npy"
    np.save(path, np.zeros((11, 8, 8, 3), np.uint8))
    with pytest.raises(BadInputError, match="SAFECONVERT_MAX_CALIB_IMAGES"):
        load_calibration(path)


def test_npy_within_the_limits_is_memory_mapped_and_converted_batch_by_batch(tmp_path: Path):
    """A 300 MB uint8 set must not be copied into memory whole (clip + astype made two full copies)."""
    from safeconvert.validators.calibration import load_calibration

    path = sparse_npy(tmp_path / "pixels.npy", (2000, 224, 224, 3), np.uint8)
    before = anonymous_memory()
    calib = load_calibration(path)
    batch = calib.read(0, 16)
    grown = anonymous_memory() - before
    assert len(calib) == 2000 and len(batch) == 16 and batch[0].shape == (224, 224, 3) and batch[0].dtype == np.uint8
    assert grown < 64 << 20, f"loading grew anonymous memory by {grown >> 20} MB"


def test_integer_npy_is_converted_to_rgb_pixels_when_read(tmp_path: Path):
    from safeconvert.validators.calibration import load_calibration

    path = tmp_path / "gray_nchw.npy"
    np.save(path, np.full((2, 1, 6, 5), 300, np.int32))  # NCHW grayscale, out of range: clipped to 255
    items = load_calibration(path).read(0, 2)
    assert [item.shape for item in items] == [(6, 5, 3)] * 2 and all(item.dtype == np.uint8 for item in items)
    assert int(items[0].min()) == 255


def test_object_npy_is_refused_from_its_header(tmp_path: Path):
    """Held case: an object array would need the unpickler; refused, whatever its shape."""
    from safeconvert.errors import BadInputError
    from safeconvert.validators.calibration import load_calibration

    path = tmp_path / "objects.npy"
    np.save(path, np.full((1, 4, 4, 3), None, dtype=object), allow_pickle=True)
    with pytest.raises(BadInputError, match="Python objects"):
        load_calibration(path)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height pixels over a few bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_20000_by_20000_png_is_refused_before_decoding(tmp_path: Path):
    """Held case: 400 million pixels declared in a few bytes."""
    from safeconvert.errors import BadInputError
    from safeconvert.validators.calibration import load_calibration

    directory = tmp_path / "bomb"
    directory.mkdir()
    _png_header_only(directory / "bomb.png", 20000, 20000)
    with pytest.raises(BadInputError, match="bomb.png"):
        load_calibration(directory)


def test_an_image_over_the_pixel_limit_is_refused(tmp_path: Path, monkeypatch):
    from safeconvert.errors import BadInputError
    from safeconvert.validators.calibration import default_calibration_dir, load_calibration

    monkeypatch.setenv("SAFECONVERT_MAX_IMAGE_PIXELS", "1000")
    directory = tmp_path / "photos"
    directory.mkdir()
    shutil.copy(default_calibration_dir() / "dog.jpg", directory / "dog.jpg")
    with pytest.raises(BadInputError, match="SAFECONVERT_MAX_IMAGE_PIXELS"):
        load_calibration(directory)


def test_an_image_directory_over_the_byte_limit_is_refused(tmp_path: Path, monkeypatch):
    from safeconvert.errors import BadInputError
    from safeconvert.validators.calibration import default_calibration_dir, load_calibration

    monkeypatch.setenv("SAFECONVERT_MAX_CALIB_BYTES", "1000")
    directory = tmp_path / "photos"
    directory.mkdir()
    shutil.copy(default_calibration_dir() / "dog.jpg", directory / "dog.jpg")
    with pytest.raises(BadInputError, match="SAFECONVERT_MAX_CALIB_BYTES"):
        load_calibration(directory)


def test_an_unusable_limit_value_is_a_usage_error(monkeypatch):
    from safeconvert.errors import BadInputError
    from safeconvert.safety.limits import CALIB_IMAGES_VARIABLE, limit

    monkeypatch.setenv(CALIB_IMAGES_VARIABLE, "lots")
    with pytest.raises(BadInputError, match=CALIB_IMAGES_VARIABLE):
        limit(CALIB_IMAGES_VARIABLE)


# --- ONNX models that compute huge tensors ----------------------------------------------------------------

def _bomb(path: Path, op: str, side: int) -> Path:
    """A small classifier whose output adds the sum of a side x side tensor built by `op` from constants."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    constants = []

    def constant(name: str, value: np.ndarray) -> str:
        constants.append(numpy_helper.from_array(value, name))
        return name

    size = constant("size", np.array([side, side], np.int64))
    if op == "ConstantOfShape":
        one = numpy_helper.from_array(np.ones(1, np.float32))
        nodes = [helper.make_node("ConstantOfShape", [size], ["big"], value=one)]
    elif op == "Expand":
        nodes = [helper.make_node("Expand", [constant("one", np.ones(1, np.float32)), size], ["big"])]
    elif op == "Tile":
        nodes = [helper.make_node("Tile", [constant("cell", np.ones((1, 1), np.float32)), size], ["big"])]
    else:  # Resize of a 1x1 constant image to side x side
        sizes = constant("sizes", np.array([1, 1, side, side], np.int64))
        pixel = constant("pixel", np.ones((1, 1, 1, 1), np.float32))
        nodes = [helper.make_node("Resize", [pixel, "", "", sizes], ["big"])]
    nodes += [helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
              helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Add", ["flat", "total"], ["logits"])]
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], constants)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Resize"])
def test_onnx_model_computing_a_huge_tensor_is_refused_before_running(op: str, tmp_path: Path):
    from safeconvert.errors import BadInputError
    from safeconvert.formats import Format
    from safeconvert.safety.probe import probe_in_child

    with pytest.raises(BadInputError, match="computes a tensor"):
        probe_in_child(_bomb(tmp_path / f"{op}.onnx", op, 20000), Format.ONNX)


def test_the_computed_tensor_limit_can_be_lowered_and_is_checked_by_the_cli(tmp_path: Path, monkeypatch, capfd):
    from safeconvert.cli import main
    from safeconvert.validators.calibration import default_calibration_dir

    calib = tmp_path / "calib"
    calib.mkdir()
    shutil.copy(default_calibration_dir() / "dog.jpg", calib / "dog.jpg")
    model = _bomb(tmp_path / "small_bomb.onnx", "ConstantOfShape", 2000)  # 4 million elements: fine by default
    monkeypatch.setenv("SAFECONVERT_MAX_TENSOR_ELEMENTS", str(1 << 20))
    capfd.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(["check", str(model), str(model), "--calib", str(calib)])
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert ended.value.code == 2 and len(lines) == 1 and "SAFECONVERT_MAX_TENSOR_ELEMENTS" in lines[0], lines


# --- the run's memory limit -------------------------------------------------------------------------------

def test_a_run_past_the_memory_limit_ends_with_exit_2_and_one_line(tmp_path: Path):
    """15000 x 15000 floats (900 MB) pass the tensor limit; under a 600 MB memory limit the run stops cleanly."""
    import os
    import subprocess
    import sys

    from safeconvert.validators.calibration import default_calibration_dir

    calib = tmp_path / "calib"
    calib.mkdir()
    shutil.copy(default_calibration_dir() / "dog.jpg", calib / "dog.jpg")
    model = _bomb(tmp_path / "heavy.onnx", "ConstantOfShape", 15000)
    argv = [sys.executable, "-m", "safeconvert", "check", str(model), str(model), "--calib", str(calib)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "SAFECONVERT_MAX_MEMORY_MB": "600"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "SAFECONVERT_MAX_MEMORY_MB" in lines[0], result.stderr


def _data_in_use() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no /proc/self/status")


def test_a_failed_allocation_under_the_limit_becomes_a_one_line_error(monkeypatch):
    import resource

    from safeconvert.safety.memory_limit import MemoryLimitError, memory_limited

    monkeypatch.setenv("SAFECONVERT_MAX_MEMORY_MB", str((_data_in_use() >> 20) + 256))
    before = resource.getrlimit(resource.RLIMIT_DATA)
    with pytest.raises(MemoryLimitError, match="SAFECONVERT_MAX_MEMORY_MB"):
        with memory_limited():
            np.ones(1 << 28, np.float32)  # 1 GB
    assert resource.getrlimit(resource.RLIMIT_DATA) == before  # the process's own limit is given back


def test_a_converter_failure_is_not_relabelled_as_a_memory_limit():
    from safeconvert.errors import ConverterFailedError
    from safeconvert.safety.memory_limit import memory_limited

    with pytest.raises(ConverterFailedError):
        with memory_limited():
            raise ConverterFailedError("tf2onnx", "std::bad_alloc in its child")


def test_symlink_loops_in_a_calibration_set_end_in_one_clear_answer(tmp_path: Path):
    """Held case: a looping link among the photos is skipped; a looping link as the set itself is refused."""
    from safeconvert.errors import BadInputError
    from safeconvert.validators.calibration import default_calibration_dir, load_calibration

    directory = tmp_path / "photos"
    directory.mkdir()
    shutil.copy(default_calibration_dir() / "dog.jpg", directory / "dog.jpg")
    (directory / "loop.jpg").symlink_to(directory / "loop.jpg")
    assert load_calibration(directory).names == ["dog.jpg"]
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(BadInputError, match="not found"):
        load_calibration(tmp_path / "loop")
