"""Run a standalone hop script in another Python interpreter (docs/converter-protocol.md).

Converters whose packages cannot live beside safeconvert's frameworks (onnx-tf needs TensorFlow 2.15 and
onnx 1.18) run as `OTHER_PYTHON SCRIPT REQUEST.json RESPONSE.json` in their own environment. This module is
the parent side of that exchange for a wrapper's `convert`: it writes the request, runs the script in its
own session (so the whole process group can be ended), and turns the response into safeconvert's errors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import fields as dataclass_fields
from pathlib import Path

from ..errors import BadInputError, ConverterFailedError
from ..formats import Format
from .base import ConversionOptions

PROTOCOL = 1
TIMEOUT_SECONDS = 900
LOG_TAIL_LINES = 5


def run_standalone(python: str, script: Path, converter: str, src: Path, src_format: Format, target: Format,
                   out: Path, options: ConversionOptions) -> dict:
    """Run `script` under `python` for one hop; return the response, raising on failure."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{converter}-hop-", dir=Path(out).parent))
    try:
        request, response = scratch / "request.json", scratch / "response.json"
        request.write_text(json.dumps(_request(converter, src, src_format, target, out, options)))
        log = scratch / "child.log"
        status = _run([python, str(script), str(request), str(response)], log, converter)
        return _read_response(response, status, log, converter)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _request(converter: str, src: Path, src_format: Format, target: Format, out: Path,
             options: ConversionOptions) -> dict:
    skipped = ("representative_data", "tf2onnx_cli")  # no array or nested flags cross to the other interpreter
    fields = {f.name: getattr(options, f.name) for f in dataclass_fields(options) if f.name not in skipped}
    fields["input_shape"] = list(options.input_shape) if options.input_shape else None
    fields["tf2onnx_cli"] = None
    return {"protocol": PROTOCOL, "converter": converter, "source": str(Path(src).absolute()),
            "source_format": src_format.value, "target_format": target.value, "output": str(Path(out).absolute()),
            "options": fields, "representative_data": None}


def _run(command: list[str], log: Path, converter: str) -> int:
    """Run the child in its own session with its output in `log`; end its process group on timeout or Ctrl-C."""
    with log.open("wb") as handle:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                 start_new_session=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        try:
            return child.wait(timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            raise ConverterFailedError(converter, f"did not finish within {TIMEOUT_SECONDS} s") from None
        except BaseException:
            _kill_group(child)
            raise


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def _read_response(path: Path, status: int, log: Path, converter: str) -> dict:
    """The child's answer; a missing or unreadable one is a crash, reported with the child's last lines."""
    try:
        response = json.loads(path.read_text())
    except (OSError, ValueError):
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-LOG_TAIL_LINES:])
        raise ConverterFailedError(converter, f"crashed (exit status {status}): {tail or 'no output'}") from None
    if response.get("ok"):
        return response
    message = response.get("error") or "failed without a message"
    if response.get("error_kind") == "bad_input":
        raise BadInputError(f"{converter}: {message}")
    raise ConverterFailedError(converter, message)
