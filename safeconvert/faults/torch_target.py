"""PyTorch targets with a planted fault.

A PyTorch target in safeconvert comes from ONNX through onnx2torch, so a faulty PyTorch model is made the
same way: the fault is planted in a copy of the ONNX source and that copy is converted with the wrapped
onnx2torch converter. The TorchScript result then carries the fault in its own modules and parameters
(a changed Conv2d attribute, an altered weight, an extra or missing module), as a faulty conversion would.

The ONNX source must be one onnx2torch converts: onnx2torch 1.5 has no converters for some opset 19+ ops
(Constant, AveragePool, Reshape), which torch.onnx writes at its default opset 20; tf2onnx output (opset 15)
and torch.onnx exports at opset 17 convert. The planted ONNX is byte-identical for a seed; the TorchScript
archive is not (torch records the file name and per-process name-mangling counters), but its parameters and
outputs are.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .api import inject
from .fault import InjectedFault


def inject_torch(onnx_source: Path, out_pt: Path, kind: str, layer: str | None = None, seed: int = 0,
                 params: dict | None = None) -> InjectedFault:
    """Plant `kind` into a copy of `onnx_source` and convert it to TorchScript at `out_pt` with onnx2torch."""
    from ..formats import Format
    from ..wrappers.base import ConversionOptions
    from ..wrappers.onnx2torch_wrapper import Onnx2TorchConverter

    with tempfile.TemporaryDirectory(prefix="safeconvert-fault-") as scratch:
        faulty = Path(scratch) / "faulty.onnx"
        fault = inject(onnx_source, faulty, kind, layer=layer, seed=seed, params=params)
        Onnx2TorchConverter().convert(faulty, Format.ONNX, Path(out_pt), ConversionOptions())
    return fault
