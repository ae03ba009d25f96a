"""PyTorch models: torch.export archives (.pt2) and TorchScript archives (.pt)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import BadInputError, one_line
from ..formats import Format, InputSpec, guess_layout
from .base import Runner

# TorchScript files carry no input shape; safeconvert stores one in this extra file when it writes them.
SPEC_EXTRA_FILE = "safeconvert_input.json"


class TorchExportRunner(Runner):
    format = Format.TORCH_EXPORT

    def __init__(self, path: Path, input_shape: tuple[int, ...] | None = None):
        import torch

        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise BadInputError(f"{path.name}: not a loadable torch.export archive ({one_line(exc)})") from None
        user_inputs = list(program.graph_signature.user_inputs)
        if len(user_inputs) != 1:
            raise BadInputError(f"{path.name}: safeconvert handles single-input image models, this one has {len(user_inputs)}")
        node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0])
        fake = node.meta["val"]
        shape = tuple(input_shape) if input_shape else tuple(int(d) if str(d).isdigit() else None for d in fake.shape)
        super().__init__(path, InputSpec(user_inputs[0], shape, guess_layout(shape), str(fake.dtype).removeprefix("torch.")))
        self.module = program.module()

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return _call_torch(self.module, chunk)


class TorchScriptRunner(Runner):
    format = Format.TORCHSCRIPT

    def __init__(self, path: Path, input_shape: tuple[int, ...] | None = None):
        import torch

        extra = {SPEC_EXTRA_FILE: ""}
        try:
            self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
        except Exception as exc:
            raise BadInputError(f"{path.name}: not a loadable TorchScript archive ({one_line(exc)})") from None
        stored = json.loads(extra[SPEC_EXTRA_FILE]) if extra[SPEC_EXTRA_FILE] else None
        if input_shape is not None:
            shape = tuple(input_shape)
            spec = InputSpec(stored["name"] if stored else "input", shape, guess_layout(shape), "float32")
        elif stored:
            shape = tuple(stored["shape"])
            spec = InputSpec(stored["name"], shape, stored["layout"], stored["dtype"])
        else:
            raise BadInputError(f"{path.name}: a TorchScript file records no input shape; pass --input-shape, e.g. 1,3,224,224")
        super().__init__(path, spec)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return _call_torch(self.module, chunk)


def _call_torch(module, chunk: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        output = module(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)))
    if isinstance(output, (list, tuple)):
        output = output[0]
    if isinstance(output, dict):
        output = next(iter(output.values()))
    return output.detach().numpy()
