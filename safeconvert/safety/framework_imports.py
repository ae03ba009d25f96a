"""Import the heavy frameworks with Ctrl-C and SIGTERM held back, so an interruption cannot crash them.

A signal handled while a C extension initialises makes Python raise inside the extension's init; onnx's does
not survive that: Ctrl-C during `import tf2onnx` (which imports onnx) segfaulted safeconvert here in 4 of 8
tries, leaving its scratch directory behind and no message. Frameworks are therefore imported before first
use with the signals held (`signals.signals_deferred`), and the interruption is acted on as soon as the
import returns: a Ctrl-C during TensorFlow's start-up takes effect a few seconds later, but cleanly.
"""

from __future__ import annotations

import importlib
import sys
from typing import Iterable

from ..formats import Format
from .signals import signals_deferred

FORMAT_MODULES: dict[Format, tuple[str, ...]] = {
    Format.KERAS: ("tensorflow",),
    Format.SAVEDMODEL: ("tensorflow",),
    Format.ONNX: ("onnxruntime",),
    Format.TFLITE: ("ai_edge_litert.interpreter",),
    Format.TORCH_EXPORT: ("torch",),
    Format.TORCHSCRIPT: ("torch",),
}
CONVERTER_MODULES: dict[str, tuple[str, ...]] = {
    "tf2onnx": ("tensorflow", "onnx", "tf2onnx", "tf2onnx.tf_loader", "tf2onnx.convert"),
    "tflite-converter": ("tensorflow",),
    "onnx2torch": ("torch", "onnx"),
    "tf2onnx-savedmodel": ("tensorflow", "onnx", "tf2onnx", "tf2onnx.tf_loader", "tf2onnx.convert"),
    "keras-export": ("tensorflow",),
    "onnx2torch-export": ("torch", "onnx"),
    "torch.onnx": ("torch", "onnx", "onnxscript"),
    "torch.onnx-dynamo": ("torch", "onnx", "onnxscript"),
    "torch.onnx-torchscript": ("torch", "onnx"),
    "onnx2tf": ("tensorflow", "onnx", "onnx2tf"),
    "onnx2tf-tflite": ("tensorflow", "onnx", "onnx2tf"),
    "onnx2tf-fused": ("tensorflow", "onnx", "onnx2tf", "onnxruntime"),
    "onnx2tf-fused-tflite": ("tensorflow", "onnx", "onnx2tf", "onnxruntime"),
}


def import_for_format(fmt: Format) -> None:
    import_uninterrupted(FORMAT_MODULES.get(fmt, ()))


def import_for_converter(name: str) -> None:
    import_uninterrupted(CONVERTER_MODULES.get(name, ()))


def import_uninterrupted(names: Iterable[str]) -> None:
    """Import `names` (TensorFlow through its quiet start-up) with SIGINT/SIGTERM held until all are loaded.

    A module that fails to import is left for its real import site to report, with its usual message.
    """
    missing = [name for name in names if name not in sys.modules]
    if not missing:
        return
    with signals_deferred():
        for name in missing:
            try:
                _import(name)
            except Exception:  # not installed or broken: the code that needs it says so in its own words
                pass


def _import(name: str) -> None:
    if name == "tensorflow":
        from ..runners.tf_runner import quiet_tensorflow

        quiet_tensorflow()
    else:
        importlib.import_module(name)
