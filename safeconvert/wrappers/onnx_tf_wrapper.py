"""onnx-tf: ONNX models to TF SavedModels, run in an interpreter of its own.

onnx-tf 1.10.0 (its last release, 2022) cannot be installed beside safeconvert's frameworks: it imports
`onnx.mapping` (gone after onnx 1.18) and tensorflow-addons, which breaks from TensorFlow 2.16 on. It works in
a separate Python 3.11 environment pinned by requirements/onnx-tf-env.txt (`make onnx-tf-env` builds
.venv-onnx-tf), where safeconvert runs the standalone script hops/standalone/onnx_tf_hop.py. The user names
that interpreter with `--converter-env onnx-tf=PATH` or the SAFECONVERT_ONNX_TF_PYTHON environment variable;
without one the converter is reported unusable, with the way to build it.

The SavedModel keeps the ONNX input's NCHW layout and name; TensorFlow 2.21 here loads it.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from ..errors import BadInputError, ConverterFailedError
from ..formats import Format
from .base import ConversionOptions, Converter
from .standalone_hop import run_standalone

ENV_VAR = "SAFECONVERT_ONNX_TF_PYTHON"
SCRIPT = Path(__file__).resolve().parent.parent / "hops" / "standalone" / "onnx_tf_hop.py"
HOW_TO_GET_ONE = (f"build one with `make onnx-tf-env` and pass --converter-env onnx-tf=.venv-onnx-tf/bin/python "
                  f"(or set {ENV_VAR})")
PROBE_SECONDS = 60


def configure_interpreter(python: str | Path | None) -> None:
    """Point the onnx-tf converter at an interpreter (what --converter-env onnx-tf=PATH does); None clears it.

    An environment variable, so hop child processes inherit the choice.
    """
    if python is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = str(python)


def configured_interpreter() -> str | None:
    return os.environ.get(ENV_VAR) or None


class OnnxTfConverter(Converter):
    """Wraps onnx_tf.backend.prepare(model).export_graph(DIR), through the standalone hop script."""

    name = "onnx-tf"
    honoured_options = ()
    package = "onnx-tf"
    sources = (Format.ONNX,)
    target = Format.SAVEDMODEL
    standalone_script = SCRIPT

    def use_interpreter(self, python: str | Path) -> None:
        """--converter-env onnx-tf=PATH: run in (and judge availability by) that interpreter."""
        configure_interpreter(python)

    def version(self) -> str | None:
        python = configured_interpreter()
        return _probe(python)[0] if python else None

    def availability(self) -> tuple[bool, str]:
        python = configured_interpreter()
        if not python:
            return False, f"no onnx-tf interpreter configured: {HOW_TO_GET_ONE}"
        version, problem = _probe(python)
        if version is None:
            return False, f"the onnx-tf interpreter {python} {problem}"
        return True, "ok"

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        if src_format is not Format.ONNX:
            raise BadInputError(f"{self.name} converts onnx, not {src_format.value}")
        available, why = self.availability()
        if not available:
            raise ConverterFailedError(self.name, f"not usable here ({why})")
        run_standalone(configured_interpreter(), SCRIPT, self.name, Path(src), src_format, self.target, Path(out),
                       options)


@functools.lru_cache(maxsize=8)
def _probe(python: str) -> tuple[str | None, str]:
    """onnx-tf's version in that interpreter (read from its metadata: TensorFlow is not started), or why not."""
    if not Path(python).is_file() or not os.access(python, os.X_OK):
        return None, "does not exist or is not executable"
    code = "import importlib.metadata as m, sys; sys.stdout.write(m.version('onnx-tf'))"
    try:
        result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=PROBE_SECONDS,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot be run ({type(exc).__name__})"
    if result.returncode != 0:
        return None, "has no onnx-tf installed (pip install -r requirements/onnx-tf-env.txt there)"
    return result.stdout.strip(), "ok"
