"""Loading untrusted models: zip archives whose readers disagree, TF1 SavedModels whose load runs file ops.

Each test builds a hostile file, shows that the framework's own loader really acts on it, then that
safeconvert refuses it with one line and exit code 2 before any framework has read it.

The earlier hostile inputs stay tested where they were first written:
* Lambda layers in .keras and .h5: tests/robustness/test_trust.py::test_keras_code_is_refused_in_one_line
* pickled .pt: tests/test_formats.py::test_pickled_checkpoints_and_plain_directories_are_refused (a torch.save
  checkpoint) and tests/robustness/test_trust.py::test_torchscript_is_refused_without_trust (TorchScript)
* WriteFile in a SavedModel: tests/robustness/test_trust.py::test_saved_model_that_writes_files_is_refused
* sympy payload in .pt2: tests/robustness/test_trust.py::test_pt2_eval_payload_is_refused_and_never_runs
* 20000x20000 PNG, object .npy, symlink loops in a calibration set: tests/security/test_limits.py; a model
  path that is a symlink loop and a 60000x60000 PNG header: tests/robustness/cases.py (the corpus)
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from .cli_runs import assert_refused, run_main, two_photo_calibration

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    return two_photo_calibration(tmp_path_factory.mktemp("calib2"))


# --- zip archives (.pt2, .keras) ---------------------------------------------------------------------------

def _eval_payload(program: bytes, marker: Path) -> bytes:
    """The program with a shape expression that writes `marker` when sympy evaluates it."""
    text = program.decode()
    start = text.index('"expr_str": "') + len('"expr_str": "')
    code = f"(__import__('pathlib').Path({str(marker)!r}).write_text('ran')) and "
    return (text[:start] + code + text[start:]).encode()


def _copy_with_extra(source: Path, target: Path, extra: dict[str, bytes], before: str | None = None) -> Path:
    """Copy a zip archive, writing `extra` members (names as stored) before member `before` (else at the end)."""
    import warnings

    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, which is the point
        for info in original.infolist():
            if info.filename == before:
                for name, data in extra.items():
                    copy.writestr(name, data)
            copy.writestr(info, original.read(info.filename))
        if before is None:
            for name, data in extra.items():
                copy.writestr(name, data)
    return target


def _torch_reads(path: Path, member: str) -> bytes:
    import torch

    return torch._C.PyTorchFileReader(str(path)).get_record(member)


@pytest.fixture(scope="module")
def duplicated_program(small_pt2_file: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A .pt2 holding models/model.json twice: a payload torch loads, and the original copy zipfile reads."""
    directory = tmp_path_factory.mktemp("duplicated")
    marker = directory / "ran.txt"
    with zipfile.ZipFile(small_pt2_file) as archive:
        names = archive.namelist()
        model_json = next(n for n in names if n.endswith("models/model.json"))
        original = archive.read(model_json)
    payload = _eval_payload(original, marker)
    hostile = directory / "twice.pt2"
    for before in names:  # torch's reader picks the first or the last copy depending on where they sit
        _copy_with_extra(small_pt2_file, hostile, {model_json: payload}, before=before)
        with zipfile.ZipFile(hostile) as archive:
            assert archive.read(model_json) == original  # Python's zipfile reads the last copy
        if _torch_reads(hostile, "models/model.json") == payload:
            return hostile, marker
    pytest.fail("no layout found where torch reads the first copy")


def test_torch_really_loads_the_first_copy_of_a_duplicated_program(duplicated_program):
    import subprocess
    import sys

    hostile, marker = duplicated_program
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(hostile)!r})"], capture_output=True,
                   timeout=240)
    assert marker.exists()
    marker.unlink()


def test_pt2_with_a_duplicated_program_is_refused_and_never_runs(duplicated_program, small_pt2_file, calib, capfd):
    hostile, marker = duplicated_program
    assert_refused(run_main(["check", str(hostile), str(small_pt2_file), "--calib", str(calib)], capfd), "stored twice")
    assert not marker.exists()


def test_the_pt2_audit_refuses_duplicates_itself(duplicated_program):
    from safeconvert.errors import BadInputError
    from safeconvert.safety.torch_export_audit import audit_torch_export

    with pytest.raises(BadInputError, match="stored twice"):
        audit_torch_export(duplicated_program[0])


ODD_NAMES = {
    "case": ("{root}/models/MODEL.json", "only in case"),
    "absolute": ("/etc/{root}", "absolute path"),
    "dotdot": ("{root}/../escape", "'..'"),
    "backslash": ("{root}\\models\\x.json", "backslash"),
    "nul": ("{root}/extra/x\x01.json", "NUL"),  # zipfile cuts names at NUL when writing: patched in below
}


@pytest.mark.parametrize("kind", sorted(ODD_NAMES))
def test_pt2_with_an_odd_member_name_is_refused(kind: str, small_pt2_file: Path, tmp_path: Path):
    from safeconvert.errors import BadInputError
    from safeconvert.formats import detect_format

    with zipfile.ZipFile(small_pt2_file) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
    name, fragment = ODD_NAMES[kind]
    hostile = _copy_with_extra(small_pt2_file, tmp_path / f"{kind}.pt2", {name.format(root=root): b"{}"})
    hostile.write_bytes(hostile.read_bytes().replace(b"/x\x01.json", b"/x\x00.json"))
    with pytest.raises(BadInputError, match=fragment):
        detect_format(hostile)


def test_keras_file_with_a_duplicated_config_is_refused(small_keras_file: Path, tmp_path: Path, calib, capfd):
    """Keras reads the last copy of config.json; a file whose copies differ is refused before Keras opens it."""
    with zipfile.ZipFile(small_keras_file) as archive:
        config = json.loads(archive.read("config.json"))
    config["config"]["name"] = "other"
    hostile = _copy_with_extra(small_keras_file, tmp_path / "twice.keras", {"config.json": json.dumps(config).encode()})
    result = run_main(["check", str(hostile), str(small_keras_file), "--calib", str(calib)], capfd)
    assert_refused(result, "stored twice")


# --- TF1 SavedModels ----------------------------------------------------------------------------------------

def _tf1_saved_model(directory: Path, hostile_prefix: Path | None = None) -> Path:
    """A TF1 SavedModel (tf.compat.v1 builder); with `hostile_prefix`, its restore op first runs a SaveV2 there."""
    from safeconvert.runners.tf_runner import quiet_tensorflow

    tf = quiet_tensorflow()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, 8, 8, 3], name="images")
        weights = v1.get_variable("weights", initializer=tf.ones([3, 4]))
        logits = tf.matmul(tf.reduce_mean(images, axis=[1, 2]), weights, name="logits")
        saver = v1.train.Saver()
        if hostile_prefix is not None:
            write = tf.raw_ops.SaveV2(prefix=str(hostile_prefix), tensor_names=["w"], shape_and_slices=[""],
                                      tensors=[weights])
            with tf.control_dependencies([write, graph.get_operation_by_name(saver.saver_def.restore_op_name)]):
                restore = tf.no_op(name="restore_and_write")
            saver.saver_def.restore_op_name = restore.name
        signature = v1.saved_model.predict_signature_def({"images": images}, {"logits": logits})
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(directory))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature},
                                                 saver=saver)
            builder.save()
    return directory


def _written(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(prefix.name + "*"))


@pytest.fixture(scope="module")
def restore_writer(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tf1_restore")
    prefix = directory / "written" / "stolen"
    return _tf1_saved_model(directory / "model", prefix), prefix


def test_tf1_restore_op_really_writes_files_when_loaded(restore_writer):
    from safeconvert.runners.tf_runner import quiet_tensorflow

    model, prefix = restore_writer
    quiet_tensorflow().saved_model.load(str(model))
    assert _written(prefix)
    shutil.rmtree(prefix.parent)


def test_tf1_restore_path_writing_files_is_refused(restore_writer, calib, capfd):
    model, prefix = restore_writer
    result = run_main(["check", str(model), str(model), "--calib", str(calib)], capfd)
    assert_refused(result, "SaveV2")
    assert "--trust-model-code" in result.stderr and not _written(prefix)


def test_plain_tf1_saved_model_passes_the_audit(tmp_path: Path):
    """The checkpoint read of a TF1 saver (RestoreV2 from the fed filename) is what loading needs: allowed."""
    from safeconvert.safety.saved_model_audit import audit_saved_model

    audit_saved_model(_tf1_saved_model(tmp_path / "plain"))


def test_text_format_saved_model_is_refused_in_one_line(tmp_path: Path, calib, capfd):
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    model = _tf1_saved_model(tmp_path / "text")
    proto = saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes())
    (model / "saved_model.pbtxt").write_text(text_format.MessageToString(proto))
    (model / "saved_model.pb").unlink()
    for trust in ([], ["--trust-model-code"]):
        result = run_main(["check", str(model), str(model), "--calib", str(calib), *trust], capfd)
        assert_refused(result, "saved_model.pbtxt")
