"""Model files that run code when loaded: the hazard is real, and safeconvert refuses it by default.

Each hostile file here does something visible on load (overwrites or creates a file). The tests first show
that the framework's own loader really does it, then that safeconvert refuses the file with one line and
exit code 2 and that nothing happened.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .contract import RunResult

pytestmark = pytest.mark.timeout(300)


def run_main(argv: list[str], capfd) -> RunResult:
    from safeconvert.cli import main

    capfd.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(argv)
    captured = capfd.readouterr()
    return RunResult(ended.value.code, captured.out, captured.err)


def assert_refused(result: RunResult, fragment: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and fragment in lines[0], result.stderr


# --- TorchScript -------------------------------------------------------------------------------------------

FILE_WRITER = '''
import sys
from typing import List

import torch


class Overwrite(torch.nn.Module):
    """Its __setstate__ runs inside torch.jit.load and maps a file shared, then fills it."""

    def __init__(self, victim: str):
        super().__init__()
        self.victim = victim

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self) -> List[str]:
        return [self.victim]

    @torch.jit.export
    def __setstate__(self, state: List[str]) -> None:
        self.victim = state[0]
        self.training = False
        written = torch.from_file(self.victim, True, 5, dtype=torch.uint8)
        written.fill_(88)
        print(int(written.sum()))  # used, so the TorchScript optimiser keeps the write


torch.jit.save(torch.jit.script(Overwrite(sys.argv[1])), sys.argv[2])
'''


@pytest.fixture(scope="module")
def file_writing_torchscript(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("torchscript")
    victim, archive = directory / "victim.txt", directory / "overwrite.pt"
    victim.write_text("hello-world")
    script = directory / "make_archive.py"  # torch.jit.script reads the class's source from a file
    script.write_text(FILE_WRITER)
    subprocess.run([sys.executable, str(script), str(victim), str(archive)], check=True, capture_output=True, timeout=240)
    return victim, archive


def test_torch_jit_load_really_runs_code_from_the_archive(file_writing_torchscript):
    victim, archive = file_writing_torchscript
    victim.write_text("hello-world")
    subprocess.run([sys.executable, "-c", f"import torch; torch.jit.load({str(archive)!r})"], check=True,
                   capture_output=True, timeout=240)
    assert victim.read_text() == "XXXXX-world"


def test_torchscript_is_refused_without_trust(file_writing_torchscript, base_models, small_calib, capfd):
    victim, archive = file_writing_torchscript
    victim.write_text("hello-world")
    for argv in (["check", str(base_models["torch_onnx"]), str(archive)],
                 ["convert", str(archive), "-o", str(archive.with_name("out.onnx"))]):
        assert_refused(run_main([*argv, "--calib", str(small_calib)], capfd), "--trust-model-code")
    assert victim.read_text() == "hello-world"
    assert not archive.with_name("out.onnx").exists()


def test_trusted_torchscript_is_loaded_and_validated(base_models, small_calib, capfd):
    result = run_main(["check", str(base_models["torch_onnx"]), str(base_models["pt"]), "--calib", str(small_calib),
                       "--trust-model-code"], capfd)
    assert result.code == 0, result.stderr


# --- torch.export (.pt2) -----------------------------------------------------------------------------------

def rewrite_pt2(source: Path, target: Path, change, add: dict[str, bytes] | None = None) -> Path:
    """Copy a .pt2 archive, passing models/model.json through `change(program) -> program`."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        root = original.namelist()[0].split("/", 1)[0]
        for info in original.infolist():
            data = original.read(info.filename)
            if info.filename.endswith("models/model.json"):
                data = json.dumps(change(json.loads(data))).encode()
            copy.writestr(info, data)
        for name, data in (add or {}).items():
            copy.writestr(f"{root}/{name}", data)
    return target


def eval_payload(marker: Path):
    """A change that makes the first symbolic shape expression write `marker` when sympy evaluates it."""
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"

    def change(program: dict) -> dict:
        text = json.dumps(program)
        start = text.index('"expr_str": "') + len('"expr_str": "')
        return json.loads(text[:start] + f"({code}) and " + text[start:])

    return change


def test_torch_export_load_really_evals_shape_expressions(small_pt2_file: Path, tmp_path: Path):
    marker = tmp_path / "ran.txt"
    hostile = rewrite_pt2(small_pt2_file, tmp_path / "eval.pt2", eval_payload(marker))
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(hostile)!r})"], capture_output=True, timeout=240)
    assert marker.exists()


def _set_target(program: dict, target: str) -> dict:
    program["graph_module"]["graph"]["nodes"][0]["target"] = target
    return program


def _pickled_sample_inputs() -> bytes:
    """A torch.save archive whose pickle names a class outside torch's safe list (weights_only refuses it)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(((zipfile.ZipInfo("x"),), {}), buffer)
    return buffer.getvalue()


HOSTILE_PT2 = {
    "file_operator": (lambda p: _set_target(p, "torch.ops.aten.from_file.default"), None, "reads or writes files"),
    "python_target": (lambda p: _set_target(p, "torch.os.system"), None, "outside the ATen/prims operators"),
    "guard_code": (lambda p: {**p, "guards_code": ["__import__('os').getpid() > 0"]}, None, "guard code"),
    "range_symbol": (lambda p: {**p, "range_constraints": {"u999999999999": {"min_val": 1, "max_val": 2}}}, None,
                     "shape constraint"),
    "compiled_kernels": (lambda p: p, {"data/aotinductor/model/model.so": b"\x7fELF"}, "data/aotinductor"),
    "power_tower": (lambda p: json.loads(json.dumps(p).replace("Symbol('s", "2**2**2**40*Symbol('s", 1)), None, "power"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PT2))
def test_hostile_pt2_is_refused_without_trust(name: str, small_pt2_file: Path, tmp_path: Path, small_calib, capfd):
    change, extra, fragment = HOSTILE_PT2[name]
    hostile = rewrite_pt2(small_pt2_file, tmp_path / f"{name}.pt2", change, extra)
    result = run_main(["convert", str(hostile), "-o", str(tmp_path / "out.onnx"), "--calib", str(small_calib)], capfd)
    assert_refused(result, fragment)
    assert "--trust-model-code" in result.stderr and not (tmp_path / "out.onnx").exists()


def test_pt2_eval_payload_is_refused_and_never_runs(small_pt2_file: Path, tmp_path: Path, small_calib, capfd):
    marker = tmp_path / "ran.txt"
    hostile = rewrite_pt2(small_pt2_file, tmp_path / "eval.pt2", eval_payload(marker))
    assert_refused(run_main(["convert", str(hostile), "-o", str(tmp_path / "o.onnx"), "--calib", str(small_calib)], capfd),
                   "sympy would eval it")
    assert not marker.exists()


def test_pt2_sample_inputs_needing_the_unsafe_unpickler_are_refused(small_pt2_file: Path, tmp_path: Path):
    from safeconvert.safety.torch_export_audit import NeedsTrust, audit_torch_export

    hostile = tmp_path / "pickles.pt2"
    with zipfile.ZipFile(small_pt2_file) as original, zipfile.ZipFile(hostile, "w") as copy:
        for info in original.infolist():
            data = original.read(info.filename)
            copy.writestr(info, _pickled_sample_inputs() if "sample_inputs" in info.filename else data)
    with pytest.raises(NeedsTrust, match="unsafe unpickler"):
        audit_torch_export(hostile)


def test_plain_pt2_passes_the_audit(small_pt2_file: Path):
    from safeconvert.safety.torch_export_audit import audit_torch_export

    audit_torch_export(small_pt2_file)


# --- Keras --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_with_code(tmp_path_factory) -> dict[str, Path]:
    from safeconvert.runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import keras
    from keras import layers

    directory = tmp_path_factory.mktemp("keras_code")
    inputs = keras.Input((32, 32, 3))
    lambda_model = keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(layers.Lambda(lambda t: t * 2.0)(inputs))))

    @keras.saving.register_keras_serializable(package="untrusted")
    class Doubler(layers.Layer):
        def call(self, tensor):
            return tensor * 2.0

    custom_model = keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(Doubler()(inputs))))
    files = {"lambda.keras": directory / "lambda.keras", "lambda.h5": directory / "lambda.h5",
             "custom.keras": directory / "custom.keras"}
    lambda_model.save(files["lambda.keras"])
    lambda_model.save(files["lambda.h5"])
    custom_model.save(files["custom.keras"])
    keras.saving.get_custom_objects().pop("untrusted>Doubler")  # unknown to the loader, as for any user
    return files


@pytest.mark.parametrize("name,fragment", [("lambda.keras", "Lambda layer"), ("lambda.h5", "Lambda layer"),
                                           ("custom.keras", "not part of Keras")])
def test_keras_code_is_refused_in_one_line(name: str, fragment: str, keras_with_code, tmp_path: Path, small_calib, capfd):
    result = run_main(["convert", str(keras_with_code[name]), "-o", str(tmp_path / "o.onnx"), "--calib", str(small_calib)], capfd)
    assert_refused(result, fragment)


# --- SavedModel --------------------------------------------------------------------------------------------

def test_saved_model_that_writes_files_is_refused(tmp_path: Path, small_calib, capfd):
    from safeconvert.runners.tf_runner import quiet_tensorflow

    tf = quiet_tensorflow()
    marker = tmp_path / "written.txt"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def serve(self, images):
            tf.io.write_file(str(marker), tf.strings.as_string(tf.reduce_sum(images)))
            return {"logits": tf.reduce_mean(images, axis=[1, 2])}

    module = Writer()
    tf.saved_model.save(module, str(tmp_path / "writer"), signatures={"serving_default": module.serve})
    result = run_main(["convert", str(tmp_path / "writer"), "-o", str(tmp_path / "o.onnx"), "--calib", str(small_calib)], capfd)
    assert_refused(result, "WriteFile")
    assert not marker.exists()


def test_keras_exported_saved_model_passes_the_audit(small_keras_file: Path, tmp_path: Path):
    from safeconvert.runners.tf_runner import load_keras_model
    from safeconvert.safety.saved_model_audit import audit_saved_model

    load_keras_model(small_keras_file).export(str(tmp_path / "exported"), verbose=False)
    audit_saved_model(tmp_path / "exported")


def test_sample_inputs_pickle_is_really_unsafe_for_weights_only():
    """The hostile sample-inputs payload above is one torch's safe unpickler refuses (so the audit must too)."""
    import io

    import torch

    with pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(_pickled_sample_inputs()), weights_only=True)


def test_shape_expressions_torch_writes_for_unbacked_sizes_pass_the_audit():
    """onnx2torch-export's MobileNetV2 .pt2 guards its unbacked sizes with sympy's Add; code still does not pass."""
    from safeconvert.safety.torch_export_audit import NeedsTrust, _check_expression

    _check_expression("GreaterThan(Add(Symbol('u131', integer=True), Symbol('u135', integer=True)), 0)")
    _check_expression("Eq(Mul(2, Symbol('s0', integer=True, positive=True)), 4)")
    for hostile in ("Add(__import__('os').system('true'), 1)", "Mul(open('/etc/passwd'), 1)", "Add(lambda: 1, 2)"):
        with pytest.raises(NeedsTrust):
            _check_expression(hostile)
