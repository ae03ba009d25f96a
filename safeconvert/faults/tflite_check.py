"""Keep injected TFLite models valid: LiteRT loads and runs them, with the clean model's output shapes.

TFLite stores every tensor's shape. A fault that changes a feature map's size (padding, stride) leaves the
stored shapes of the layers after it stale; the interpreter recomputes them when it prepares the ops, so the
planted model is first prepared without delegates and the shapes it computes are written back, making the
file consistent for every reader (XNNPACK, analysis tools, a localizer reading shapes).
"""

from __future__ import annotations

import numpy as np

from ..errors import one_line
from .fault import FaultNotApplicableError
from .tflite_model import TfliteGraph


def _interpreter(content: bytes, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from ..quiet import native_stderr_silenced

    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with native_stderr_silenced():
        interpreter = Interpreter(model_content=content, num_threads=1, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    return interpreter


def run_once(graph: TfliteGraph) -> list[tuple[int, ...]]:
    """Run the model once on a seeded input; return the output shapes."""
    interpreter = _interpreter(graph.serialize())
    for detail in interpreter.get_input_details():
        sample = np.random.default_rng(0).standard_normal(detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], sample)
    interpreter.invoke()
    return [tuple(int(d) for d in interpreter.get_tensor(o["index"]).shape) for o in interpreter.get_output_details()]


def refresh_shapes(graph: TfliteGraph) -> None:
    """Store the shapes the interpreter computes for every tensor (the batch stays dynamic where it was)."""
    interpreter = _interpreter(graph.serialize(), delegates=False)
    for detail in interpreter.get_tensor_details():
        index = detail["index"]
        if index >= len(graph.tensors):
            continue
        tensor = graph.tensors[index]
        tensor.shape = [int(d) for d in detail["shape"]]
        signature = tensor.shapeSignature
        if signature is not None and len(signature) == len(tensor.shape) and len(signature) > 0:
            tensor.shapeSignature = [int(signature[0])] + tensor.shape[1:]


def still_runs(graph: TfliteGraph, expected: list[tuple[int, ...]]) -> bool:
    try:
        refresh_shapes(graph)
        return run_once(graph) == expected
    except Exception:  # LiteRT raises RuntimeError/ValueError for shape failures
        return False


def verify(graph: TfliteGraph, expected: list[tuple[int, ...]]) -> None:
    """Refuse to write a planted model that LiteRT rejects or whose outputs changed shape."""
    try:
        shapes = run_once(graph)
    except Exception as exc:
        raise FaultNotApplicableError(f"the injected TFLite model does not run: {one_line(exc)}") from None
    if shapes != expected:
        raise FaultNotApplicableError(f"the injected model's outputs changed shape: {shapes} instead of {expected}")
