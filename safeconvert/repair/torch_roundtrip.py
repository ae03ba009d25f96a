"""Repair a TorchScript target through ONNX.

A TorchScript archive written by the onnx2torch route is a traced graph: no weights or attributes can
be edited in a form the repair vocabulary knows. It can be repaired by (a) exporting it back to ONNX,
editing that with safeconvert.repair.onnx_edit, and converting again with onnx2torch; or, better when
the route has one, (b) editing the route's ONNX intermediate and re-running only the last hop (node
names then still match the Origins localization reported; after (a) they are the exporter's new names).
These helpers are thin wrappers over the converters safeconvert already uses, so a repaired file is
written exactly like a converted one (input spec stored in the archive, batch checked).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# onnx2torch reads ONNX up to opset 17 (the TorchScript exporter writes it natively).
ROUNDTRIP_OPSET = 17


def torchscript_to_onnx(pt_path: Path, onnx_out: Path, input_shape: tuple[int, ...] | None = None,
                        opset: int = ROUNDTRIP_OPSET) -> Path:
    """Export a TorchScript archive to ONNX (input shape from the archive's stored spec unless given)."""
    from ..formats import Format
    from ..wrappers.base import ConversionOptions
    from ..wrappers.torch_onnx_wrapper import TorchOnnxConverter

    options = ConversionOptions(opset=opset, input_shape=input_shape, torch_dynamo=False)
    TorchOnnxConverter().convert(Path(pt_path), Format.TORCHSCRIPT, Path(onnx_out), options)
    return Path(onnx_out)


def onnx_to_torchscript(onnx_path: Path, pt_out: Path, input_shape: tuple[int, ...] | None = None) -> Path:
    """Convert ONNX to a TorchScript archive with safeconvert's onnx2torch wrapper."""
    from ..formats import Format
    from ..wrappers.base import ConversionOptions
    from ..wrappers.onnx2torch_wrapper import Onnx2TorchConverter

    Onnx2TorchConverter().convert(Path(onnx_path), Format.ONNX, Path(pt_out), ConversionOptions(input_shape=input_shape))
    return Path(pt_out)


def repair_torchscript(pt_path: Path, pt_out: Path, edit: Callable[[object], None], workdir: Path,
                       input_shape: tuple[int, ...] | None = None) -> Path:
    """Route (a): TorchScript -> ONNX, `edit(model_proto)` in place, -> TorchScript at `pt_out`.

    workdir receives the intermediate ONNX files (exported.onnx, repaired.onnx) for the report."""
    import onnx

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    exported = torchscript_to_onnx(pt_path, workdir / "exported.onnx", input_shape)
    model = onnx.load(str(exported))
    edit(model)
    onnx.checker.check_model(model)
    repaired = workdir / "repaired.onnx"
    onnx.save(model, str(repaired))
    return onnx_to_torchscript(repaired, pt_out, input_shape)
