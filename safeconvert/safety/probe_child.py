"""The child side of `probe.probe_in_child`: load one model with its native runtime and run it on one input
of zeros, then of random values.

Run as `python -I probe_child.py FORMAT PATH [MAX_ELEMENTS]` (a script that imports nothing of safeconvert).
The exit status tells the parent what to do, with a one-line message on stdout:

* 0: loaded and ran (or its input was too large to build, which the parent refuses on its own);
* REFUSED: a structural check failed, a tensor an ONNX model computes is larger than MAX_ELEMENTS (ONNX
  shape inference with data propagation bounds every intermediate before anything runs: a ConstantOfShape,
  Expand, Tile or Resize with constant shapes cannot allocate gigabytes), or one image exhausted the
  child's address-space limit;
* LOAD_FAILED: the runtime raised while loading (or, for TFLite, whose shapes are concrete, while running).
  The parent reports it rather than loading the file itself: a corrupt file that makes the runtime raise
  in one process can crash it in another (a fuzzed .tflite raised here and segfaulted elsewhere);
* RUN_FAILED: an ONNX model loaded but failed on a zero input of guessed size (its dynamic dimensions set
  to 1); the parent goes on, and a real failure is reported by validation with the real input.

The model runs twice: on zeros, then on random values (seeded). A model whose work depends on its input's
values (a Loop's trip count, a ConstantOfShape's size computed from the pixels) does nothing on zeros; the
random run makes it hang or exhaust memory here, under the child's limits, rather than in safeconvert's own
process. Only running out of memory counts on the random run: a model may fairly reject arbitrary values
(indices out of range), which its real input never holds.

A native crash shows up in the parent as a death by signal, which is the point.
"""

from __future__ import annotations

import resource
import signal
import sys
from pathlib import Path

import numpy as np

REFUSED = 3
LOAD_FAILED = 4
RUN_FAILED = 5
ADDRESS_SPACE_BASE = 4 << 30  # bytes of address space allowed besides four times the model file
MAX_PROBE_ELEMENTS = 1 << 24  # a zero input larger than this is not built (the parent refuses such inputs)
MAX_COMPUTED_ELEMENTS = 1 << 28  # default bound on any tensor an ONNX model computes (safety.limits passes its own)
LIMIT_VARIABLE = "SAFECONVERT_MAX_TENSOR_ELEMENTS"  # named in the message; read by the parent (safety.limits)
MEMORY_VARIABLE = "SAFECONVERT_MAX_MEMORY_MB"  # the run's memory limit (safety.memory_limit), inherited as RLIMIT_DATA

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
               "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


class Stage(Exception):
    """A failure with the exit status that says which stage failed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this child itself
    fmt, path = argv[0], Path(argv[1])
    max_elements = int(argv[2]) if len(argv) > 2 else MAX_COMPUTED_ELEMENTS
    _limit_address_space(path)
    try:
        {"onnx": _probe_onnx, "tflite": _probe_tflite}[fmt](path, max_elements)
    except Stage as exc:
        print(" ".join(str(exc).split())[:300])
        return exc.status
    return 0


def _limit_address_space(path: Path) -> None:
    """A model that asks for absurd memory fails here with an error instead of driving the machine into swap."""
    limit = ADDRESS_SPACE_BASE + 4 * path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit if hard == resource.RLIM_INFINITY else hard))


def _stage(status: int, exc: BaseException) -> Stage:
    """Classify a runtime's exception; running out of the child's memory is always a refusal."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or "bad_alloc" in text or "failed to allocate" in text.lower():
        address_space, data = (resource.getrlimit(kind)[0] for kind in (resource.RLIMIT_AS, resource.RLIMIT_DATA))
        if data != resource.RLIM_INFINITY and data < address_space:  # the run's own limit, inherited
            return Stage(REFUSED, f"needs more than {data / (1 << 30):.1f} GB of memory to run on a single image "
                                  f"(set {MEMORY_VARIABLE} to raise the limit)")
        return Stage(REFUSED, f"needs more than {address_space / (1 << 30):.1f} GB of memory to run on a single image")
    return Stage(status, str(exc) or type(exc).__name__)


def _probe_onnx(path: Path, max_elements: int) -> None:
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path))  # graph structure and external-data paths (none outside the folder)
    except Exception as exc:
        raise Stage(REFUSED, f"not a loadable ONNX model (onnx.checker: {exc})") from None
    _check_computed_sizes(path, max_elements)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise _stage(LOAD_FAILED, exc) from None
    feeds = {}
    for item in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in item.shape]
        dtype = _ORT_DTYPES.get(item.type)
        if dtype is None or np.prod(shape, dtype=object) > MAX_PROBE_ELEMENTS:
            return
        feeds[item.name] = np.zeros(shape, dtype)
    try:
        session.run(None, feeds)
    except Exception as exc:
        raise _stage(RUN_FAILED, exc) from None
    _run_on_random_values(lambda: session.run(None, {name: _random_like(zeros) for name, zeros in feeds.items()}))


def _random_like(zeros: np.ndarray) -> np.ndarray:
    """Values of `zeros`' shape and type that are not all zero: normal for floats, small non-negative integers
    (0-9, valid as most indices and labels), random booleans."""
    rng = np.random.default_rng(0)
    if zeros.dtype.kind == "f":
        return rng.standard_normal(zeros.shape).astype(zeros.dtype)
    if zeros.dtype.kind == "b":
        return rng.integers(0, 2, zeros.shape).astype(np.bool_)
    return rng.integers(0, 10, zeros.shape).astype(zeros.dtype)


def _run_on_random_values(run) -> None:
    """Run once more on random values; only running out of memory is an answer (see the module docstring)."""
    try:
        run()
    except Exception as exc:
        stage = _stage(RUN_FAILED, exc)
        if stage.status == REFUSED:
            raise stage from None


def _check_computed_sizes(path: Path, max_elements: int) -> None:
    """Refuse a model whose inferred intermediate or output tensors exceed `max_elements` for one image.

    Unknown dimensions (the batch, data-dependent sizes) count as 1. When shape inference itself fails the
    check is skipped: the run below still happens under this child's address-space limit.
    """
    import onnx
    from onnx import shape_inference

    try:
        model = onnx.load(str(path), load_external_data=False)
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        return
    graph = inferred.graph
    for value in [*graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        elements = int(np.prod([d for d in dims if d and d > 0], dtype=object)) if dims else 1
        if elements > max_elements:
            shown = [d if d is not None else "?" for d in dims]
            raise Stage(REFUSED, f"the model computes a tensor '{value.name}' of shape {shown} "
                                 f"({elements:,} elements), more than the limit of {max_elements:,} "
                                 f"(set {LIMIT_VARIABLE} to raise it)")


def _probe_tflite(path: Path, max_elements: int) -> None:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        details = interpreter.get_input_details()
        if any(np.prod(d["shape"], dtype=object) > MAX_PROBE_ELEMENTS for d in details):
            return
        interpreter.allocate_tensors()
        for detail in details:
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except Exception as exc:
        raise _stage(LOAD_FAILED, exc) from None

    def run_random() -> None:
        for detail in details:
            interpreter.set_tensor(detail["index"], _random_like(np.zeros(detail["shape"], detail["dtype"])))
        interpreter.invoke()

    _run_on_random_values(run_random)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
