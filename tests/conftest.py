"""Shared fixtures: model files built once per test session (small seeded CNNs and the real MobileNetV2)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Runs (and the safeconvert processes they start) keep their float-reference cache out of the user's own.
_CACHE = tempfile.mkdtemp(prefix="safeconvert-test-cache-")
os.environ["SAFECONVERT_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture(scope="session")
def small_keras_file(tmp_path_factory) -> Path:
    from safeconvert.models.small import keras_small_cnn

    path = tmp_path_factory.mktemp("small") / "small_cnn.keras"
    keras_small_cnn().save(path)
    return path


@pytest.fixture(scope="session")
def small_pt2_file(tmp_path_factory) -> Path:
    from safeconvert.models.files import save_torch_export
    from safeconvert.models.small import INPUT_SIZE, torch_small_cnn

    path = tmp_path_factory.mktemp("small") / "small_cnn.pt2"
    return save_torch_export(torch_small_cnn(), path, (1, 3, INPUT_SIZE, INPUT_SIZE))


@pytest.fixture(scope="session")
def mobilenet_files(tmp_path_factory) -> dict[str, Path]:
    """The real MobileNetV2 (torchvision ImageNet weights) as .keras and .pt2."""
    from safeconvert.models.files import mobilenet_v2_files

    return mobilenet_v2_files(tmp_path_factory.mktemp("mobilenet"))


@pytest.fixture
def cli(capsys):
    """The `safeconvert` entry point in this process (TensorFlow is imported once per session, not per call)."""
    from safeconvert.cli import main

    def invoke(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, exited.value.code, captured.out, captured.err)

    return invoke
