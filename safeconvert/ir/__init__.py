"""The TVM bridge: models of any format in one Relax form, to compare and localise conversion faults.

    model = load_ir("model.onnx")                # import + normalise (NCHW/OIHW) + enumerate layers
    reference = load_ir(keras_model)            # Keras: via unoptimised float TFLite
    alignment = align_layers(reference.layers, model.layers)
    diffs = diff_alignment(alignment)           # effective weights / attributes that differ
    outputs = model.run_taps(batch, [p.target.index for p in alignment.pairs])

Modules: importers (ONNX/TFLite/torch.export -> Relax, origins kept), dequantise (quantised models as float
models carrying their quantised weights), keras_reference (Keras/SavedModel reference path and its parameter
check), normalise, layers, align, compare, taps, model (IrModel), with naming and rebuild as internals. TVM and the frameworks are imported only when these names are used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IrModel": "model",
    "load_ir": "model",
    "ImportedModel": "importers",
    "import_model": "importers",
    "import_onnx": "importers",
    "import_tflite": "importers",
    "import_torch_export": "importers",
    "import_keras": "keras_reference",
    "keras_to_tflite": "keras_reference",
    "check_keras_parameters": "keras_reference",
    "ParameterCheck": "keras_reference",
    "normalise": "normalise",
    "NormaliseStats": "normalise",
    "Layer": "layers",
    "enumerate_layers": "layers",
    "INPUT": "layers",
    "Origin": "naming",
    "Alignment": "align",
    "LayerPair": "align",
    "align_layers": "align",
    "PairDiff": "compare",
    "diff_pair": "compare",
    "diff_alignment": "compare",
    "relative_error": "compare",
    "first_divergence": "compare",
    "TapRunner": "taps",
    "TapOutputs": "taps",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
