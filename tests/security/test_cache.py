"""Caches and the up-to-date rule see every byte that defines a model, and nothing damaged or foreign.

Each test changes only what a narrower key would miss (an ONNX model's external data, the files behind a
SavedModel's symlinked `variables/`, the environment, a cache entry's payload, the file at OUT) and shows
that safeconvert notices: it runs again instead of answering from what it kept.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from safeconvert.user_cache import ENV_VAR

pytestmark = pytest.mark.timeout(300)


def tiny_onnx(path: Path, seed: int = 0, external: bool = True) -> Path:
    """A seeded 32x32 RGB classifier (Conv, ReLU, pooling, Gemm: 10 logits), its weights in `<name>.data`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {"w": rng.standard_normal((8, 3, 3, 3)) * 0.5, "b": rng.standard_normal(8) * 0.1,
               "fc": rng.standard_normal((8, 10)), "fb": rng.standard_normal(10) * 0.1}
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc", "fb"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=0)
    return path


def onnx_logits(path: Path, seed: int = 3) -> np.ndarray:
    import onnxruntime as ort

    batch = np.random.default_rng(seed).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capfd):
    """`safeconvert ...` in this process, each run starting as a new process would (no in-memory outputs)."""
    from safeconvert.cli import main
    from safeconvert.validators import validate as validate_module

    def invoke(*args) -> Run:
        validate_module._SOURCE_OUTPUTS.clear()
        capfd.readouterr()
        with pytest.raises(SystemExit) as ended:
            main([str(a) for a in args])
        captured = capfd.readouterr()
        return Run(ended.value.code, captured.out, captured.err)

    return invoke


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(ENV_VAR, str(root))
    return root


def test_changed_external_data_is_not_checked_from_cached_outputs(tmp_path, cache, cli):
    source, target = tiny_onnx(tmp_path / "ext.onnx"), tiny_onnx(tmp_path / "target.onnx", external=False)
    assert cli("check", source, target, "--json").code == 0
    assert any((cache / "source-outputs").iterdir())

    tiny_onnx(tmp_path / "other.onnx", seed=1)
    shutil.copyfile(tmp_path / "other.onnx.data", tmp_path / "ext.onnx.data")  # only the weights change
    again = cli("check", source, target, "--json")
    assert again.code == 1, again.stdout[-400:] + again.stderr
    assert '"source_outputs": "cached' not in again.stdout


def _saved_model(model, folder: Path) -> Path:
    model.export(str(folder), verbose=False)
    return folder


@pytest.fixture(scope="module")
def two_saved_models(tmp_path_factory) -> tuple[Path, Path]:
    """The small Keras CNN exported as a SavedModel twice: the same graph, its classifier's weights negated."""
    from safeconvert.models.small import keras_small_cnn

    folder = tmp_path_factory.mktemp("savedmodels")
    model = keras_small_cnn(seed=0)
    first = _saved_model(model, folder / "seed0")
    head = model.get_layer("logits")
    head.set_weights([-w for w in head.get_weights()])
    return first, _saved_model(model, folder / "negated")


def _with_linked_variables(model: Path, at: Path, store: Path) -> Path:
    """A copy of `model` whose variables/ is a symbolic link to `store` (filled with the model's variables)."""
    shutil.copytree(model, at, ignore=shutil.ignore_patterns("variables"))
    shutil.copytree(model / "variables", store)
    (at / "variables").symlink_to(store, target_is_directory=True)
    return at


def test_changed_files_behind_a_symlinked_variables_folder_are_not_checked_from_cache(two_saved_models, tmp_path,
                                                                                        cache, cli):
    """A link that stays inside the model's folder is followed, not refused (the guard for the refusal below)."""
    seed0, seed1 = two_saved_models
    source = _with_linked_variables(seed0, tmp_path / "source", tmp_path / "source" / "store")
    assert cli("check", source, seed0, "--json").code == 0

    for name in os.listdir(seed1 / "variables"):  # the weights change; no file the old walk looked at does
        shutil.copyfile(seed1 / "variables" / name, source / "store" / name)
    again = cli("check", source, seed0, "--json")
    assert again.code == 1, again.stdout[-400:] + again.stderr
    assert '"source_outputs": "cached' not in again.stdout


@pytest.mark.parametrize("cache_dir", ["on", "off"])
def test_a_symlink_leaving_the_model_folder_is_refused(two_saved_models, tmp_path, cache, cli, monkeypatch, cache_dir):
    if cache_dir == "off":  # refused for what it is, not because a cache key was computed
        monkeypatch.setenv(ENV_VAR, "off")
    seed0, _ = two_saved_models
    source = _with_linked_variables(seed0, tmp_path / "source", tmp_path / "elsewhere")
    refused = cli("check", source, seed0)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.code == 2 and len(lines) == 1 and "outside the model's folder" in lines[0], refused.stderr


def test_symlink_loops_in_a_savedmodel_are_refused(tmp_path):
    from safeconvert.errors import BadInputError
    from safeconvert.formats import detect_format

    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "again").symlink_to(model, target_is_directory=True)
    with pytest.raises(BadInputError, match="loops"):
        detect_format(model)


def test_external_data_outside_the_model_folder_is_refused(tmp_path, cache, cli):
    import onnx

    inside = tmp_path / "model"
    inside.mkdir()
    source = tiny_onnx(tmp_path / "ext.onnx")
    model = onnx.load(str(source), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../ext.onnx.data"
    onnx.save_model(model, str(inside / "escaping.onnx"))
    refused = cli("check", inside / "escaping.onnx", source)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.code == 2 and len(lines) == 1 and "outside the model's folder" in lines[0], refused.stderr


@pytest.fixture
def converted(tmp_path, cache) -> tuple[Path, Path]:
    """ext.onnx (with ext.onnx.data) converted and verified to out.pt, its sidecar beside it."""
    from safeconvert.pipeline import ConvertRequest
    from safeconvert.uptodate import convert_if_needed, sidecar_path

    source, out = tiny_onnx(tmp_path / "ext.onnx"), tmp_path / "out.pt"
    first = convert_if_needed(ConvertRequest(source, out, repair=False))
    assert first.report.verified and sidecar_path(out).is_file()
    return source, out


def _later(path: Path, than: Path) -> None:
    stamp = than.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(stamp, stamp))


def test_convert_runs_again_after_the_external_data_changed(converted, tmp_path):
    from safeconvert.pipeline import ConvertRequest
    from safeconvert.uptodate import convert_if_needed

    source, out = converted
    assert convert_if_needed(ConvertRequest(source, out, repair=False)).up_to_date  # unchanged: nothing to do
    tiny_onnx(tmp_path / "other.onnx", seed=1)
    shutil.copyfile(tmp_path / "other.onnx.data", tmp_path / "ext.onnx.data")
    _later(tmp_path / "ext.onnx.data", out)
    with pytest.raises(Exception, match="--force"):  # OUT is not up to date, and it exists
        convert_if_needed(ConvertRequest(source, out, repair=False))
    forced = convert_if_needed(ConvertRequest(source, out, repair=False, force=True))
    assert not forced.up_to_date and forced.report.output == str(out)


def test_force_converts_again_even_when_up_to_date(converted):
    from safeconvert.pipeline import ConvertRequest
    from safeconvert.uptodate import convert_if_needed

    source, out = converted
    before = out.stat().st_mtime_ns
    forced = convert_if_needed(ConvertRequest(source, out, repair=False, force=True))
    assert not forced.up_to_date and forced.report.verified and out.stat().st_mtime_ns != before


def test_the_sidecar_does_not_vouch_for_a_file_another_writer_put_at_out(converted, monkeypatch):
    from safeconvert import uptodate
    from safeconvert.pipeline import ConvertRequest

    source, out = converted
    foreign = b"not the verified model" * 100

    real_run = uptodate.run_convert

    def run_then_replaced(request):  # the real run; then another writer replaces OUT before the sidecar is written
        outcome = real_run(request)
        out.write_bytes(foreign)
        return outcome

    monkeypatch.setattr(uptodate, "run_convert", run_then_replaced)
    uptodate.convert_if_needed(ConvertRequest(source, out, repair=False, force=True))
    assert out.read_bytes() == foreign
    assert uptodate.previous_report(ConvertRequest(source, out, repair=False)) is None


def test_an_up_to_date_out_is_hashed_again_with_its_external_data(tmp_path, cache):
    from safeconvert.atomic import place_model, scratch_dir
    from safeconvert.model_files import model_digest

    out = tmp_path / "placed.onnx"
    with scratch_dir(out) as work:
        written = place_model(tiny_onnx(work / "built.onnx"), out, force=False, work=work)
    assert model_digest(out) == written
    data = next(tmp_path.glob("placed.onnx.*.data"))
    data.write_bytes(data.read_bytes()[:-4] + b"\0\0\0\1")
    assert model_digest(out) != written


def test_a_cache_entry_with_a_damaged_payload_is_a_miss(tmp_path, cache, cli):
    source, target = tiny_onnx(tmp_path / "src.onnx", external=False), tiny_onnx(tmp_path / "target.onnx", external=False)
    first = cli("check", source, target, "--json")
    assert first.code == 0
    (entry,) = (cache / "source-outputs").iterdir()
    damaged = bytearray(entry.read_bytes())
    damaged[-8:] = np.float32([1e6, -1e6]).tobytes()  # still a valid .npy: only its values are wrong
    entry.write_bytes(bytes(damaged))

    again = cli("check", source, target, "--json")
    assert again.code == 0, again.stdout[-400:] + again.stderr
    assert '"source_outputs": "cached' not in again.stdout


def test_cache_entries_follow_the_numerics_switches_and_safeconvert_version(cache, monkeypatch):
    from safeconvert import user_cache

    folder = user_cache.CacheFolder("probe", ".bin", max_entries=4)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    folder.store("key", b"computed with oneDNN off")
    assert folder.load("key") == b"computed with oneDNN off"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    assert folder.load("key") is None
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.setattr(user_cache, "__version__", "999.0")
    assert folder.load("key") is None


def test_the_up_to_date_fingerprint_follows_the_numerics_switches(converted, monkeypatch):
    from safeconvert.pipeline import ConvertRequest
    from safeconvert.uptodate import previous_report

    source, out = converted
    assert previous_report(ConvertRequest(source, out, repair=False)) is not None
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1" else "1")
    assert previous_report(ConvertRequest(source, out, repair=False)) is None
