"""Load a model file in a throwaway child process first, so a native crash costs a message, not the run.

ONNX Runtime and LiteRT parse model files in C++. A corrupted or hostile file can crash them (a fuzzed
.tflite segfaulted LiteRT's `allocate_tensors` here), and a crash inside safeconvert's own process would
end the run without a message or an exit code from the contract. Both runtimes start in about 0.2 s, so
every ONNX and TFLite file is first loaded and run once in a child; the real load happens only if the
child loaded it without error (an error there is reported, not retried in-process: a fuzzed .tflite that
raised in one process segfaulted in another). TensorFlow and PyTorch loads are not probed: their start-up
takes seconds, and their file parsers are Python or checked archives (fuzzing them here produced
exceptions, never crashes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import BadInputError
from ..formats import Format
from . import probe_child
from .probe_child import LOAD_FAILED, REFUSED

PROBE_TIMEOUT = 180.0  # seconds: generous for a large model on a busy machine, finite for a hostile one
RUNTIME = {Format.ONNX: "ONNX Runtime", Format.TFLITE: "LiteRT"}
LABEL = {Format.ONNX: "ONNX", Format.TFLITE: "TFLite"}


# Files that passed, by identity: validating one model against many others probes it once per process.
_PASSED: set[tuple] = set()


def probe_in_child(path: Path, fmt: Format) -> None:
    """Raise BadInputError if loading `path` crashes or hangs its runtime, or fails a structural check."""
    if not sys.executable:  # embedded interpreter: no way to start a child, load in-process as before
        return
    identity = _identity(path)
    if identity in _PASSED:
        return
    _run_probe(path, fmt)
    _PASSED.add(identity)


def _identity(path: Path) -> tuple:
    """Same path, inode, size and modification time: the same bytes, for all practical purposes."""
    stat = Path(path).stat()
    return (str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _run_probe(path: Path, fmt: Format) -> None:
    # Run as a script in isolated mode: it imports nothing of safeconvert, and nothing from the current
    # directory or PYTHONPATH (a `safeconvert/` folder there must not be what runs).
    from .limits import TENSOR_ELEMENTS_VARIABLE, limit

    command = [sys.executable, "-I", probe_child.__file__, fmt.value, str(path), str(limit(TENSOR_ELEMENTS_VARIABLE))]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                                stdin=subprocess.DEVNULL, env=_child_environment())
    except subprocess.TimeoutExpired:
        raise BadInputError(f"{path.name}: loading it hangs {RUNTIME[fmt]} (no answer in {PROBE_TIMEOUT:.0f} s)") from None
    if result.returncode < 0:
        raise BadInputError(f"{path.name}: the file crashes {RUNTIME[fmt]} when loaded ({_signal_name(-result.returncode)}); "
                            "it is corrupt or hostile")
    message = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "no message"
    if result.returncode == REFUSED:
        raise BadInputError(f"{path.name}: {message}")
    if result.returncode == LOAD_FAILED:  # not retried in-process: what raised there may crash here
        raise BadInputError(f"{path.name}: not a loadable {LABEL[fmt]} model ({message})")


def _child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return environment


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
