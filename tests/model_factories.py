"""Model builders and output comparison for the wrapper tests (a plain module, imported by test files).

Tiny seeded CNNs make the fast tests; the real MobileNetV2 comes from safeconvert.models.mobilenet_v2.
Every builder writes a file in the framework's usual form, independently of the wrappers under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from safeconvert.models.files import save_torch_export  # noqa: F401  (re-exported for the tests)
from safeconvert.models.small import CLASSES as TINY_CLASSES  # noqa: F401
from safeconvert.models.small import INPUT_SIZE as TINY_SIZE
from safeconvert.models.small import keras_small_cnn as tiny_keras_cnn  # noqa: F401
from safeconvert.models.small import torch_small_cnn as tiny_torch_cnn  # noqa: F401


def save_torchscript(module, path: Path, input_shape: tuple[int | None, ...], with_spec: bool = True) -> Path:
    """torch.jit.trace the module and save it, with safeconvert's input-spec extra file when asked."""
    import torch

    from safeconvert.runners.torch_runner import SPEC_EXTRA_FILE

    example = torch.randn(2 if input_shape[0] is None else input_shape[0], *input_shape[1:])
    traced = torch.jit.trace(module.eval(), example)
    spec = {"name": "input", "shape": list(input_shape), "layout": "NCHW", "dtype": "float32"}
    extra = {SPEC_EXTRA_FILE: json.dumps(spec)} if with_spec else {}
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def keras_to_tflite(keras_path: Path, path: Path) -> Path:
    """A float .tflite made with TensorFlow directly (not through the wrapper under test)."""
    import contextlib
    import io

    from safeconvert.runners.tf_runner import load_keras_model, quiet_tensorflow

    tf = quiet_tensorflow()
    with contextlib.redirect_stdout(io.StringIO()):
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(load_keras_model(keras_path)).convert())
    return path


def random_images(count: int, height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Seeded NHWC float32 inputs."""
    return np.random.default_rng(seed).standard_normal((count, height, width, channels)).astype(np.float32)


def in_layout(batch_nhwc: np.ndarray, layout: str) -> np.ndarray:
    return batch_nhwc if layout == "NHWC" else np.ascontiguousarray(batch_nhwc.transpose(0, 3, 1, 2))


def compare_outputs(source: Path, converted: Path, count: int = 4, seed: int = 0) -> tuple[float, float]:
    """Run the same seeded images through both models (each in its own layout).

    Returns (max abs difference, source output range).
    """
    from safeconvert.runners import load_runner

    src_runner, out_runner = load_runner(Path(source)), load_runner(Path(converted))
    spec = src_runner.spec
    images = random_images(count, spec.height, spec.width, spec.channels, seed)
    expected = src_runner.run(in_layout(images, spec.layout))
    got = out_runner.run(in_layout(images, out_runner.spec.layout))
    assert got.shape == expected.shape, f"output shape {got.shape} != {expected.shape}"
    return float(np.abs(got - expected).max()), float(np.ptp(expected))


def assert_outputs_match(source: Path, converted: Path, rel: float = 1e-4, count: int = 4, seed: int = 0) -> float:
    """Assert the max abs difference is within `rel` of the source output range; return the ratio."""
    diff, spread = compare_outputs(source, converted, count, seed)
    assert spread > 0, "degenerate source outputs"
    assert diff <= rel * spread, f"max abs diff {diff:.3g} exceeds {rel:g} x output range {spread:.3g}"
    return diff / spread
