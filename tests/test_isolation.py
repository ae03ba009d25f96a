"""Each hop in a child process: the request/response protocol, limits, crashes, other interpreters.

The misbehaving converters are real processes: small executable "interpreters" written by the tests and
named with --converter-env, that crash, hang or allocate memory until killed. The well-behaved foreign
interpreter is this very Python started so that safeconvert cannot be imported in it, which makes the
standalone-script path (hops/standalone/) do the work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from safeconvert.formats import Format
from safeconvert.hops.envs import ConverterEnvs, child_command, load_config, parse_converter_env, standalone_script
from safeconvert.hops.isolate import Limits, run_limited
from safeconvert.hops.protocol import HopRequest, HopResponse, options_from_json, options_to_json
from safeconvert.routes import hop_alternatives
from safeconvert.wrappers.base import ConversionOptions
from safeconvert.wrappers.tf2onnx_cli import Tf2OnnxCliFlags
from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter
from safeconvert.wrappers.tflite_wrapper import TfliteConverter

from hop_fakes import (CRASH, HANG, HANG_MARKER, HOG, PYTHON, WITHOUT_SAFECONVERT, fake_python, hanging_processes,
                       leftovers, run_cli)

pytestmark = pytest.mark.timeout(300)


def keras_onnx_converters() -> list[str]:
    """Every converter registered for Keras -> ONNX (tf2onnx first)."""
    return [c.name for c in hop_alternatives(Tf2OnnxConverter(), Format.KERAS)]


def assert_failed_cleanly(result: subprocess.CompletedProcess, out: Path, tmp: Path) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("safeconvert: error:"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".safeconvert-")]
    assert not leftovers(tmp)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(output folder, the runs' temporary directory)."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmp.mkdir()
    return out, tmp


def test_options_round_trip_through_json(tmp_path: Path):
    flags = Tf2OnnxCliFlags(inputs="x:0[1,32,32,3]", outputs="y:0", inputs_as_nchw=["x:0"], rename_inputs=["input"],
                            use_graph_names=True, target=["rs6"])
    data = np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype(np.float32)
    options = ConversionOptions(opset=17, tflite_optimizations=["DEFAULT"], tflite_supported_types=["float16"],
                                tflite_int8=True, representative_data=data, input_shape=(1, 3, 32, 32),
                                torch_dynamo=False, keep_quantisation=True, tf2onnx_cli=flags)
    encoded, npy = options_to_json(options, tmp_path)
    request = HopRequest("tf2onnx", "/m.keras", "keras", "onnx", "/m.onnx", encoded, npy)
    request.write(tmp_path / "request.json")
    back = HopRequest.read(tmp_path / "request.json")
    decoded = options_from_json(back.options, back.representative_data)
    assert np.array_equal(decoded.representative_data, data) and Path(npy).parent == tmp_path
    decoded.representative_data = options.representative_data = None
    assert decoded == options and decoded.tf2onnx_cli == flags and decoded.input_shape == (1, 3, 32, 32)


def test_unreadable_response_means_crash(tmp_path: Path):
    assert HopResponse.read(tmp_path / "missing.json") is None
    (tmp_path / "half.json").write_text('{"ok": tr')
    assert HopResponse.read(tmp_path / "half.json") is None


def test_limits_kill_the_whole_process_group(tmp_path: Path):
    """The hanging child's own helper (a background sleep) dies with it."""
    script = fake_python(tmp_path, "hang", HANG)
    started = time.perf_counter()
    result = run_limited([str(script), "x"], tmp_path / "log", Limits(timeout=2.0))
    assert result.timed_out and time.perf_counter() - started < 10
    assert result.log_tail == ("converter: stuck in a loop",)
    time.sleep(0.3)
    assert not hanging_processes()


def test_interpreter_choice(tmp_path: Path):
    assert standalone_script(Tf2OnnxConverter()).name == "tf2onnx_hop.py"
    assert standalone_script(TfliteConverter()) is None
    own = child_command(TfliteConverter(), ConverterEnvs())
    assert own.argv[-2:] == ["-m", "safeconvert.hops.child"] and not own.standalone
    other = fake_python(tmp_path, "other", WITHOUT_SAFECONVERT, probe_passes=False)
    foreign = child_command(Tf2OnnxConverter(), ConverterEnvs({"tf2onnx": str(other)}))
    assert foreign.standalone and foreign.argv == [str(other), str(standalone_script(Tf2OnnxConverter()))]
    assert "PYTHONPATH" not in foreign.env
    assert parse_converter_env(["onnx-tf=/opt/py/bin/python"]) == {"onnx-tf": "/opt/py/bin/python"}
    with pytest.raises(Exception, match="NAME=/path/to/python"):
        parse_converter_env(["onnx-tf"])
    config = tmp_path / "safeconvert.toml"
    config.write_text('[converter-env]\n"onnx-tf" = "/opt/py/bin/python"\ntf2onnx = "envs/tf/bin/python"\n')
    assert load_config(config) == {"onnx-tf": "/opt/py/bin/python", "tf2onnx": str(tmp_path / "envs/tf/bin/python")}


@pytest.mark.parametrize("kind,body,words", [
    ("crash", CRASH, "crashed (killed by SIGSEGV): Fatal Python error: Segmentation fault"),
    ("hang", HANG, "no result within 6 s"),
    ("memory", HOG, "used more than 400 MB of memory"),
], ids=["crash", "hang", "memory"])
def test_misbehaving_converter_is_a_tool_finding(kind: str, body: str, words: str, small_keras_file: Path, dirs):
    """Every Keras -> ONNX converter misbehaves: exit 3, the TOOL finding quotes the converter's last lines."""
    out_dir, tmp = dirs
    fake = fake_python(tmp.parent, f"fake-{kind}", body)
    out, report = out_dir / "m.onnx", out_dir / "r.json"
    envs = [arg for name in keras_onnx_converters() for arg in ("--converter-env", f"{name}={fake}")]
    result = run_cli(["convert", str(small_keras_file), "-o", str(out), "--report", str(report), "--hop-timeout", "6",
                      "--hop-memory", "400", *envs], tmp)
    assert result.returncode == 3, result.stderr
    assert_failed_cleanly(result, out, tmp)
    assert words in result.stderr
    data = json.loads(report.read_text())
    tool = [f for f in data["findings"] if f["category"] == "TOOL"]
    assert len(tool) == len(keras_onnx_converters()) and tool[0]["evidence"]["converter"] == "tf2onnx"
    assert tool[0]["evidence"]["failure"] == kind and tool[0]["evidence"]["log_tail"][0].startswith("converter: ")
    assert [(a["converter"], a["outcome"]) for a in data["converters_tried"]] == [(n, "dropped") for n in keras_onnx_converters()]
    assert data["exit_code"] == 3 and data["output"] is None
    assert not hanging_processes()


def test_converter_in_another_interpreter_runs_its_standalone_script(small_keras_file: Path, dirs):
    """tf2onnx in a Python where safeconvert cannot be imported: its standalone script converts, verified."""
    out_dir, tmp = dirs
    other = fake_python(tmp.parent, "python-without-safeconvert", WITHOUT_SAFECONVERT, probe_passes=False)
    probe = subprocess.run([str(other), str(Path(standalone_script(Tf2OnnxConverter())).parent / "probe_interpreter.py")],
                           capture_output=True, text=True)
    assert probe.returncode == 1 and "no safeconvert" in probe.stdout  # the interpreter really lacks it
    out, report = out_dir / "m.onnx", out_dir / "r.json"
    result = run_cli(["convert", str(small_keras_file), "-o", str(out), "--report", str(report),
                      "--converter-env", f"tf2onnx={other}"], tmp)
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["route"][0]["interpreter"] == str(other) and data["route"][0]["tool_version"]
    assert data["verdict"]["verified"] and out.is_file() and not leftovers(tmp)


def test_foreign_interpreter_without_safeconvert_or_script_is_refused(small_keras_file: Path, dirs):
    """The TFLite converter has no standalone script: a config file pointing it elsewhere is a one-line error."""
    out_dir, tmp = dirs
    other = fake_python(tmp.parent, "python-without-safeconvert", WITHOUT_SAFECONVERT, probe_passes=False)
    config = tmp.parent / "conf.toml"
    config.write_text(f'[converter-env]\n"tflite-converter" = "{other}"\n')
    out = out_dir / "m.tflite"
    result = run_cli(["convert", str(small_keras_file), "-o", str(out), "--config", str(config)], tmp)
    assert result.returncode == 2, result.stderr
    assert_failed_cleanly(result, out, tmp)
    assert f"{other} cannot import safeconvert and tflite-converter has no standalone script" in result.stderr


def test_interrupt_kills_the_hop_and_cleans_up(small_keras_file: Path, dirs):
    """Ctrl-C while a converter hangs: exit 130, the converter's process group gone, no files left."""
    out_dir, tmp = dirs
    fake = fake_python(tmp.parent, "fake-hang", HANG)
    out = out_dir / "m.onnx"
    process = subprocess.Popen([PYTHON, "-m", "safeconvert", "convert", str(small_keras_file), "-o", str(out),
                                "--converter-env", f"tf2onnx={fake}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 120
        while not any(HANG_MARKER in command for command in _descendant_commands(process.pid)):
            assert process.poll() is None and time.monotonic() < deadline, "the hop never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists() and not [p for p in out_dir.iterdir() if p.name.startswith(".safeconvert-")]
    assert not leftovers(tmp)
    time.sleep(0.3)
    assert not hanging_processes()


def test_a_killed_safeconvert_takes_its_hop_with_it(small_keras_file: Path, dirs):
    """SIGKILL leaves safeconvert no chance to clean up: the hop's watchdog still kills the converter."""
    out_dir, tmp = dirs
    fake = fake_python(tmp.parent, "fake-hang", HANG)
    process = subprocess.Popen([PYTHON, "-m", "safeconvert", "convert", str(small_keras_file), "-o", str(out_dir / "m.onnx"),
                                "--converter-env", f"tf2onnx={fake}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 120
        while not any(HANG_MARKER in command for command in _descendant_commands(process.pid)):
            assert process.poll() is None and time.monotonic() < deadline, "the hop never started"
            time.sleep(0.05)
        assert hanging_processes()
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 10
    while hanging_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not hanging_processes()


def _descendant_commands(pid: int) -> list[str]:
    """The command lines of a process's descendants (those that vanish meanwhile are skipped)."""
    import psutil

    commands = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        try:
            commands.append(" ".join(child.cmdline()))
        except psutil.Error:
            pass
    return commands


def test_isolated_hop_frees_the_converters_memory(small_keras_file: Path, tmp_path: Path):
    """The converter's frameworks are imported in the child, not here: after a Keras -> ONNX hop, a fresh
    process has imported neither TensorFlow nor tf2onnx nor onnx, so their memory went with the child."""
    code = (
        "import sys; from pathlib import Path\n"
        "from safeconvert.hops.run import convert_isolated\n"
        "from safeconvert.hops.settings import Isolation\n"
        "from safeconvert.formats import Format\n"
        "from safeconvert.wrappers.base import ConversionOptions\n"
        "from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter\n"
        "run = convert_isolated(Tf2OnnxConverter(), Path(sys.argv[1]), Format.KERAS, Path(sys.argv[2]), ConversionOptions(), Isolation())\n"
        "assert Path(sys.argv[2]).stat().st_size > 1000 and run.peak_rss > 100 << 20, run\n"
        "print(sorted(m for m in ('tensorflow', 'tf2onnx', 'onnx') if m in sys.modules))\n"
    )
    result = subprocess.run([PYTHON, "-c", code, str(small_keras_file), str(tmp_path / "m.onnx")], capture_output=True,
                            text=True, timeout=280, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    assert not leftovers(tmp_path)


@pytest.mark.slow  # a full-integer TFLite calibration in a child
def test_keep_float_requantisation_runs_in_a_child(small_keras_file: Path, tmp_path: Path):
    """The int8 keep-float repair re-quantises through the same isolated call; its layer list reaches the child."""
    from safeconvert.hops.requantise import KeepFloatTfliteConverter
    from safeconvert.hops.run import convert_isolated
    from safeconvert.hops.settings import Isolation

    data = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    out = tmp_path / "q.tflite"
    options = ConversionOptions(tflite_int8=True, representative_data=data)
    run = convert_isolated(KeepFloatTfliteConverter([]), small_keras_file, Format.KERAS, out, options, Isolation())
    assert out.read_bytes()[4:8] == b"TFL3" and run.tool_version
    kept = _first_conv_output(out)
    partly = tmp_path / "partly-float.tflite"
    convert_isolated(KeepFloatTfliteConverter([kept]), small_keras_file, Format.KERAS, partly, options, Isolation())
    assert _float_tensors(partly) > _float_tensors(out)  # the layer list reached the child: that layer stayed float


def _float_tensors(path: Path) -> int:
    import tflite

    graph = tflite.Model.GetRootAsModel(path.read_bytes(), 0).Subgraphs(0)
    return sum(graph.Tensors(i).Type() == tflite.TensorType.FLOAT32 for i in range(graph.TensorsLength()))


def _first_conv_output(path: Path) -> str:
    """The output tensor name of the first convolution in a .tflite file (what keep-float names)."""
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        if model.OperatorCodes(op.OpcodeIndex()).BuiltinCode() == tflite.BuiltinOperator.CONV_2D:
            return graph.Tensors(op.Outputs(0)).Name().decode()
    raise AssertionError("no convolution in the model")
