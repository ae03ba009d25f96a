"""Which model files can run code from the file when loaded, and the gate that refuses them by default.

* TorchScript (.pt): `torch.jit.load` compiles the archive's TorchScript and runs its `__setstate__`
  methods while loading. TorchScript is not arbitrary Python, but it reaches every registered operator,
  including `aten::from_file`, which maps any file shared and writable: a small scripted module overwrote
  a file of its choosing during `torch.jit.load` (tests/robustness/test_trust.py). torch's own docs warn that
  torch.jit.load can execute arbitrary code, and torch >= 2.6 stopped `torch.load(weights_only=True)`
  from dispatching to it. There is no way to vet TorchScript statically, so it needs the user's trust.
* torch.export (.pt2): torch.export.load can run code in several ways (see torch_export_audit); archives
  in the plain layout torch.export.save writes pass a static audit and load without trust.
* Keras (.keras/.h5): always loaded with safe_mode=True, which refuses Lambda layers (marshalled Python
  bytecode) and classes outside Keras; --trust-model-code does not change that.
* SavedModel: no Python is stored, but its graphs can hold TensorFlow operations that read and write
  files; saved_model_audit refuses those in whatever loading and the signatures run (a TF1 restore op
  included), except the checkpoint read from the path TensorFlow feeds.
* ONNX, TFLite: data-only formats run by their runtimes' own operators, with no file-system operators
  (ONNX external data outside the model's folder is refused by onnx.checker in the probe).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import BadInputError
from ..formats import Format

TRUST_FLAG = "--trust-model-code"


class UntrustedModelError(BadInputError):
    """Loading the model would run code from the file, and the user did not say they trust it."""


def check_trusted(path: Path, fmt: Format, trusted: bool) -> None:
    """Raise UntrustedModelError when loading `path` could run code from it and `trusted` is False."""
    if trusted:
        return
    path = Path(path)
    if fmt is Format.TORCHSCRIPT:
        raise UntrustedModelError(
            f"{path.name}: a TorchScript archive runs its own code when loaded (torch.jit.load; it can read and "
            f"write files); pass {TRUST_FLAG} if you trust its author, or give a torch.export .pt2 instead"
        )
    if fmt is Format.TORCH_EXPORT:
        from .torch_export_audit import NeedsTrust, audit_torch_export

        try:
            audit_torch_export(path)
        except NeedsTrust as exc:
            raise UntrustedModelError(
                f"{path.name}: torch.export.load could run code from this file: {exc}; pass {TRUST_FLAG} if you "
                "trust its author"
            ) from None
    if fmt is Format.SAVEDMODEL:
        from .saved_model_audit import NeedsTrust as GraphNeedsTrust
        from .saved_model_audit import audit_saved_model

        try:
            audit_saved_model(path)
        except GraphNeedsTrust as exc:
            raise UntrustedModelError(f"{path.name}: {exc}; pass {TRUST_FLAG} if you trust its author") from None


def explain_keras_refusal(path: Path, exc: BaseException) -> str | None:
    """A one-line reason when Keras' safe mode refused code or an unknown class in the file, else None."""
    text = str(exc)
    if "safe_mode" in text and "Lambda" in text:
        return (f"{Path(path).name}: the model holds Python code (a Lambda layer); safeconvert loads Keras files in "
                "safe mode only and never runs code stored in them")
    if "safe_mode" in text:
        return f"{Path(path).name}: the model holds Python code that Keras' safe mode refuses to load"
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if missing:
        return (f"{Path(path).name}: the model uses '{missing.group(1)}', a custom class or function that is not part "
                "of Keras; safeconvert does not load code from outside Keras")
    return None
