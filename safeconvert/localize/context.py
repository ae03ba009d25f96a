"""What localization works on: source and target in the common Relax form, aligned, plus the evidence
from validation (which images disagree) and the route (which converter options were in effect)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..formats import Format
from ..report import Hop
from ..validators.calibration import CalibrationSet
from ..validators.preprocess import Preprocessing
from ..validators.validate import Validation

# Localization runs only a few images through TVM (untuned CPU execution is ~0.2 s/image for MobileNetV2,
# several seconds for ResNet101): the most disagreeing ones, where a fault shows most clearly.
DIVERGENCE_IMAGES = 2


@dataclass
class LocalizationInput:
    """Everything a localization run needs; `target_ir_path` is what gets imported for the target
    (the target itself, or the ONNX it was made from when the target format has no Relax frontend)."""

    source: Path
    source_format: Format
    target: Path
    target_format: Format
    calib: CalibrationSet
    preprocessing: Preprocessing
    validation: Validation
    route: list[Hop] = field(default_factory=list)
    target_ir_path: Path | None = None
    quantisation_requested: bool = False


@dataclass
class IrPair:
    """Both models imported, normalised, enumerated and aligned (the expensive, reusable part)."""

    source: Any  # safeconvert.ir.IrModel
    target: Any
    alignment: Any  # safeconvert.ir.Alignment
    seconds: dict[str, float] = field(default_factory=dict)


# The source's IR (and its compiled tap runner, built on first use) by file identity: repair rounds and
# several targets of one source import, normalise and compile the source once.
_SOURCE_IR: dict[tuple, Any] = {}


def source_ir(source: Path, source_format: Format):
    from ..ir import load_ir
    from ..validators.validate import file_identity

    key = (file_identity(source), source_format)
    if key not in _SOURCE_IR:
        if len(_SOURCE_IR) >= 2:
            _SOURCE_IR.pop(next(iter(_SOURCE_IR)))
        _SOURCE_IR[key] = load_ir(source, source_format)
    return _SOURCE_IR[key]


def build_ir_pair(source: Path, source_format: Format, target: Path, target_format: Format) -> IrPair:
    """Import both sides into Relax and align their layers."""
    from ..ir import align_layers, load_ir

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    source_ir_model = source_ir(source, source_format)
    seconds["import_source"] = time.perf_counter() - started
    started = time.perf_counter()
    target_ir = load_ir(target, target_format)
    seconds["import_target"] = time.perf_counter() - started
    started = time.perf_counter()
    alignment = align_layers(source_ir_model.layers, target_ir.layers)
    seconds["align"] = time.perf_counter() - started
    return IrPair(source_ir_model, target_ir, alignment, seconds)


def divergence_indices(validation: Validation, names: list[str], limit: int = DIVERGENCE_IMAGES) -> list[int]:
    """Images to trace through both models: the disagreeing ones first, then the largest output gaps."""
    count = len(validation.source_outputs)
    source, target = validation.source_outputs.reshape(count, -1), validation.target_outputs.reshape(count, -1)
    # Outputs of different shapes (a structural fault) have no per-image gap: every image is as far off.
    gap = np.abs(source - target).max(axis=1) if source.shape == target.shape else np.zeros(count)
    disagreeing = {d.image for d in validation.metrics.disagreements}
    return sorted(range(count), key=lambda i: (names[i] not in disagreeing, -gap[i]))[:limit]
