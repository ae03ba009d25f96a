"""Falling back to another converter for a hop: after a crash, a hang, or a model that is not verified.

The failing converters are real processes (see test_isolation.py): an "interpreter" named with
--converter-env that crashes or hangs, or that runs the real tf2onnx and then damages the model it wrote.
The alternatives are the converters registered for the same hop (routes.hop_alternatives).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from safeconvert.formats import Format
from safeconvert.hops.fallback import RouteQueue
from safeconvert.routes import hop_alternatives, registered_converters
from safeconvert.wrappers.onnx2torch_wrapper import Onnx2TorchConverter
from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter
from safeconvert.wrappers.tflite_wrapper import TfliteConverter

from hop_fakes import CRASH, HANG, PYTHON, fake_python, leftovers, run_cli

pytestmark = pytest.mark.timeout(400)

# Runs the real tf2onnx (its standalone script, in this interpreter), then shuffles the classifier's output
# columns in the model it wrote: a converter that "succeeds" with a wrong model.
DAMAGING = f'''{PYTHON} "$@" || exit $?
exec {PYTHON} -c "
import json, sys, numpy as np, onnx
from onnx import numpy_helper
path = json.load(open(sys.argv[1]))['output']
model = onnx.load(path)
dense = max(model.graph.initializer, key=lambda t: (len(t.dims) == 2, int(np.prod(t.dims))))
dense.CopyFrom(numpy_helper.from_array(np.roll(numpy_helper.to_array(dense), 1, axis=-1), dense.name))
onnx.save(model, path)
" "$2"'''


def alternative(chosen, fmt: Format) -> str:
    """The converter safeconvert falls back to for this hop (skips when none is registered here)."""
    others = [c.name for c in hop_alternatives(chosen, fmt)[1:] if c.availability()[0]]
    if not others:
        pytest.skip(f"no alternative to {chosen.name} for {fmt.value} is registered and usable here")
    return others[0]


def run(args: list[str], tmp_path: Path, in_process=None) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """`safeconvert convert ARGS -o OUT --report R` in its own process (or in this one, with a fixture's
    monkeypatch, to spare a TensorFlow start-up); checks that no temporary or scratch files are left."""
    out_dir, tmp = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    tmp.mkdir()
    out, report = out_dir / f"m{'.onnx' if '--to' not in args else ''}", out_dir / "r.json"
    argv = ["convert", *args, "-o", str(out), "--report", str(report)]
    result = run_cli(argv, tmp) if in_process is None else _run_here(argv, tmp, *in_process)
    assert not leftovers(tmp) and not [p for p in out_dir.iterdir() if p.name.startswith(".safeconvert-")]
    return result, json.loads(report.read_text()), out


def _run_here(argv: list[str], tmp: Path, monkeypatch, capfd) -> subprocess.CompletedProcess:
    import tempfile

    from safeconvert.cli import main

    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    capfd.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(argv)
    captured = capfd.readouterr()
    return subprocess.CompletedProcess(argv, ended.value.code, captured.out, captured.err)


def tried(report: dict) -> list[tuple[str, str]]:
    return [(a["converter"], a["outcome"]) for a in report["converters_tried"]]


def test_route_queue_tries_the_failed_hop_first():
    """Swaps for the hop that failed come first; after an unverified result, swaps for every hop, once each."""
    converters = registered_converters()
    names = lambda routes: [[c.name for c in r] for r in routes]  # noqa: E731
    planned = [Tf2OnnxConverter(), Onnx2TorchConverter()]
    queue = RouteQueue(planned, Format.KERAS, lambda c, f: hop_alternatives(c, f, converters)[1:])
    assert names([queue.next()]) == [["tf2onnx", "onnx2torch"]] and queue.next() is None
    queue.after_failure(planned, 1)
    second_hop = [c.name for c in hop_alternatives(Onnx2TorchConverter(), Format.ONNX, converters)[1:]]
    first_hop = [c.name for c in hop_alternatives(Tf2OnnxConverter(), Format.KERAS, converters)[1:]]
    assert first_hop  # tf2onnx has an alternative for Keras -> ONNX
    assert names(queue.pending) == [["tf2onnx", o] for o in second_hop] + [[o, "onnx2torch"] for o in first_hop]
    queue.pending.clear()
    queue.after_unverified(planned)
    assert queue.pending == []  # every single-hop swap was handed out already
    queue = RouteQueue(planned, Format.KERAS, lambda c, f: hop_alternatives(c, f, converters)[1:])
    queue.next()
    queue.after_unverified(planned)
    assert names(queue.pending) == [[o, "onnx2torch"] for o in first_hop] + [["tf2onnx", o] for o in second_hop]
    queue.after_failure(planned, 1)
    assert len(queue.pending) == len(first_hop) + len(second_hop)  # nothing queued twice


def test_crashing_converter_falls_back_to_another(small_keras_file: Path, tmp_path: Path, monkeypatch, capfd):
    other = alternative(Tf2OnnxConverter(), Format.KERAS)
    crash = fake_python(tmp_path, "crash", CRASH)
    result, report, out = run([str(small_keras_file), "--converter-env", f"tf2onnx={crash}"], tmp_path,
                              (monkeypatch, capfd))
    assert result.returncode == 0, result.stderr
    assert out.is_file() and report["verdict"]["verified"] and report["route"][0]["converter"] == other
    assert tried(report) == [("tf2onnx", "dropped"), (other, "kept")]
    assert report["converters_tried"][0]["why"].startswith("crash: crashed (killed by SIGSEGV)")
    tool = [f for f in report["findings"] if f["category"] == "TOOL"]
    assert tool[0]["evidence"]["log_tail"][-1] == "Fatal Python error: Segmentation fault"
    assert tool[0]["repair"] == {"action": "fallback_converter", "arguments": {"to": other}}


@pytest.mark.slow  # two real conversions, two validations
def test_unverified_conversion_falls_back_and_keeps_the_verified_one(small_keras_file: Path, tmp_path: Path):
    """tf2onnx 'succeeds' with a damaged model; without repair, the alternative's verified model is kept."""
    other = alternative(Tf2OnnxConverter(), Format.KERAS)
    damaging = fake_python(tmp_path, "damaging", DAMAGING)
    result, report, out = run([str(small_keras_file), "--no-repair", "--converter-env", f"tf2onnx={damaging}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert tried(report) == [("tf2onnx", "dropped"), (other, "kept")]
    assert report["converters_tried"][0]["why"].startswith("not verified (top-1 agreement ")
    assert report["converters_tried"][0]["why"].endswith(f"kept {other} instead")
    assert report["route"][0]["converter"] == other and report["metrics"]["top1_agreement"] == 1.0
    assert not [f for f in report["findings"] if f["category"] == "TOOL"]  # it did not fail: it was outvoted


@pytest.mark.slow  # the hang costs its whole time limit, which must leave room for the real exporter
def test_hanging_exporter_falls_back_on_the_torch_hop(small_pt2_file: Path, tmp_path: Path):
    from safeconvert.wrappers.base import ConversionOptions

    planned = next(c for c in registered_converters(ConversionOptions())
                   if Format.TORCH_EXPORT in c.sources and c.target is Format.ONNX)
    other = alternative(planned, Format.TORCH_EXPORT)
    hang = fake_python(tmp_path, "hang", HANG)
    result, report, out = run([str(small_pt2_file), "--hop-timeout", "40", "--converter-env", f"{planned.name}={hang}"],
                              tmp_path)
    assert result.returncode == 0, result.stderr
    assert tried(report) == [(planned.name, "dropped"), (other, "kept")]
    assert report["converters_tried"][0]["why"].startswith("hang: no result within 40 s")
    assert report["findings"][-1]["evidence"]["failure"] == "hang" and out.is_file()


def test_every_converter_of_the_hop_failing_is_exit_3(small_keras_file: Path, tmp_path: Path):
    """Keras -> TFLite: crash every converter for the hop; the TOOL findings name each one."""
    crash = fake_python(tmp_path, "crash", CRASH)
    names = [c.name for c in hop_alternatives(TfliteConverter(), Format.KERAS)]
    envs = [arg for name in names for arg in ("--converter-env", f"{name}={crash}")]
    result, report, out = run([str(small_keras_file), "--to", "tflite", *envs], tmp_path)
    assert result.returncode == 3 and not out.exists(), result.stderr
    assert "tflite-converter failed: crashed" in result.stderr
    assert tried(report) == [(name, "dropped") for name in names]
    assert [f["evidence"]["converter"] for f in report["findings"]] == names
    assert report["exit_code"] == 3 and report["output"] is None


ONNX_TF_PYTHON = Path(__file__).resolve().parents[1] / ".venv-onnx-tf" / "bin" / "python"


@pytest.mark.slow  # TensorFlow 2.15 starts in the other environment
@pytest.mark.skipif(not ONNX_TF_PYTHON.exists(), reason="no onnx-tf environment here (make onnx-tf-env builds one)")
def test_fallback_to_a_converter_in_its_own_environment(tmp_path: Path):
    """onnx2tf crashes; onnx-tf, in its own virtual environment, runs its standalone script and is kept."""
    import torch

    from safeconvert.models.small import INPUT_SIZE, torch_small_cnn

    onnx_file = tmp_path / "small.onnx"
    torch.onnx.export(torch_small_cnn().eval(), (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),), str(onnx_file),
                      dynamo=False, opset_version=13, input_names=["input"], output_names=["output"])
    crash = fake_python(tmp_path, "crash", CRASH)
    result, report, out = run([str(onnx_file), "--to", "savedmodel", "--converter-env", f"onnx2tf={crash}",
                               "--converter-env", f"onnx2tf-fused={crash}", "--converter-env", f"onnx-tf={ONNX_TF_PYTHON}"],
                              tmp_path)
    assert result.returncode == 0, result.stderr
    assert tried(report) == [("onnx2tf", "dropped"), ("onnx2tf-fused", "dropped"), ("onnx-tf", "kept")]
    assert report["route"][0]["interpreter"] == str(ONNX_TF_PYTHON) and report["route"][0]["tool_version"] == "1.10.0"
    assert (out / "saved_model.pb").is_file() and report["verdict"]["verified"]


def test_onnx2tf_failing_on_a_tf2onnx_graph_is_retried_on_its_simplified_copy(tmp_path: Path):
    """tf2onnx writes a depthwise BatchNorm as Mul/Add on the convolution's output, which onnx2tf fails on; the
    fused entry converts ONNX Runtime's simplification of the same graph, and it is verified against the ONNX."""
    from safeconvert.models.small import keras_small_mobile_block
    from safeconvert.pipeline import ConvertRequest, run_convert

    keras_file, onnx_file = tmp_path / "block.keras", tmp_path / "block.onnx"
    keras_small_mobile_block().save(keras_file)
    assert run_convert(ConvertRequest(keras_file, onnx_file, repair=False)).report.verified
    result, report, out = run([str(onnx_file), "--to", "tflite"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert tried(report) == [("onnx2tf-tflite", "dropped"), ("onnx2tf-fused-tflite", "kept")]
    assert "dw_bn" in report["converters_tried"][0]["why"]  # onnx2tf's own words name the BatchNorm node
    assert out.is_file() and report["verdict"]["verified"] and report["metrics"]["max_abs_diff"] < 1e-4
