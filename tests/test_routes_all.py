"""Every route of the route table, run for real on small seeded models and validated by `convert`.

Each source file is written by its framework directly (not by the wrappers under test). A route the table
says works here must come out verified; a route it says cannot work must say why. Routes through onnx2tf or
more than one TensorFlow hop take several seconds each and are marked slow; the real MobileNetV2 runs the main
routes in test_mobilenet_routes (slow). onnx-tf runs when its interpreter exists (`make onnx-tf-env`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model_factories import TINY_SIZE, keras_to_tflite, save_torchscript
from safeconvert.formats import Format
from safeconvert.pipeline import CheckRequest, ConvertRequest, run_check, run_convert
from safeconvert.routes import route_table
from safeconvert.wrappers.base import ConversionOptions

REPO = Path(__file__).resolve().parent.parent
ONNX_TF_VENV_PYTHON = REPO / ".venv-onnx-tf" / "bin" / "python"
OUTPUT_NAMES = {f: f"out{f.suffix}" if f.suffix else "out_savedmodel" for f in Format}
# The fast set runs the hops no other fast test covers; each route costs ~10 s here (converter, child-process
# probes of the output, 42 images through both models), so the rest are slow.
FAST = {("keras", "savedmodel"), ("onnx", "pt2"), ("torchscript", "onnx")}
ROWS = route_table()
WORKING = [(r["source"], r["target"]) for r in ROWS if r["works"]]
NOT_WORKING = [(r["source"], r["target"]) for r in ROWS if not r["works"]]


def _marked(pair: tuple[str, str]):
    return pytest.param(*pair, id=f"{pair[0]}-to-{pair[1]}", marks=() if pair in FAST else pytest.mark.slow)


@pytest.fixture(scope="module")
def sources(small_keras_file: Path, small_pt2_file: Path, tmp_path_factory) -> dict[str, Path]:
    """One small model per format, each written with its own framework's API."""
    import torch

    from safeconvert.models.small import torch_small_cnn
    from safeconvert.runners.tf_runner import load_keras_model

    work = tmp_path_factory.mktemp("route-sources")
    saved_model = work / "small_savedmodel"
    load_keras_model(small_keras_file).export(str(saved_model), verbose=False)
    onnx_path = work / "small.onnx"
    example = torch.randn(1, 3, TINY_SIZE, TINY_SIZE)
    torch.onnx.export(torch_small_cnn().eval(), (example,), str(onnx_path), dynamo=False, opset_version=13,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return {
        "keras": small_keras_file,
        "savedmodel": saved_model,
        "tflite": keras_to_tflite(small_keras_file, work / "small.tflite"),
        "onnx": onnx_path,
        "pt2": small_pt2_file,
        "torchscript": save_torchscript(torch_small_cnn(), work / "small.pt", (None, 3, TINY_SIZE, TINY_SIZE)),
    }


def _convert(source: Path, output: Path, **options):
    return run_convert(ConvertRequest(source, output, trust_model_code=True, repair=False,
                                      options=ConversionOptions(**options))).report


@pytest.mark.parametrize("source_format,target_format", [_marked(p) for p in WORKING])
def test_route_converts_and_is_verified(sources: dict[str, Path], tmp_path: Path, source_format: str, target_format: str):
    output = tmp_path / OUTPUT_NAMES[Format(target_format)]
    report = _convert(sources[source_format], output)
    row = next(r for r in ROWS if (r["source"], r["target"]) == (source_format, target_format))
    assert [hop.converter for hop in report.route] == row["converters"]
    assert report.verified, (report.verdict, report.metrics)
    assert report.metrics["top1_agreement"] == 1.0 and report.metrics["images"] == 42
    assert output.exists() and report.output == str(output)


@pytest.mark.parametrize("source_format,target_format", NOT_WORKING)
def test_route_that_cannot_work_says_why(sources: dict[str, Path], tmp_path: Path, source_format: str, target_format: str):
    row = next(r for r in ROWS if (r["source"], r["target"]) == (source_format, target_format))
    assert row["why"] and row["why"] != "ok"
    output = tmp_path / OUTPUT_NAMES[Format(target_format)]
    result = subprocess.run([sys.executable, "-m", "safeconvert", "convert", str(sources[source_format]), "-o", str(output),
                             "--to", target_format, "--trust-model-code", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Keras 3" in result.stderr and not output.exists()


def test_routes_command_lists_every_route_with_its_converters():
    result = subprocess.run([sys.executable, "-m", "safeconvert", "routes"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "onnx -> savedmodel" in result.stdout and "onnx2tf (or onnx2tf-fused, onnx-tf)" in result.stdout
    assert "tf2onnx (or tf2onnx-savedmodel)" in result.stdout
    assert "no route to keras:" in result.stdout


# ---------------------------------------------------------------------------------------------------------
# onnx2tf never downloads


NETWORK_BLOCKED_RUN = """
import socket, sys
from pathlib import Path
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = refuse
{body}
print("attempts:", len(attempts))
"""


def _blocked(body: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NETWORK_BLOCKED_RUN.format(body=body)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.mark.slow
def test_onnx2tf_runs_with_the_network_blocked(sources: dict[str, Path], tmp_path: Path):
    """The control run shows the block bites (onnx2tf's own download fails); the wrapper's run still converts."""
    control = _blocked("from onnx2tf.utils.common_functions import download_test_image_data\n"
                       "try:\n    download_test_image_data()\nexcept Exception as exc:\n    print('download failed:', exc)",
                       tmp_path)
    assert "download failed" in control.stdout and "attempts: 0" not in control.stdout, control.stdout + control.stderr
    out = tmp_path / "blocked.tflite"
    run = _blocked("from safeconvert.formats import Format\n"
                   "from safeconvert.wrappers.base import ConversionOptions\n"
                   "from safeconvert.wrappers.onnx2tf_wrapper import Onnx2TfTfliteConverter\n"
                   f"Onnx2TfTfliteConverter().convert(Path({str(sources['onnx'])!r}), Format.ONNX, Path({str(out)!r}), "
                   "ConversionOptions())", tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "attempts: 0" in run.stdout and out.is_file()
    assert not list(tmp_path.glob("calibration_image_sample_data_*")), "onnx2tf's sample must stay in its scratch directory"


def test_onnx2tf_sample_comes_from_the_packaged_photos(tmp_path: Path):
    from safeconvert.validators.calibration import default_calibration_dir, read_image
    from safeconvert.validators.preprocess import resize_and_crop
    from safeconvert.wrappers.onnx2tf_sample import SAMPLE_FILE, write_sample

    path = write_sample(tmp_path)
    assert path.name == SAMPLE_FILE == "calibration_image_sample_data_20x128x128x3_float32.npy"
    sample = np.load(path)
    assert sample.shape == (20, 128, 128, 3) and sample.dtype == np.float32
    assert 0.0 <= sample.min() and sample.max() <= 1.0
    first = sorted(p for p in default_calibration_dir().iterdir() if p.suffix == ".jpg")[0]
    np.testing.assert_allclose(sample[0], resize_and_crop(read_image(first), 128, 128) / 255.0, atol=1e-6)


def test_onnx2tf_error_names_the_node_and_the_cause_not_its_generic_advice():
    """onnx2tf's log ends with the same advice whatever failed; the message quotes the exception and the node
    (an excerpt of onnx2tf 1.29's log for tf2onnx's NHWC MobileNetV2)."""
    from safeconvert.wrappers.onnx2tf_wrapper import _last_error

    log = ("\x1b[31mERROR:\x1b[0m The trace log is below.\nTraceback (most recent call last):\n  File \"Mul.py\", line 319\n"
           'ValueError: Exception encountered when calling layer "tf.math.multiply_2" (type TFOpLambda).\n'
           "Dimensions must be equal, but are 112 and 32 with input shapes: [?,112,112,32], [1,1,32,1].\n"
           'Call arguments received by layer "tf.math.multiply_2" (type TFOpLambda):\n'
           "\x1b[31mERROR:\x1b[0m onnx_op_name: block1_dw_bn/batchnorm/mul_1\n"
           "\x1b[31mERROR:\x1b[0m If the input OP of ONNX before conversion is NHWC ..., use the -kt or -kat option.\n")
    message = _last_error(log, SystemExit(1))
    assert message.startswith("at ONNX node block1_dw_bn/batchnorm/mul_1: ValueError: ")
    assert "Dimensions must be equal, but are 112 and 32" in message and "-kat" not in message
    assert _last_error("\x1b[31mERROR:\x1b[0m unsupported op\n", SystemExit(1)) == "unsupported op"


@pytest.mark.slow
def test_onnx2tf_failure_carries_its_error_lines(tmp_path: Path):
    """A model onnx2tf refuses ends as ConverterFailedError with onnx2tf's words, and the process state is restored."""
    import onnx
    from onnx import TensorProto, helper

    from safeconvert.errors import ConverterFailedError
    from safeconvert.wrappers.onnx2tf_wrapper import Onnx2TfConverter

    node = helper.make_node("NoSuchOp", ["input"], ["output"], domain="")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(bad))
    limit, cwd = sys.getrecursionlimit(), os.getcwd()
    with pytest.raises(ConverterFailedError, match="onnx2tf") as raised:
        Onnx2TfConverter().convert(bad, Format.ONNX, tmp_path / "bad_savedmodel", ConversionOptions())
    assert "NoSuchOp" in str(raised.value) or "nosuchop" in str(raised.value).lower()
    assert sys.getrecursionlimit() == limit and os.getcwd() == cwd and "TF_USE_LEGACY_KERAS" not in os.environ
    assert not (tmp_path / "bad_savedmodel").exists() and not list(tmp_path.glob(".onnx2tf-*"))


# ---------------------------------------------------------------------------------------------------------
# onnx-tf, in its own interpreter


def _onnx_tf_python() -> str | None:
    configured = os.environ.get("SAFECONVERT_ONNX_TF_PYTHON")
    if configured:
        return configured
    return str(ONNX_TF_VENV_PYTHON) if ONNX_TF_VENV_PYTHON.is_file() else None


@pytest.fixture
def onnx_tf(monkeypatch):
    """The onnx-tf converter pointed at its interpreter, or a skip saying how to get one."""
    from safeconvert.wrappers.onnx_tf_wrapper import ENV_VAR, OnnxTfConverter

    python = _onnx_tf_python()
    if python is None:
        pytest.skip("no onnx-tf interpreter: run `make onnx-tf-env` or set SAFECONVERT_ONNX_TF_PYTHON")
    monkeypatch.setenv(ENV_VAR, python)
    converter = OnnxTfConverter()
    assert converter.availability() == (True, "ok"), converter.availability()
    assert converter.version() == "1.10.0"
    return converter


@pytest.mark.slow
def test_onnx_tf_route_is_verified(onnx_tf, sources: dict[str, Path], tmp_path: Path):
    out = tmp_path / "onnx_tf_savedmodel"
    onnx_tf.convert(sources["onnx"], Format.ONNX, out, ConversionOptions())
    report = run_check(CheckRequest(sources["onnx"], out)).report
    assert report.verified, (report.verdict, report.metrics)
    assert report.target["input"]["layout"] == "NCHW"  # onnx-tf keeps the ONNX layout


def test_routes_command_judges_onnx_tf_in_the_given_interpreter(onnx_tf, monkeypatch):
    from safeconvert.wrappers.onnx_tf_wrapper import ENV_VAR

    python = os.environ[ENV_VAR]
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    shown = subprocess.run([sys.executable, "-m", "safeconvert", "routes", "--converter-env", f"onnx-tf={python}"],
                           capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "250"})
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith("│ onnx-tf "))
    assert "1.10.0" in row and "yes" in row
    bare = subprocess.run([sys.executable, "-m", "safeconvert", "routes"], capture_output=True, text=True, timeout=120,
                          env={**env, "COLUMNS": "250"})
    assert "no onnx-tf interpreter configured" in bare.stdout


def test_onnx_tf_reports_bad_input_from_its_interpreter(onnx_tf, tmp_path: Path):
    from safeconvert.errors import BadInputError

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not an onnx model")
    with pytest.raises(BadInputError, match="not a loadable ONNX model"):
        onnx_tf.convert(broken, Format.ONNX, tmp_path / "never", ConversionOptions())
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------------------------------
# The real MobileNetV2 along the main routes (slow)

# keras -> onnx / tflite / torchscript, pt2 -> onnx and onnx -> torchscript run in test_mobilenet_e2e; every
# route on MobileNetV2: benchmarks/routes.py.
MOBILENET_ROUTES = [("onnx", "savedmodel"), ("onnx", "tflite"), ("onnx", "pt2"), ("keras", "savedmodel"),
                    ("savedmodel", "onnx"), ("tflite", "onnx")]


@pytest.fixture(scope="module")
def mobilenet_sources(mobilenet_files: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    import torch

    from safeconvert.models.mobilenet_v2 import torch_mobilenet_v2
    from safeconvert.runners.tf_runner import load_keras_model

    work = tmp_path_factory.mktemp("mobilenet-routes")
    onnx_path = work / "mobilenet_v2.onnx"
    torch.onnx.export(torch_mobilenet_v2().eval(), (torch.randn(1, 3, 224, 224),), str(onnx_path), dynamo=False,
                      opset_version=13, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    saved_model = work / "mobilenet_v2_savedmodel"
    load_keras_model(mobilenet_files["keras"]).export(str(saved_model), verbose=False)
    return {**{k: Path(v) for k, v in mobilenet_files.items()}, "onnx": onnx_path, "savedmodel": saved_model,
            "tflite": keras_to_tflite(mobilenet_files["keras"], work / "mobilenet_v2.tflite")}


@pytest.mark.slow
@pytest.mark.parametrize("source_format,target_format", MOBILENET_ROUTES, ids=[f"{a}-to-{b}" for a, b in MOBILENET_ROUTES])
def test_mobilenet_routes(mobilenet_sources: dict[str, Path], tmp_path: Path, source_format: str, target_format: str):
    output = tmp_path / OUTPUT_NAMES[Format(target_format)]
    started = time.perf_counter()
    report = run_convert(ConvertRequest(mobilenet_sources[source_format], output, preprocess="torch", repair=False)).report
    seconds = time.perf_counter() - started
    print(f"MobileNetV2 {source_format}->{target_format} via {[h.converter for h in report.route]}: "
          f"top-1 {report.metrics['top1_agreement']:.3f}, max|diff| {report.metrics['max_abs_diff']:.3g} "
          f"of range {report.metrics['source_output_range']:.3g}, {seconds:.1f} s")
    assert report.verified, (report.verdict, report.metrics)
    assert report.metrics["top1_agreement"] == 1.0


@pytest.mark.slow
def test_mobilenet_onnx_tf(onnx_tf, mobilenet_sources: dict[str, Path], tmp_path: Path):
    out = tmp_path / "mobilenet_onnx_tf"
    started = time.perf_counter()
    onnx_tf.convert(mobilenet_sources["onnx"], Format.ONNX, out, ConversionOptions())
    seconds = time.perf_counter() - started
    report = run_check(CheckRequest(mobilenet_sources["onnx"], out, preprocess="torch")).report
    print(f"MobileNetV2 onnx->savedmodel via onnx-tf: top-1 {report.metrics['top1_agreement']:.3f}, "
          f"max|diff| {report.metrics['max_abs_diff']:.3g}, convert {seconds:.1f} s")
    assert report.verified and report.metrics["max_abs_diff"] < 1e-4
