"""onnx2torch then torch.export: ONNX models to torch.export archives (.pt2).

onnx2torch builds a torch.fx.GraphModule out of its own modules; `torch.export.export` traces that module
down to ATen operators, so the saved .pt2 needs neither onnx2torch nor safeconvert to load
(`torch.export.load(path).module()`), and safeconvert's .pt2 audit accepts it as a source later.

Not every onnx2torch module exports: a module that reads a tensor's values to decide a shape stops torch.export
("data-dependent expression"). onnx2torch's opset-13 Squeeze / Unsqueeze read their axes from a tensor input at
run time even when the axes are a constant initializer, which is how tf2onnx writes the Squeeze after every
Keras GlobalAveragePooling2D; those are turned into onnx2torch's own static-axes modules first (same numbers,
checked). Other data-dependent modules remain this converter's failure. The batch is
exported dynamic when the ONNX batch is dynamic and the program agrees with onnx2torch's module at another
batch size; otherwise the archive records the fixed batch it was exported with.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

from ..errors import BadInputError, ConverterFailedError, SafeConvertError, one_line
from ..formats import Format
from .base import ConversionOptions, Converter
from .onnx2torch_wrapper import _agrees, _example, _input_spec, _load_onnx, _to_graph_module, supported_opset

EXPORT_BATCH = 2
CHECK_BATCH = 3
MAX_BATCH = 4096


class Onnx2TorchExportConverter(Converter):
    """Wraps onnx2torch.convert followed by torch.export.export and torch.export.save."""

    name = "onnx2torch-export"
    honoured_options = ()
    package = "onnx2torch"
    sources = (Format.ONNX,)
    target = Format.TORCH_EXPORT

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        if src_format is not Format.ONNX:
            raise BadInputError(f"{self.name} converts onnx, not {src_format.value}")
        proto = supported_opset(_load_onnx(Path(src)))
        _, shape, dtype = _input_spec(proto, options.input_shape)
        original = _to_graph_module(proto)
        program = _export(_static_axes(copy.deepcopy(original)), original, shape, dtype)
        try:
            _save_and_reload(program, Path(out), original, shape, dtype)
        except Exception as exc:
            Path(out).unlink(missing_ok=True)
            if isinstance(exc, SafeConvertError):
                raise
            raise ConverterFailedError(self.name, f"the program could not be saved: {one_line(exc)}") from None


def _save_and_reload(program, out: Path, original, shape: tuple[int | None, ...], dtype: str) -> None:
    """Save, then load the archive back as a user would (torch.export.load) and check it once.

    onnx2torch names its submodules after the ONNX nodes; tf2onnx's TFLite node names hold commas and
    semicolons, which torch.export.save writes into each node's module-stack metadata and torch.export.load
    then cannot split ("expected metadata_split to return 3 parts"). That metadata only records which
    submodule an op came from, so it is dropped before saving.
    """
    import torch

    for node in program.graph.nodes:
        node.meta.pop("nn_module_stack", None)
    torch.export.save(program, str(out))
    try:
        loaded = torch.export.load(str(out)).module()
    except Exception as exc:
        raise ConverterFailedError("onnx2torch-export", f"the saved .pt2 does not load: {one_line(exc)}") from None
    if not _agrees(loaded, original, _example(shape[0] or EXPORT_BATCH, shape, dtype, seed=2)):
        raise ConverterFailedError("onnx2torch-export", "the saved .pt2 does not reproduce onnx2torch's module")


def _static_axes(graph_module):
    """Give Squeeze / Unsqueeze modules whose axes input is a constant those axes as static arguments."""
    from onnx2torch.node_converters.squeeze import OnnxSqueezeDynamicAxes, OnnxSqueezeStaticAxes
    from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeDynamicAxes, OnnxUnsqueezeStaticAxes

    static = {OnnxSqueezeDynamicAxes: OnnxSqueezeStaticAxes, OnnxUnsqueezeDynamicAxes: OnnxUnsqueezeStaticAxes}
    changed = False
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or len(node.args) != 2 or getattr(node.args[1], "op", None) != "get_attr":
            continue
        replacement = static.get(type(graph_module.get_submodule(node.target)))
        if replacement is not None:
            axes = _constant(graph_module, node.args[1].target).tolist()
            graph_module.add_submodule(node.target, replacement(axes=axes))
            node.args = node.args[:1]
            changed = True
    if changed:
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
    return graph_module


def _constant(graph_module, target: str):
    """The tensor a get_attr node reads (onnx2torch keeps initializers as buffers of a submodule)."""
    owner, _, name = target.rpartition(".")
    return getattr(graph_module.get_submodule(owner) if owner else graph_module, name)


def _export(graph_module, original, shape: tuple[int | None, ...], dtype: str):
    """torch.export with a dynamic batch when the ONNX batch is dynamic and that holds; else a fixed batch.

    Every program is checked against onnx2torch's unmodified module.
    """
    if shape[0] is None:
        try:
            program = _export_at(graph_module, original, shape, dtype, EXPORT_BATCH, dynamic=True)
            if _agrees(program.module(), original, _example(CHECK_BATCH, shape, dtype, seed=1)):
                return program
        except SafeConvertError:
            pass  # a specialised batch may still export: try a fixed one
    return _export_at(graph_module, original, shape, dtype, shape[0] or 1, dynamic=False)


def _export_at(graph_module, original, shape: tuple[int | None, ...], dtype: str, batch: int, dynamic: bool):
    import torch

    example = _example(batch, shape, dtype, seed=0)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(graph_module, (example,), dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # data-dependent shapes, unsupported Python in onnx2torch's modules...
        raise ConverterFailedError("onnx2torch-export", f"torch.export failed on onnx2torch's module: {one_line(exc)}") from None
    if not _agrees(program.module(), original, example):
        raise ConverterFailedError("onnx2torch-export", "the exported program disagrees with onnx2torch's module")
    return program
