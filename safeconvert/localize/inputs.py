"""Input stage (PP, ID): does the target read its input differently from the source?

Tried directly on the target in its own runtime (fast): for each candidate input transform T — a
height/width swap, channels-first data read through a channels-last shape (or the reverse), reversed
channel order, another preprocessing preset's scaling — check whether target(T(x)) reproduces
source(x). A transform that does is the fault's exact inverse: the finding names it and the repair folds
it into the target's input, so the target then takes the same tensors as the source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ..validators.preprocess import IMAGENET_MEAN, IMAGENET_STD, CAFFE_BGR_MEAN, PRESETS
from ..repair.onnx_edit import InputTransform
from .findings import Category, Finding, RepairProposal


@dataclass
class InputCandidate:
    """A compensating transform: how to write it into a model, what it means, and how to apply it here."""

    transform: InputTransform
    label: str
    category: Category
    apply: Callable[[np.ndarray], np.ndarray] = field(repr=False)


def candidates(layout: str, shape: tuple[int, ...], source_preset: str) -> list[InputCandidate]:
    """Candidate compensating transforms for a model whose input has `layout` and `shape` (N first)."""
    channel_axis = 3 if layout == "NHWC" else 1
    h_axis, w_axis = (1, 2) if layout == "NHWC" else (2, 3)
    found: list[InputCandidate] = []
    if shape[h_axis] == shape[w_axis]:
        axes = list(range(4))
        axes[h_axis], axes[w_axis] = w_axis, h_axis
        t = InputTransform.permute(axes)
        found.append(InputCandidate(t, "height and width swapped", Category.ID, lambda x, a=tuple(axes): np.ascontiguousarray(x.transpose(a))))
    other = "NCHW" if layout == "NHWC" else "NHWC"
    to_other = (0, 3, 1, 2) if layout == "NHWC" else (0, 2, 3, 1)
    t = InputTransform.reinterpret(layout, other)
    found.append(InputCandidate(t, f"{other} data read through the declared {layout} shape", Category.ID, lambda x, p=to_other: np.ascontiguousarray(x.transpose(p)).reshape(x.shape)))
    t = InputTransform.channel_reverse(channel_axis)
    found.append(InputCandidate(t, "channel order reversed (RGB <-> BGR)", Category.PP, lambda x, c=channel_axis: np.ascontiguousarray(np.flip(x, axis=c))))
    for label, scale, shift in _rescalings(source_preset):
        t = InputTransform.affine(scale, shift, channel_axis)
        found.append(InputCandidate(t, label, Category.PP, _affine(scale, shift, channel_axis)))
    return found


def _affine(scale: list[float], shift: list[float], axis: int) -> Callable[[np.ndarray], np.ndarray]:
    shape = [1, 1, 1, 1]
    shape[axis] = len(scale)
    s, b = np.reshape(np.float32(scale), shape), np.reshape(np.float32(shift), shape)
    return lambda x: (x * s + b).astype(np.float32)


def _rescalings(source_preset: str) -> list[tuple[str, list[float], list[float]]]:
    """Affine maps from the source's preprocessing to each other preset's, plus plain x255 / /255."""
    found = [("input scaled by 1/255", [1 / 255.0], [0.0]), ("input scaled by 255", [255.0], [0.0])]
    to_pixels = _pixels_from(source_preset)
    if to_pixels is None:
        return found
    for preset in PRESETS:
        if preset in (source_preset, "none", "caffe"):
            continue
        a1, b1 = to_pixels
        a2, b2 = _pixels_to(preset)
        found.append((f"the target expects '{preset}' preprocessing, the source '{source_preset}'", list(a2 * a1), list(a2 * b1 + b2)))
    return found


def _pixels_from(preset: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) with pixels = a * x + b for a tensor x preprocessed with `preset` (per RGB channel)."""
    if preset == "torch":
        return IMAGENET_STD * 255.0, IMAGENET_MEAN * 255.0
    if preset == "tf":
        return np.full(3, 127.5), np.full(3, 127.5)
    if preset == "raw":
        return np.full(3, 255.0), np.zeros(3)
    if preset == "none":
        return np.ones(3), np.zeros(3)
    return None  # caffe reorders channels: not an affine map per channel of the same index


def _pixels_to(preset: str) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with x = a * pixels + b for `preset`."""
    if preset == "torch":
        return 1.0 / (255.0 * IMAGENET_STD), -IMAGENET_MEAN / IMAGENET_STD
    if preset == "tf":
        return np.full(3, 1 / 127.5), np.full(3, -1.0)
    if preset == "raw":
        return np.full(3, 1 / 255.0), np.zeros(3)
    return np.ones(3), np.zeros(3)


def input_findings(target_runner, batch_nhwc: np.ndarray, source_outputs: np.ndarray, source_preset: str,
                   tolerance: float) -> list[Finding]:
    """Try each candidate on the target; report one that makes it reproduce the source."""
    from ..validators.preprocess import to_model_layout

    model_input = to_model_layout(batch_nhwc, target_runner.spec)
    reference = source_outputs.reshape(len(source_outputs), -1)
    span = float(reference.max() - reference.min()) or 1.0
    outputs = target_runner.run(model_input)
    if outputs.reshape(len(outputs), -1).shape != reference.shape:
        return []  # an input transform never changes the output's shape: the fault is inside the model
    baseline = _gap(outputs, reference) / span
    if baseline <= tolerance:
        return []
    shape = tuple(model_input.shape)
    for candidate in candidates(target_runner.spec.layout, shape, source_preset):
        scales = len(candidate.transform.scale)
        if scales not in (1, shape[target_runner.spec.layout.index("C")]):
            continue  # a per-RGB-channel map on a model with other channels
        # Screen on the most disagreeing image alone (most candidates fail there: one run instead of a
        # batch, which matters for large models), then confirm on all of them.
        if _gap(target_runner.run(candidate.apply(model_input[:1])), reference[:1]) / span > tolerance:
            continue
        gap = _gap(target_runner.run(candidate.apply(model_input)), reference) / span
        if gap <= tolerance:
            return [_finding(candidate, baseline, gap)]
    return []


def _gap(outputs: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(outputs.reshape(len(outputs), -1) - reference).max())


def _finding(candidate: InputCandidate, before: float, after: float) -> Finding:
    t = candidate.transform
    noun = "input layout" if candidate.category is Category.ID else "preprocessing"
    return Finding(
        category=candidate.category,
        summary=f"{noun}: the target reads its input differently: {candidate.label}",
        target_layer="(input)",
        evidence={"relative_gap_before": before, "relative_gap_with_transform": after, "transform": {"label": candidate.label, **asdict(t)}},
        repair=RepairProposal("input_transform", {"transform": t}),
        score=1.0,
    )
