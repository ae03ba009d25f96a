"""One runner per model format; `load_runner` picks it.

Each runner module imports its framework lazily, so loading an ONNX model never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from ..formats import Format, detect_format
from .base import Runner


def load_runner(path: Path, fmt: Format | None = None, input_shape: tuple[int, ...] | None = None) -> Runner:
    """Load `path` with the runner for its format (detected from content when not given)."""
    from ..safety.framework_imports import import_for_format

    path = Path(path)
    fmt = fmt or detect_format(path)
    import_for_format(fmt)  # with Ctrl-C held: a signal inside a C extension's init can crash it
    if fmt is Format.ONNX:
        from .onnx_runner import OnnxRunner as cls
    elif fmt is Format.TFLITE:
        from .tflite_runner import TfliteRunner as cls
    elif fmt is Format.KERAS:
        from .tf_runner import KerasRunner as cls
    elif fmt is Format.SAVEDMODEL:
        from .tf_runner import SavedModelRunner as cls
    elif fmt is Format.TORCH_EXPORT:
        from .torch_runner import TorchExportRunner as cls
    else:
        from .torch_runner import TorchScriptRunner as cls
    return cls(path, input_shape=input_shape)


__all__ = ["Runner", "load_runner"]
