"""The child side of `probe.probe_in_child`: load one model with its native runtime and run it once.

Run as `python -m safeconvert.safety.probe_child FORMAT PATH`. Exit status 0: loaded (and ran, when its input
is small enough to build); REFUSED: the file fails a structural check, or running one image exhausts the
child's address-space limit, which the parent reports (message on stdout); LOAD_FAILED: the runtime raised an
ordinary error, which the parent reproduces in-process with its usual message. A native crash shows up in
the parent as a death by signal, which is the point.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np

REFUSED = 3
LOAD_FAILED = 4
ADDRESS_SPACE_BASE = 4 << 30  # bytes of address space allowed besides four times the model file
MAX_PROBE_ELEMENTS = 1 << 24  # a zero input larger than this is not built (the parent refuses such inputs)

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
               "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


class Refused(Exception):
    """A structural problem to report as such (not a runtime's ordinary load error)."""


def main(argv: list[str]) -> int:
    fmt, path = argv[0], Path(argv[1])
    _limit_address_space(path)
    try:
        {"onnx": _probe_onnx, "tflite": _probe_tflite}[fmt](path)
    except Refused as exc:
        print(" ".join(str(exc).split())[:300])
        return REFUSED
    except Exception as exc:  # the parent reproduces ordinary errors in-process, with its own message
        if _out_of_memory(exc):  # in-process, the same run would exhaust the machine's memory instead
            print(f"needs more than {_limit_text()} of memory to run on a single image")
            return REFUSED
        print(" ".join(f"{type(exc).__name__}: {exc}".split())[:300])
        return LOAD_FAILED
    return 0


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "bad_alloc" in text or "failed to allocate" in text


def _limit_text() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return "an unlimited amount" if soft == resource.RLIM_INFINITY else f"{soft / (1 << 30):.1f} GB"


def _limit_address_space(path: Path) -> None:
    """A model that asks for absurd memory fails here with an error instead of driving the machine into swap."""
    limit = ADDRESS_SPACE_BASE + 4 * path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit if hard == resource.RLIM_INFINITY else hard))


def _probe_onnx(path: Path) -> None:
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path))  # graph structure and external-data paths (none outside the folder)
    except Exception as exc:
        raise Refused(f"not a loadable ONNX model (onnx.checker: {exc})") from None
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for item in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in item.shape]
        dtype = _ORT_DTYPES.get(item.type)
        if dtype is None or np.prod(shape, dtype=object) > MAX_PROBE_ELEMENTS:
            return
        feeds[item.name] = np.zeros(shape, dtype)
    session.run(None, feeds)


def _probe_tflite(path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    details = interpreter.get_input_details()
    if any(np.prod(d["shape"], dtype=object) > MAX_PROBE_ELEMENTS for d in details):
        return
    interpreter.allocate_tensors()
    for detail in details:
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
