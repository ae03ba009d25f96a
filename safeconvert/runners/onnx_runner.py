"""ONNX models, run with ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError, one_line
from ..formats import Format, InputSpec, guess_layout
from .base import NamedOutput, Runner

_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(float16)": "float16"}


# ONNX Runtime's graph optimisation levels by name. Validation uses "all" (the default, and how a model is
# commonly run); the others exist to tell the runtime's fused kernels apart from the model file itself.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class OnnxRunner(Runner):
    format = Format.ONNX

    def __init__(self, path: Path, input_shape: tuple[int, ...] | None = None, optimization: str = "all"):
        import onnxruntime as ort

        from ..safety.probe import probe_in_child

        probe_in_child(Path(path), Format.ONNX)  # a file that crashes ONNX Runtime does it in a child
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = _level(optimization)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for corrupt models
            raise BadInputError(f"{path.name}: not a loadable ONNX model ({one_line(exc)})") from None
        first = self.session.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in first.shape)
        if input_shape is not None:
            shape = tuple(input_shape)
        spec = InputSpec(first.name, shape, guess_layout(shape), _ORT_TYPES.get(first.type, first.type))
        super().__init__(path, spec)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_name = self.output_names[0]

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.spec.name: chunk.astype(self.spec.dtype)})[0]

    def _run_chunk_outputs(self, chunk: np.ndarray) -> list[NamedOutput]:
        values = self.session.run(self.output_names, {self.spec.name: chunk.astype(self.spec.dtype)})
        return [NamedOutput(name, np.asarray(v)) for name, v in zip(self.output_names, values)]


def _level(name: str):
    """ONNX Runtime's GraphOptimizationLevel for one of OPTIMIZATION_LEVELS."""
    import onnxruntime as ort

    levels = ort.GraphOptimizationLevel
    return {"disable": levels.ORT_DISABLE_ALL, "basic": levels.ORT_ENABLE_BASIC,
            "extended": levels.ORT_ENABLE_EXTENDED, "all": levels.ORT_ENABLE_ALL}[name]
