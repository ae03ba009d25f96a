"""PyTorch models: torch.export archives (.pt2) and TorchScript archives (.pt)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import BadInputError, one_line
from ..formats import Format, InputSpec, guess_layout
from .base import NamedOutput, Runner, named_outputs

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

    def _run_chunk_outputs(self, chunk: np.ndarray) -> list[NamedOutput]:
        return call_torch_outputs(self.module, chunk)


class TorchScriptRunner(Runner):
    format = Format.TORCHSCRIPT

    def __init__(self, path: Path, input_shape: tuple[int, ...] | None = None):
        import torch

        extra = {SPEC_EXTRA_FILE: ""}
        try:
            self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
        except Exception as exc:
            raise BadInputError(f"{path.name}: not a loadable TorchScript archive ({one_line(exc)})") from None
        stored = read_stored_spec(extra[SPEC_EXTRA_FILE], path.name)
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

    def _run_chunk_outputs(self, chunk: np.ndarray) -> list[NamedOutput]:
        return call_torch_outputs(self.module, chunk)


def read_stored_spec(raw: str | bytes, name: str) -> dict | None:
    """The input spec safeconvert stored in a TorchScript archive, checked: a damaged one is a bad input."""
    if not raw:
        return None
    try:
        stored = json.loads(raw)
        shape = [None if d is None else int(d) for d in stored["shape"]]
        spec = {"name": str(stored["name"]), "shape": shape, "layout": str(stored["layout"]), "dtype": str(stored["dtype"])}
    except (ValueError, TypeError, KeyError) as exc:  # undecodable bytes, bad JSON, missing or mistyped fields
        raise BadInputError(f"{name}: its stored input spec ({SPEC_EXTRA_FILE}) is damaged ({one_line(exc)})") from None
    if len(shape) != 4 or spec["layout"] not in ("NCHW", "NHWC"):
        raise BadInputError(f"{name}: its stored input spec ({SPEC_EXTRA_FILE}) is damaged (shape {shape}, layout {spec['layout']})")
    return spec


def _call_torch(module, chunk: np.ndarray) -> np.ndarray:
    return call_torch_outputs(module, chunk)[0].values


def call_torch_outputs(module, chunk: np.ndarray) -> list[NamedOutput]:
    """Every output of a torch module (one tensor, a tuple/list or a dict of them), as numpy."""
    import torch

    with torch.inference_mode():
        output = module(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)))
    if isinstance(output, dict):
        output = {k: v.detach().numpy() for k, v in output.items()}
    elif isinstance(output, (list, tuple)):
        output = [v.detach().numpy() for v in output]
    else:
        output = output.detach().numpy()
    return named_outputs(output)
