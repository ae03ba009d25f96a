"""Keep injected ONNX models valid: the checker passes and ONNX Runtime loads and runs them.

Some faults change a feature map's size (a stride, a dropped pad, ceil_mode); whether the rest of the graph
still fits (a residual Add, a Flatten into a fixed Dense) is only certain once the model has run, so those
sites are found by trial, the same way the planted model is finally checked.
"""

from __future__ import annotations

import numpy as np

from ..errors import one_line
from .fault import FaultNotApplicableError
from .onnx_graph import OnnxGraph


def run_once(graph: OnnxGraph) -> list[tuple[int, ...]]:
    """Run the model once on a seeded input (symbolic dimensions set to 1); return the output shapes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(graph.serialize(), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in value.shape]
        feeds[value.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return [tuple(o.shape) for o in session.run(None, feeds)]


def still_runs(graph: OnnxGraph, expected: list[tuple[int, ...]]) -> bool:
    """Whether an edited model loads, runs and keeps the clean model's output shapes."""
    try:
        return run_once(graph) == expected
    except Exception:  # ONNX Runtime raises its own exception types for shape errors
        return False


def verify(graph: OnnxGraph, expected: list[tuple[int, ...]]) -> None:
    """Refuse to write a planted model that ONNX or ONNX Runtime rejects."""
    import onnx

    try:
        onnx.checker.check_model(graph.model)
        shapes = run_once(graph)
    except Exception as exc:
        raise FaultNotApplicableError(f"the injected model is not valid: {one_line(exc)}") from None
    if shapes != expected:
        raise FaultNotApplicableError(f"the injected model's outputs changed shape: {shapes} instead of {expected}")
