"""TFLite models, run with LiteRT; quantised inputs/outputs are (de)quantised here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError, one_line
from ..formats import Format, InputSpec, guess_layout
from .base import NamedOutput, Runner, join_chunks


class TfliteRunner(Runner):
    format = Format.TFLITE

    def __init__(self, path: Path, input_shape: tuple[int, ...] | None = None):
        from ai_edge_litert.interpreter import Interpreter

        from ..quiet import native_stderr_silenced
        from ..safety.probe import probe_in_child
        from ..safety.tflite_structure import check_tflite_structure

        check_tflite_structure(Path(path))  # indices and sizes, before LiteRT allocates anything
        probe_in_child(Path(path), Format.TFLITE)  # a file that crashes LiteRT does it in a child
        try:
            with native_stderr_silenced():
                self.interpreter = Interpreter(model_path=str(path), num_threads=2)
                self.interpreter.allocate_tensors()
        except Exception as exc:
            raise BadInputError(f"{path.name}: not a loadable TFLite model ({one_line(exc)})") from None
        detail = self.interpreter.get_input_details()[0]
        signature = detail.get("shape_signature", detail["shape"])
        shape = tuple(int(d) if d > 0 else None for d in signature)
        if input_shape is not None:
            shape = tuple(input_shape)
        spec = InputSpec(detail["name"], shape, guess_layout(shape), np.dtype(detail["dtype"]).name)
        super().__init__(path, spec)
        self._input = detail
        self._outputs = self.interpreter.get_output_details()
        self._output = self._outputs[0]
        self._current_batch = int(detail["shape"][0])

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_outputs(batch)[0].values

    def run_outputs(self, batch: np.ndarray) -> list[NamedOutput]:
        # A dynamic batch can be resized to the whole batch once; a fixed one runs image by image.
        if self.spec.fixed_batch is None and len(batch) != self._current_batch:
            self.interpreter.resize_tensor_input(self._input["index"], [len(batch), *batch.shape[1:]])
            self.interpreter.allocate_tensors()
            self._current_batch = len(batch)
            self._outputs = self.interpreter.get_output_details()
            self._output = self._outputs[0]
        if self.spec.fixed_batch is None:
            return join_chunks([self._run_chunk_outputs(batch)])
        return super().run_outputs(batch)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return self._run_chunk_outputs(chunk)[0].values

    def _run_chunk_outputs(self, chunk: np.ndarray) -> list[NamedOutput]:
        self.interpreter.set_tensor(self._input["index"], _quantize(chunk, self._input))
        self.interpreter.invoke()
        # copies: the interpreter reuses its output buffers on the next invoke
        return [NamedOutput(out["name"], _dequantize(self.interpreter.get_tensor(out["index"]), out).copy())
                for out in self._outputs]


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Map float input to the model's integer input type using its quantisation parameters."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind == "f":
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale
