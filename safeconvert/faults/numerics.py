"""Weight perturbations shared by the ONNX and TFLite injectors, so both formats get the same fault."""

from __future__ import annotations

import numpy as np


def round_fp16(weights: np.ndarray) -> np.ndarray:
    """What a converter storing the layer in float16 and computing in float32 produces."""
    return weights.astype(np.float16).astype(np.float32)


def fake_quant_int8(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Symmetric int8 with one scale for the whole tensor, dequantised back to float32.

    One scale per tensor is what hurts depthwise kernels whose channels differ widely in range, which is
    the known failure of weight-only quantisation on MobileNet-style models.
    """
    peak = float(np.abs(weights).max())
    scale = peak / 127.0 if peak > 0 else 1.0
    quantised = np.clip(np.round(weights / scale), -127, 127)
    return (quantised * scale).astype(np.float32), scale


def change_summary(old: np.ndarray, new: np.ndarray) -> dict[str, float]:
    """How large a weight change is: max absolute and relative-to-range, for the fault's details."""
    delta = float(np.abs(new.astype(np.float64) - old.astype(np.float64)).max())
    span = float(np.abs(old).max()) or 1.0
    return {"max_abs_change": delta, "max_rel_change": delta / span, "elements": int(old.size)}
