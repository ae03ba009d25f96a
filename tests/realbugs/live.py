"""Run a corpus entry's real converter and measure how far its output is from the source's own runtime.

The conversion goes through safeconvert's converter wrappers (the same code `safeconvert convert` runs in its
hop children); both models are run by safeconvert's runners, each fed its own layout of the same seeded
real-valued input, so an NHWC target (onnx2tf) is compared on the same pixels as its NCHW source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import RealBug

REPO = Path(__file__).resolve().parents[2]
ONNX_TF_PYTHON = REPO / ".venv-onnx-tf" / "bin" / "python"
# A relative error (max |diff| over the source output's max |value|) above this is a real disagreement.
BUG_TOLERANCE = 1e-3


@dataclass
class Disagreement:
    """How the converted model's output compares with the source's on one input."""

    relative_error: float  # inf when the output shapes differ
    source_shape: tuple[int, ...]
    target_shape: tuple[int, ...]

    @property
    def is_bug(self) -> bool:
        return self.relative_error > BUG_TOLERANCE


def _converter(name: str):
    """safeconvert's wrapper for `name` (onnx-tf pointed at its own interpreter)."""
    from safeconvert.wrappers.onnx2tf_wrapper import Onnx2TfTfliteConverter
    from safeconvert.wrappers.onnx2torch_wrapper import Onnx2TorchConverter
    from safeconvert.wrappers.onnx_tf_wrapper import OnnxTfConverter
    from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter
    from safeconvert.wrappers.torch_onnx_wrapper import TorchOnnxDynamoConverter

    converters = {c.name: c for c in (Onnx2TorchConverter(), OnnxTfConverter(), Onnx2TfTfliteConverter(),
                                      Tf2OnnxConverter(), TorchOnnxDynamoConverter())}
    converter = converters[name]
    if name == "onnx-tf":
        converter.use_interpreter(os.environ.get("SAFECONVERT_ONNX_TF_PYTHON", str(ONNX_TF_PYTHON)))
    return converter


def convert(bug: RealBug, source: Path, folder: Path) -> Path:
    """Convert `source` with the entry's converter into `folder`; return the target's path."""
    from safeconvert.formats import detect_format
    from safeconvert.wrappers.base import ConversionOptions

    suffix = bug.target_suffix or ".savedmodel"
    target = Path(folder) / f"{Path(source).stem}.{bug.converter}{suffix}"
    _converter(bug.converter).convert(Path(source), detect_format(Path(source)), target, ConversionOptions())
    return target


def disagreement(source: Path, target: Path) -> Disagreement:
    """Run both models on one seeded standard-normal image and compare their first outputs."""
    from safeconvert.runners import load_runner

    source_runner, target_runner = load_runner(Path(source)), load_runner(Path(target))
    nchw = _fixed_shape(source_runner.spec)
    if source_runner.spec.layout == "NHWC":
        nchw = (nchw[0], nchw[3], nchw[1], nchw[2])
    image = np.random.default_rng(1).standard_normal(nchw).astype(np.float32)
    expected = source_runner.run(_laid_out(image, source_runner.spec.layout))
    actual = target_runner.run(_laid_out(image, target_runner.spec.layout))
    if source_runner.spec.layout != target_runner.spec.layout and actual.ndim == 4:
        actual = _laid_out(actual, source_runner.spec.layout, from_layout=target_runner.spec.layout)
    if actual.shape != expected.shape:
        return Disagreement(float("inf"), expected.shape, actual.shape)
    scale = float(np.max(np.abs(expected))) or 1.0
    error = float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale
    return Disagreement(error, expected.shape, actual.shape)


def _fixed_shape(spec) -> tuple[int, ...]:
    return tuple(1 if d is None else int(d) for d in spec.shape)


def _laid_out(array: np.ndarray, layout: str, from_layout: str = "NCHW") -> np.ndarray:
    if layout == from_layout:
        return array
    return array.transpose(0, 2, 3, 1) if layout == "NHWC" else array.transpose(0, 3, 1, 2)


@dataclass
class CliRun:
    """One `safeconvert` run on a corpus model: which command, its exit code, JSON report and wall time."""

    command: str
    exit_code: int
    report: dict
    seconds: float


def run_cli(bug: RealBug, source: Path, folder: Path, repair: bool, timeout: float = 900) -> CliRun:
    """`safeconvert convert` along the entry's route, or, when the route planner would pick another converter
    first (onnx-tf), `check` (or `repair`) of the entry's own conversion; with the JSON report."""
    import json
    import subprocess
    import sys
    import time

    source, folder = Path(source), Path(folder)
    report = folder / f"{source.stem}.{'repair' if repair else 'check'}.report.json"
    report.unlink(missing_ok=True)
    started = time.monotonic()
    if bug.route_default:
        out = folder / f"{source.stem}.out{bug.target_suffix or '.savedmodel'}"
        args = ["convert", str(source), "-o", str(out), "--force", *([] if repair else ["--no-repair"])]
    else:
        target = convert(bug, source, folder)
        if repair:
            args = ["repair", str(source), str(target), "-o", str(folder / f"{source.stem}.repaired.savedmodel"),
                    "--force", "--converter-env", f"{bug.converter}={ONNX_TF_PYTHON}"]
        else:
            args = ["check", str(source), str(target)]
    result = subprocess.run([sys.executable, "-m", "safeconvert", *args, "--report", str(report), "--quiet"],
                            capture_output=True, text=True, timeout=timeout, cwd=folder)
    data = json.loads(report.read_text()) if report.exists() else {"stderr": result.stderr[-2000:]}
    return CliRun(args[0], result.returncode, data, time.monotonic() - started)
