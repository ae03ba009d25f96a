"""A representative handful of hostile inputs through the real `safeconvert` process.

In-process runs cannot see what only a process shows: a native crash (the whole test run would die), the
exit status the shell gets, or chatter printed by native code. These cases run the console entry point.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .contract import RunResult, assert_contract
from .mutations import mutate_bytes, mutate_zip

pytestmark = pytest.mark.timeout(300)


def run_cli(*args: str) -> RunResult:
    result = subprocess.run([sys.executable, "-m", "safeconvert", *args], capture_output=True, text=True, timeout=280)
    return RunResult(result.returncode, result.stdout, result.stderr)


def segfaulting_tflite(base: Path) -> bytes:
    """The small model with its second convolution's weight and bias inputs set to -1 ("omitted").

    The flatbuffer stays well-formed (-1 is how TFLite marks an omitted optional input), and LiteRT 2.3's
    allocate_tensors dereferences the missing filter: a fuzzed file found it, this rebuilds it on purpose.
    """
    import tflite

    data = bytearray(base.read_bytes())
    model = tflite.Model.GetRootAs(data, 0)
    subgraph = model.Subgraphs(0)
    convolutions = [subgraph.Operators(i) for i in range(subgraph.OperatorsLength())
                    if model.OperatorCodes(subgraph.Operators(i).OpcodeIndex()).BuiltinCode() == tflite.BuiltinOperator.CONV_2D]
    operator = convolutions[1]
    start = operator._tab.Vector(operator._tab.Offset(6))  # field 1 of Operator: inputs, a vector of int32
    struct.pack_into("<2i", data, start + 4, -1, -1)
    return bytes(data)


def test_a_model_that_crashes_litert_costs_one_line(base_models, small_calib, tmp_path: Path):
    crashing = tmp_path / "crash.tflite"
    crashing.write_bytes(segfaulting_tflite(base_models["tflite"]))
    probe = "import sys; from safeconvert.safety.probe_child import main; sys.exit(main(['tflite', sys.argv[1]]))"
    direct = subprocess.run([sys.executable, "-c", probe, str(crashing)], capture_output=True, timeout=120)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    result = run_cli("convert", str(crashing), "-o", str(out), "--calib", str(small_calib))
    assert_contract(result, out, [out.parent])
    assert result.code == 2
    if direct.returncode < 0:  # the usual case here: LiteRT really dies on this file
        assert "crashes LiteRT" in result.stderr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_damaged_torchscript_loaded_on_trust(base_models, small_calib, tmp_path: Path, seed: int):
    """With --trust-model-code the damaged archive reaches torch.jit.load itself (a native parser)."""
    kinds = ("member_flip", "member_truncate", "member_json")
    mutant = tmp_path / "mutant.pt"
    mutant.write_bytes(mutate_zip(base_models["pt"].read_bytes(), kinds[seed], seed))
    result = run_cli("check", str(mutant), str(base_models["torch_onnx"]), "--calib", str(small_calib), "--trust-model-code")
    assert_contract(result, None, [tmp_path])


def test_truncated_keras_through_the_console_script(base_models, tmp_path: Path):
    mutant = tmp_path / "model.keras"
    mutant.write_bytes(mutate_bytes(base_models["keras"].read_bytes(), "truncate", 3))
    out = tmp_path / "out.onnx"
    result = run_cli("convert", str(mutant), "-o", str(out))
    assert_contract(result, out, [tmp_path])
    assert result.code == 2


def test_corrupt_photo_in_the_calibration_set(base_models, small_calib, tmp_path: Path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for photo in sorted(small_calib.iterdir())[:2]:
        (calib / photo.name).write_bytes(photo.read_bytes())
    (calib / "zz.jpg").write_bytes(mutate_bytes((sorted(small_calib.iterdir())[2]).read_bytes(), "truncate_head", 1))
    out = tmp_path / "out.pt"
    result = run_cli("convert", str(base_models["onnx"]), "-o", str(out), "--calib", str(calib))
    assert_contract(result, out, [tmp_path])
    assert result.code == 2 and "zz.jpg" in result.stderr
