"""Entry points: list the sites of a fault kind in a model and plant one, dispatching on the model's format.

A seed picks the site when none is given, so a benchmark that sweeps seeds plants the fault in several layers,
and the same seed always plants the same fault (byte-identical files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..formats import Format, detect_format
from .fault import FaultNotApplicableError, InjectedFault
from .kinds import ONNX, TFLITE, kind_named


def _format(model_path: Path) -> str:
    fmt = detect_format(Path(model_path))
    if fmt is Format.ONNX:
        return ONNX
    if fmt is Format.TFLITE:
        return TFLITE
    raise FaultNotApplicableError(
        f"faults are planted in ONNX or TFLite models, not {fmt.value}; for a PyTorch target use inject_torch on its ONNX source"
    )


def list_sites(model_path: Path, kind: str) -> list[str]:
    """The layers `kind` can be planted in, in graph order (ONNX node names, TFLite tensor names)."""
    fmt = _format(model_path)
    kind_named(kind, fmt)
    if fmt == ONNX:
        from .onnx_inject import onnx_sites

        return onnx_sites(Path(model_path), kind)
    from .tflite_inject import tflite_sites

    return tflite_sites(Path(model_path), kind)


def choose_site(sites: list[str], seed: int) -> str:
    """The site a seed selects, uniformly among the candidates."""
    return sites[int(np.random.default_rng(seed).integers(len(sites)))]


def inject(model_path: Path, out_path: Path, kind: str, layer: str | None = None, seed: int = 0,
           params: dict | None = None) -> InjectedFault:
    """Write a copy of `model_path` with one fault of `kind` at `layer` (chosen by `seed` when None).

    params overrides a kind's default values (e.g. {"factor": 1/255} for input_scale, {"epsilon": 1e-2} for
    bn_epsilon, {"stride": 3}, {"max_factor": 0.25} for clip_bounds).
    """
    fmt = _format(model_path)
    spec = kind_named(kind, fmt)
    if layer is None:
        sites = list_sites(model_path, kind)
        if not sites:
            raise FaultNotApplicableError(f"{Path(model_path).name} has no site for fault kind {kind!r}")
        layer = choose_site(sites, seed)
    if fmt == ONNX:
        from .onnx_inject import onnx_inject as plant
    else:
        from .tflite_inject import tflite_inject as plant
    change = plant(Path(model_path), Path(out_path), kind, layer, dict(params or {}))
    return InjectedFault(spec.category, layer, kind, change.description, change.details)
