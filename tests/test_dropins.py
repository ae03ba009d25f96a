"""Each drop-in next to its original on the same small model: same results when verified, the
NotVerifiedError path when not, plus idempotent outputs and the --quiet / --json modes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from safeconvert.errors import NotVerifiedError
from safeconvert.models.small import INPUT_SIZE

CLI = [sys.executable, "-m", "safeconvert"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def images(seed: int = 0, count: int = 4) -> np.ndarray:
    """Seeded NHWC float inputs in the 'tf' preset's range."""
    return np.random.default_rng(seed).uniform(-1, 1, (count, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32)


def onnx_outputs(path_or_bytes, batch_nhwc: np.ndarray) -> tuple[str, list, np.ndarray]:
    """Input name, input shape and first output of an ONNX model (fed NCHW when it wants NCHW)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes),
                                   providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    batch = batch_nhwc.transpose(0, 3, 1, 2) if first.shape[1] == 3 else batch_nhwc
    return first.name, list(first.shape)[1:], session.run(None, {first.name: np.ascontiguousarray(batch)})[0]


@pytest.fixture(scope="module")
def small_onnx(small_keras_file: Path, tmp_path_factory) -> Path:
    from safeconvert.pipeline import ConvertRequest, run_convert

    out = tmp_path_factory.mktemp("dropins") / "small.onnx"
    assert run_convert(ConvertRequest(small_keras_file, out)).report.verified
    return out


@pytest.fixture(scope="module")
def keras_model():
    from safeconvert.models.small import keras_small_cnn

    return keras_small_cnn()


# --- safeconvert tf2onnx (CLI) ---------------------------------------------------------------------------

def test_tf2onnx_cli_dropin_matches_tf2onnx(small_keras_file: Path, tmp_path: Path, cli):
    """With --inputs-as-nchw, whose tensor names only mean the same thing on the command line's own path."""
    extra = ["--inputs-as-nchw", "input:0"]
    original, ours = tmp_path / "original.onnx", tmp_path / "ours.onnx"
    reference = run(sys.executable, "-m", "tf2onnx.convert", "--keras", small_keras_file, *extra, "--output", original)
    assert reference.returncode == 0, reference.stderr[-2000:]
    result = cli("tf2onnx", "--keras", small_keras_file, *extra, "--output", ours, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"]["verified"] and report["output"] == str(ours)
    assert report["route"][0]["converter"] == "tf2onnx"
    assert report["route"][0]["options"]["tf2onnx_cli"] == {"inputs_as_nchw": ["input:0"]}
    name, shape, expected = onnx_outputs(original, images())
    our_name, our_shape, got = onnx_outputs(ours, images())
    assert (our_name, our_shape) == (name, shape) == ("input:0", [3, 32, 32])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("flags,fragment", [
    (["--large_model"], "--large_model is not supported"),
    (["--custom-ops", "MyOp"], "custom ops cannot run in ONNX Runtime"),
    (["--signature_def", "predict"], "serving_default"),
    (["--outputs-as-nchw", "Identity:0"], "validated in the source model's layout"),
    (["--no-such-flag"], "no such option: --no-such-flag"),
])
def test_tf2onnx_cli_refuses_flags_it_cannot_honour(small_keras_file: Path, tmp_path: Path, flags: list[str], fragment: str):
    out = tmp_path / "m.onnx"
    assert_one_line_error(run(*CLI, "tf2onnx", "--keras", small_keras_file, *flags, "-o", out), 2, fragment)
    assert not out.exists()


def test_tf2onnx_cli_source_flag_and_json_error(small_keras_file: Path, tmp_path: Path):
    out = tmp_path / "m.onnx"
    result = run(*CLI, "tf2onnx", "--tflite", small_keras_file, "-o", out, "--json")
    assert_one_line_error(result, 2, "--tflite expects a tflite model")
    assert json.loads(result.stdout) == {"error": result.stderr.split("error: ", 1)[1].strip(), "exit_code": 2}
    assert_one_line_error(run(*CLI, "tf2onnx", "-o", out), 2, "give exactly one model")
    assert not out.exists()


# --- safeconvert onnx2torch (CLI) and safeconvert.onnx2torch.convert ------------------------------------

def test_onnx2torch_cli_dropin_matches_onnx2torch(small_onnx: Path, tmp_path: Path, cli):
    import torch

    from safeconvert.wrappers.onnx2torch_wrapper import _import_onnx2torch

    out = tmp_path / "small.pt"
    result = cli("onnx2torch", small_onnx, out, "--quiet")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    original = _import_onnx2torch().convert(str(small_onnx)).eval()
    batch = torch.from_numpy(images())  # the ONNX model came from Keras: NHWC input
    with torch.no_grad():
        np.testing.assert_allclose(torch.jit.load(str(out))(batch).numpy(), original(batch).numpy(), rtol=0, atol=1e-6)
    assert_one_line_error(cli("onnx2torch", out, tmp_path / "again.pt"), 2, "onnx2torch converts ONNX models")


def test_onnx2torch_python_dropin(small_onnx: Path, tmp_path: Path):
    import onnx
    import torch

    from safeconvert.onnx2torch import Onnx2TorchNotVerifiedError, convert
    from safeconvert.wrappers.onnx2torch_wrapper import _import_onnx2torch

    report_path = tmp_path / "r.json"
    module = convert(small_onnx, report_path=report_path)
    original = _import_onnx2torch().convert(small_onnx)
    assert isinstance(module, torch.fx.GraphModule) and module.training == original.training  # as onnx2torch hands it back
    batch = torch.from_numpy(images())  # the ONNX model came from Keras: NHWC input
    with torch.no_grad():
        np.testing.assert_allclose(module.eval()(batch).numpy(), original.eval()(batch).numpy(), rtol=0, atol=0)
    assert json.loads(report_path.read_text())["verdict"]["verified"]

    with pytest.raises(Onnx2TorchNotVerifiedError) as caught:  # a limit no float conversion meets
        convert(onnx.load(str(small_onnx)), rtol=0.0)
    assert isinstance(caught.value, NotVerifiedError) and not caught.value.report.verified
    assert caught.value.report.metrics["max_abs_diff"] > 0 and "allow_unverified" in str(caught.value)


# --- safeconvert.lite.TFLiteConverter ----------------------------------------------------------------------

def _tflite_outputs(flatbuffer: bytes, batch: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(batch.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_lite_dropin_matches_tf_lite(keras_model, tmp_path: Path):
    import tensorflow as tf

    from safeconvert.lite import TFLiteConverter
    from safeconvert.validators.calibration import default_calibration_dir

    calib = tmp_path / "calib"
    calib.mkdir()
    for photo in sorted(default_calibration_dir().glob("*.jpg"))[:6]:
        shutil.copy(photo, calib)
    converter = TFLiteConverter.from_keras_model(keras_model)
    converter.calibration = calib
    ours = converter.convert()
    original = tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
    assert converter.report.verified and converter.report.calibration["images"] == 6
    np.testing.assert_allclose(_tflite_outputs(ours, images()), _tflite_outputs(original, images()), rtol=0, atol=0)


def test_lite_quantisation_is_the_users_call(keras_model):
    import tensorflow as tf

    from safeconvert.lite import TFLiteConverter, TFLiteNotVerifiedError

    converter = TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    assert converter._real.optimizations == [tf.lite.Optimize.DEFAULT]  # the attribute reached TensorFlow
    with pytest.raises(TFLiteNotVerifiedError) as caught:
        converter.convert()
    report = caught.value.report
    assert isinstance(caught.value, NotVerifiedError) and not report.verified and report.metrics["images"] == 42
    assert "dynamic-range weight quantisation" in str(caught.value) and "allow_unverified" in str(caught.value)

    converter.allow_unverified = True
    quantised = converter.convert()
    reference = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    reference.optimizations = [tf.lite.Optimize.DEFAULT]
    np.testing.assert_allclose(_tflite_outputs(quantised, images()), _tflite_outputs(reference.convert(), images()), atol=0)
    assert not converter.report.verified


def test_lite_from_saved_model(keras_model, tmp_path: Path):
    import tensorflow as tf

    from safeconvert.lite import TFLiteConverter

    saved = tmp_path / "saved"
    keras_model.export(str(saved), verbose=False)
    converter = TFLiteConverter.from_saved_model(str(saved))
    ours = converter.convert()
    assert converter.report.verified and converter.report.source["format"] == "savedmodel"
    original = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    np.testing.assert_allclose(_tflite_outputs(ours, images()), _tflite_outputs(original, images()), atol=0)


# --- safeconvert.tf2onnx.from_keras ------------------------------------------------------------------------

def test_tf2onnx_from_keras_dropin(keras_model, tmp_path: Path):
    import tensorflow as tf
    import tf2onnx

    from safeconvert.tf2onnx import Tf2OnnxNotVerifiedError, from_keras

    signature = (tf.TensorSpec((None, INPUT_SIZE, INPUT_SIZE, 3), tf.float32, name="input"),)
    out = tmp_path / "m.onnx"
    proto, storage = from_keras(keras_model, input_signature=signature, opset=17, output_path=str(out))
    reference, _ = tf2onnx.convert.from_keras(keras_model, input_signature=signature, opset=17)
    assert storage is None and out.read_bytes() == proto.SerializeToString()
    name, shape, expected = onnx_outputs(reference.SerializeToString(), images())
    assert onnx_outputs(out, images())[:2] == (name, shape)
    np.testing.assert_allclose(onnx_outputs(out, images())[2], expected, rtol=0, atol=0)

    refused = tmp_path / "refused.onnx"
    with pytest.raises(Tf2OnnxNotVerifiedError) as caught:
        from_keras(keras_model, input_signature=signature, output_path=str(refused), rtol=0.0)
    assert not refused.exists() and caught.value.report.output is None


# --- safeconvert.convert / safeconvert.check -----------------------------------------------------------

def test_python_api_convert_and_check(small_keras_file: Path, tmp_path: Path):
    import safeconvert

    out = tmp_path / "m.tflite"
    report = safeconvert.convert(small_keras_file, out, report=tmp_path / "r.json")
    assert report.verified and out.exists() and report.output == str(out)
    checked = safeconvert.check(small_keras_file, out)
    assert checked.verified and checked.command == "check"
    quantised = safeconvert.convert(small_keras_file, tmp_path / "q.tflite", tflite_optimize=True, repair=False)
    assert not quantised.verified and quantised.exit_code == 1 and not (tmp_path / "q.tflite").exists()


def test_import_safeconvert_stays_light():
    probe = ("import sys, safeconvert; heavy = ('tensorflow', 'torch', 'onnxruntime', 'onnx', 'safeconvert.api'); "
             "print(any(m in sys.modules for m in heavy), callable(safeconvert.convert), 'safeconvert.api' in sys.modules)")
    assert run(sys.executable, "-c", probe).stdout.split() == ["False", "True", "True"]


# --- idempotent convert, same bytes, --quiet / --json ---------------------------------------------------

def test_convert_is_idempotent_and_reproducible(small_keras_file: Path, tmp_path: Path, cli):
    from safeconvert.pipeline import ConvertRequest
    from safeconvert.uptodate import previous_report, sidecar_path
    from safeconvert.validators.verdict import Thresholds

    source, out = tmp_path / "m.keras", tmp_path / "m.onnx"
    shutil.copy(small_keras_file, source)
    first = cli("convert", source, "-o", out)
    assert first.returncode == 0 and sidecar_path(out).is_file(), first.stderr
    written = (out.read_bytes(), out.stat().st_mtime_ns)
    again = cli("convert", source, "-o", out)
    assert again.returncode == 0 and again.stdout.strip().startswith("up to date:") and len(again.stdout.splitlines()) == 1
    assert (out.read_bytes(), out.stat().st_mtime_ns) == written
    as_json = cli("convert", source, "-o", out, "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["verdict"]["verified"]

    other = tmp_path / "other.onnx"  # another process: tf2onnx alone would number generated names differently
    assert run(*CLI, "convert", source, "-o", other, "--quiet").stdout == ""
    assert other.read_bytes() == out.read_bytes()

    assert previous_report(ConvertRequest(source, out)) is not None
    assert previous_report(ConvertRequest(source, out, thresholds=Thresholds(rtol=0.01))) is None  # other settings
    os.utime(source, ns=(out.stat().st_mtime_ns + 10**9,) * 2)
    assert previous_report(ConvertRequest(source, out)) is None  # source newer than OUT
    os.utime(source, ns=(out.stat().st_mtime_ns - 10**9,) * 2)
    out.write_bytes(out.read_bytes() + b"\0")
    assert previous_report(ConvertRequest(source, out)) is None  # OUT changed since it was verified
    assert cli("convert", source, "-o", out).returncode == 2  # and then --force rules apply


def test_check_json(small_keras_file: Path, small_onnx: Path, cli):
    failed = cli("check", small_keras_file, small_onnx, "--json", "--rtol", "0")
    assert failed.returncode == 1 and json.loads(failed.stdout)["exit_code"] == 1


def test_canonical_names_undo_tf2onnx_numbering(small_onnx: Path):
    """Protos that differ only in generated names (numbering, and the stem a de-duplicated constant kept) and in
    initializer order serialise identically."""
    import onnx

    from safeconvert.wrappers.onnx_names import GENERATED, canonical_names

    model = onnx.load(str(small_onnx))
    shuffled = onnx.ModelProto()
    shuffled.CopyFrom(model)
    bump, initializers = {}, {t.name for t in shuffled.graph.initializer}
    for node in shuffled.graph.node:
        for name in [*node.input, *node.output, node.name]:
            match = GENERATED.match(name)
            if match and name not in {i.name for i in shuffled.graph.input}:
                stem = f"kept_{len(bump)}" if name in initializers else match.group("stem")
                bump[name] = f"{stem}__{int(match.group('id')) + 100}{match.group('port') or ''}"
    assert bump, "the tf2onnx model should have generated names"
    for node in shuffled.graph.node:
        node.input[:] = [bump.get(n, n) for n in node.input]
        node.output[:] = [bump.get(n, n) for n in node.output]
        node.name = bump.get(node.name, node.name)
    for tensor in shuffled.graph.initializer:
        tensor.name = bump.get(tensor.name, tensor.name)
    reversed_initializers = list(reversed(shuffled.graph.initializer))
    copies = [onnx.TensorProto() for _ in reversed_initializers]
    for copy, tensor in zip(copies, reversed_initializers):
        copy.CopyFrom(tensor)
    del shuffled.graph.initializer[:]
    shuffled.graph.initializer.extend(copies)
    assert shuffled.SerializeToString() != model.SerializeToString()
    assert canonical_names(shuffled).SerializeToString() == canonical_names(model).SerializeToString()
    onnx.checker.check_model(shuffled)
