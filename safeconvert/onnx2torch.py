"""`from safeconvert.onnx2torch import convert`: onnx2torch.convert, returning the module only once verified.

Same signature and return value as `onnx2torch.convert` (a torch.fx.GraphModule); onnx2torch's own
exceptions (e.g. NotImplementedError for an unsupported op) propagate unchanged. Before returning, the
module runs beside the ONNX model (ONNX Runtime) on the calibration photos; when they disagree beyond the
limits, Onnx2TorchNotVerifiedError (a NotVerifiedError with `.report`) is raised instead. Keyword-only
extras: calibration, preprocess, max_mismatch, rtol, allow_unverified, report_path (see dropin_verify),
and input_shape for ONNX models whose spatial dimensions are dynamic.

This module shares its name with the real package on purpose (the one-line change is the import). Inside
it, `onnx2torch` always means the real package: imports are absolute, and the package is loaded through
the onnx2torch wrapper, which knows how to import it beside the CPU build of torch.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .dropin_verify import ConversionNotVerifiedError, VerifySettings, conclude, model_file, verify
from .report import Hop


class Onnx2TorchNotVerifiedError(ConversionNotVerifiedError):
    """The converted module disagrees with the ONNX model; `.report` holds the metrics and images."""


def convert(onnx_model_or_path, save_input_names: bool = False, attach_onnx_mapping: bool = False, *,
            calibration=None, preprocess: str | None = None, max_mismatch: int = 0, rtol: float = 1e-3,
            allow_unverified: bool = False, report_path=None, input_shape: tuple[int, ...] | None = None):
    """onnx2torch.convert(...), verified against the ONNX model before the module is returned."""
    import importlib.metadata

    from .wrappers.onnx2torch_wrapper import _import_onnx2torch

    settings = VerifySettings(calibration, preprocess, max_mismatch, rtol, allow_unverified, report_path)
    started = time.perf_counter()
    module = _import_onnx2torch().convert(onnx_model_or_path, save_input_names, attach_onnx_mapping)
    hop = Hop(converter="onnx2torch", tool_version=importlib.metadata.version("onnx2torch"), source_format="onnx",
              target_format="torch module", seconds=round(time.perf_counter() - started, 3),
              options={"save_input_names": save_input_names, "attach_onnx_mapping": attach_onnx_mapping})
    report = _verify(onnx_model_or_path, module, hop, settings, input_shape)
    conclude(report, settings, Onnx2TorchNotVerifiedError)
    return module


def _verify(onnx_model_or_path, module, hop: Hop, settings: VerifySettings, input_shape):
    from .runners.memory import TorchModuleRunner
    from .runners.onnx_runner import OnnxRunner

    label = None if isinstance(onnx_model_or_path, (str, Path)) else "<ONNX ModelProto>"
    with _onnx_file(onnx_model_or_path) as path, _evaluating(module):
        source = OnnxRunner(path, input_shape=input_shape)
        return verify(source, TorchModuleRunner(module, source.spec), hop, settings, source_label=label,
                      target_label="<GraphModule returned by onnx2torch.convert>")


@contextmanager
def _onnx_file(onnx_model_or_path) -> Iterator[Path]:
    """A path ONNX Runtime can load: the user's file, or the ModelProto written to a temporary file."""
    if isinstance(onnx_model_or_path, (str, Path)):
        yield Path(onnx_model_or_path)
        return
    with model_file(onnx_model_or_path.SerializeToString(), ".onnx") as path:
        yield path


@contextmanager
def _evaluating(module) -> Iterator[None]:
    """Validate in eval mode (BatchNorm must not update its statistics), then hand the module back as it was."""
    training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(training)
