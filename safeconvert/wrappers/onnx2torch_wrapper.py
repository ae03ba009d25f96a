"""onnx2torch: ONNX models to TorchScript archives that load without safeconvert or onnx2torch.

onnx2torch builds a torch.fx.GraphModule whose code calls onnx2torch's own modules, so pickling it would tie
users to onnx2torch. We trace it into TorchScript instead (`torch.jit.trace`; onnx2torch's modules are not
scriptable) and store the input spec inside the archive (SPEC_EXTRA_FILE), because TorchScript records no
input shape. Tracing records one input shape; the batch stays dynamic only if a trace at another batch size
still agrees with the GraphModule, otherwise the archive records the fixed batch it was traced with.

onnx2torch 1.5.15 imports torchvision at import time, only for its NMS and RoiAlign converters, and PyPI
torchvision cannot load beside the CPU build of torch used here. When real torchvision is not importable, a
minimal stand-in is registered just for onnx2torch's import and removed afterwards (so no other library
mistakes it for torchvision): only NMS and RoiAlign models are lost, and those fail with a clear message.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np

from ..errors import BadInputError, ConverterFailedError, SafeConvertError, one_line
from ..formats import Format, guess_layout
from ..runners.torch_runner import SPEC_EXTRA_FILE
from .base import ConversionOptions, Converter

# The newest default-domain opset onnx2torch 1.5.15 converts completely.
MAX_OPSET = 17
# The batch a dynamic-batch model is traced with, and the different one the trace is checked at.
TRACE_BATCH = 2
CHECK_BATCH = 3


class Onnx2TorchConverter(Converter):
    """Wraps onnx2torch.convert, then traces and saves the result as TorchScript."""

    name = "onnx2torch"
    honoured_options = ()
    package = "onnx2torch"
    sources = (Format.ONNX,)
    target = Format.TORCHSCRIPT

    def convert(self, src: Path, src_format: Format, out: Path, options: ConversionOptions) -> None:
        if src_format is not Format.ONNX:
            raise BadInputError(f"{self.name} converts onnx, not {src_format.value}")
        proto = supported_opset(_load_onnx(Path(src)))
        name, shape, dtype = _input_spec(proto, options.input_shape)
        graph_module = _to_graph_module(proto)
        traced, shape = _trace(graph_module, shape, dtype)
        spec = {"name": name, "shape": list(shape), "layout": guess_layout(shape), "dtype": dtype}
        _save(traced, Path(out), spec)
        try:
            _check_saved(Path(out), graph_module, shape, dtype)
        except SafeConvertError:
            Path(out).unlink(missing_ok=True)
            raise


def supported_opset(proto):
    """The model down-converted to opset 17 when it declares a newer one and onnx's version converter can.

    onnx2torch 1.5.15 has no converters for some ops at opsets 18+ (ReduceMean-18, Constant-19...), while
    torch.onnx's TorchScript-based exporter writes opset 20 by default and its graphs convert down cleanly.
    When the down-conversion fails (the dynamo exporter's ReduceMean), the model is kept as it is and onnx2torch
    says which op it lacks. The conversion is validated like any other, so a wrong down-conversion would show.
    """
    import onnx
    from onnx import version_converter

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset <= MAX_OPSET:
        return proto
    try:
        converted = version_converter.convert_version(proto, MAX_OPSET)
        onnx.checker.check_model(converted)
        return converted
    except Exception:  # no adapter for some op: onnx2torch will name what it cannot convert
        return proto


def _to_graph_module(proto):
    """onnx2torch.convert, its failures (NotImplementedError for unsupported ops...) as this converter's."""
    try:
        onnx2torch = _import_onnx2torch()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return onnx2torch.convert(proto).eval()
    except Exception as exc:
        raise ConverterFailedError("onnx2torch", _explain(exc)) from None


def _load_onnx(src: Path):
    import onnx

    try:
        return onnx.load(str(src))
    except Exception as exc:
        raise BadInputError(f"{src.name}: not a loadable ONNX model ({one_line(exc)})") from None


def _input_spec(proto, override: tuple[int, ...] | None) -> tuple[str, tuple[int | None, ...], str]:
    """The single graph input's name, shape (None = dynamic) and numpy dtype name."""
    import onnx

    initializers = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BadInputError(f"safeconvert handles single-input image models, this ONNX model has {len(inputs)} inputs")
    tensor_type = inputs[0].type.tensor_type
    shape = tuple(d.dim_value if d.dim_value > 0 else None for d in tensor_type.shape.dim)
    if override is not None:
        shape = tuple(override) if shape[0] is not None else (None, *tuple(override)[1:])
    if any(d is None for d in shape[1:]):
        raise BadInputError(f"the ONNX input has dynamic dimensions {list(shape)}: pass --input-shape, e.g. 1,3,224,224")
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    return inputs[0].name, shape, dtype


def _import_onnx2torch():
    """Import onnx2torch, lending it a torchvision stand-in for the import if real torchvision won't load."""
    if "onnx2torch" in sys.modules or _real_torchvision_loads():
        return importlib.import_module("onnx2torch")
    stand_ins = _torchvision_stand_in()
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module("onnx2torch")
    finally:
        for module_name, module in stand_ins.items():
            if sys.modules.get(module_name) is module:
                del sys.modules[module_name]


def _real_torchvision_loads() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision.ops")
        return True
    except Exception:  # e.g. RuntimeError: operator torchvision::nms does not exist
        for module_name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[module_name]
        return False


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """torchvision and torchvision.ops with the three names onnx2torch binds (nms, roi_align, box_convert)."""

    def unavailable(*args, **kwargs):
        raise NotImplementedError("torchvision is not installed: NMS and RoiAlign cannot run in this environment")

    torchvision = types.ModuleType("torchvision", "safeconvert stand-in: real torchvision cannot load here")
    ops = types.ModuleType("torchvision.ops")
    for module in (torchvision, ops):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    ops.nms = ops.roi_align = ops.box_convert = unavailable
    torchvision.ops = ops
    return {"torchvision": torchvision, "torchvision.ops": ops}


def _explain(exc: BaseException) -> str:
    """onnx2torch's own message, plus the way out for the opset-18 gap users hit most."""
    message = one_line(exc)
    if "operation_type='Reduce" in message and "version=18" in message:
        message += " (onnx2torch 1.5.15 has no opset-18 Reduce* ops: export the ONNX with --opset 17)"
    return message


def _example(batch: int, shape: tuple[int | None, ...], dtype: str, seed: int):
    """A seeded random input of the model's shape and dtype (images: 0..255 for integer inputs)."""
    import torch

    rng = np.random.default_rng(seed)
    size = (batch, *shape[1:])
    if np.dtype(dtype).kind == "f":
        return torch.from_numpy(rng.standard_normal(size).astype(dtype))
    return torch.from_numpy(rng.integers(0, 256, size).astype(dtype))


def _trace(graph_module, shape: tuple[int | None, ...], dtype: str):
    """Trace to TorchScript; keep the batch dynamic only if the trace holds at another batch size."""
    if shape[0] is not None:
        return _trace_at(graph_module, shape, dtype, shape[0]), shape
    traced = _trace_at(graph_module, shape, dtype, TRACE_BATCH)
    if _agrees(traced, graph_module, _example(CHECK_BATCH, shape, dtype, seed=1)):
        return traced, shape
    fixed = (1, *shape[1:])  # the trace baked the batch in: record a fixed batch honestly
    return _trace_at(graph_module, fixed, dtype, 1), fixed


def _trace_at(graph_module, shape: tuple[int | None, ...], dtype: str, batch: int):
    import torch

    example = _example(batch, shape, dtype, seed=0)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about constants: checked by _agrees instead
            traced = torch.jit.trace(graph_module, example, check_trace=False)
    except Exception as exc:
        raise ConverterFailedError("onnx2torch", f"its model could not be traced to TorchScript: {one_line(exc)}") from None
    if not _agrees(traced, graph_module, example):
        raise ConverterFailedError("onnx2torch", "the TorchScript trace disagrees with onnx2torch's model on the trace input")
    return traced


def _agrees(candidate, reference, example) -> bool:
    """Whether `candidate` runs on `example` and gives `reference`'s outputs up to float round-off."""
    import torch

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got, want = _first_output(candidate(example)), _first_output(reference(example))
    except Exception:
        return False
    if got.shape != want.shape:
        return False
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    return bool(np.allclose(got, want, rtol=1e-4, atol=1e-5 * scale))


def _first_output(output) -> np.ndarray:
    if isinstance(output, (list, tuple)):
        output = output[0]
    if isinstance(output, dict):
        output = next(iter(output.values()))
    return output.detach().numpy()


def _save(traced, out: Path, spec: dict) -> None:
    import torch

    try:
        torch.jit.save(traced, str(out), _extra_files={SPEC_EXTRA_FILE: json.dumps(spec)})
    except Exception as exc:
        raise ConverterFailedError("onnx2torch", f"the TorchScript archive could not be saved: {one_line(exc)}") from None


def _check_saved(out: Path, graph_module, shape: tuple[int | None, ...], dtype: str) -> None:
    """Load the archive back as a user would (plain torch.jit.load) and run it once."""
    import torch

    try:
        loaded = torch.jit.load(str(out), map_location="cpu").eval()
    except Exception as exc:
        raise ConverterFailedError("onnx2torch", f"the saved TorchScript archive does not load: {one_line(exc)}") from None
    if not _agrees(loaded, graph_module, _example(shape[0] or TRACE_BATCH, shape, dtype, seed=2)):
        raise ConverterFailedError("onnx2torch", "the saved TorchScript archive does not reproduce the traced model")
