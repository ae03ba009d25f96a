"""Load a model file in a throwaway child process first, so a native crash costs a message, not the run.

ONNX Runtime and LiteRT parse model files in C++. A corrupted or hostile file can crash them (a fuzzed
.tflite segfaulted LiteRT's `allocate_tensors` here), and a crash inside safeconvert's own process would
end the run without a message or an exit code from the contract. Both runtimes start in about 0.2 s, so
every ONNX and TFLite file is first loaded and run once in a child; the real load happens only if the
child survives. TensorFlow and PyTorch loads are not probed: their start-up takes seconds, and their file
parsers are Python or checked archives (fuzzing them here produced exceptions, never crashes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import BadInputError
from ..formats import Format
from .probe_child import REFUSED

PROBE_TIMEOUT = 180.0  # seconds: generous for a large model on a busy machine, finite for a hostile one
RUNTIME = {Format.ONNX: "ONNX Runtime", Format.TFLITE: "LiteRT"}


def probe_in_child(path: Path, fmt: Format) -> None:
    """Raise BadInputError if loading `path` crashes or hangs its runtime, or fails a structural check."""
    if not sys.executable:  # embedded interpreter: no way to start a child, load in-process as before
        return
    command = [sys.executable, "-m", "safeconvert.safety.probe_child", fmt.value, str(path)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                                stdin=subprocess.DEVNULL, env=_child_environment())
    except subprocess.TimeoutExpired:
        raise BadInputError(f"{path.name}: loading it hangs {RUNTIME[fmt]} (no answer in {PROBE_TIMEOUT:.0f} s)") from None
    if result.returncode < 0:
        raise BadInputError(f"{path.name}: the file crashes {RUNTIME[fmt]} when loaded ({_signal_name(-result.returncode)}); "
                            "it is corrupt or hostile")
    if result.returncode == REFUSED:
        raise BadInputError(f"{path.name}: {result.stdout.strip() or 'refused by the structural check'}")


def _child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return environment


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
