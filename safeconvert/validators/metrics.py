"""Compare source and target outputs on the same images: label agreement and numeric closeness."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# Below this source top-1/top-2 logit margin a label flip can come from float noise alone.
NEAR_TIE_MARGIN = 1e-3


@dataclass
class Disagreement:
    """One image whose top-1 label differs between source and target."""

    image: str
    source_label: int
    target_label: int
    source_top5: list[int]
    target_top5: list[int]
    source_margin: float  # source top-1 minus top-2 score: small means the source itself hesitates
    image_index: int = -1  # position in the calibration set (a .npy row when there is no file)
    image_path: str | None = None  # absolute path of the photo, so a report can show it later


@dataclass
class Metrics:
    """How far the target's outputs are from the source's over a calibration set."""

    images: int
    top1_agreement: float
    top1_mismatches: int
    top5_agreement: float  # share of images whose top-5 label sets are identical
    max_abs_diff: float
    mean_abs_diff: float
    cosine_similarity: float  # mean over images
    source_output_range: float
    output_shape_matches: bool = True
    output_size: int | None = None  # values per image (1000 for ImageNet classifiers): whether labels have names
    disagreements: list[Disagreement] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def relative_max_diff(self) -> float:
        return self.max_abs_diff / self.source_output_range if self.source_output_range > 0 else float(self.max_abs_diff > 0)


def compare_outputs(source: np.ndarray, target: np.ndarray, names: list[str], paths: list | None = None) -> Metrics:
    """Metrics of target vs source outputs (one row per image, any trailing shape).

    paths (one per image, when the images are files) are recorded with each disagreement, so a report
    written later can show the photos whose label changed.
    """
    src = source.reshape(len(source), -1).astype(np.float64)
    tgt = target.reshape(len(target), -1).astype(np.float64)
    if src.shape != tgt.shape:
        return _shape_mismatch(src, tgt)
    src_order, tgt_order = np.argsort(-src, axis=1), np.argsort(-tgt, axis=1)
    src_top1, tgt_top1 = src_order[:, 0], tgt_order[:, 0]
    k = min(5, src.shape[1])
    same_top5 = [set(a[:k]) == set(b[:k]) for a, b in zip(src_order, tgt_order)]
    diff = np.abs(src - tgt)
    mismatched = np.flatnonzero(src_top1 != tgt_top1)
    return Metrics(
        images=len(src),
        top1_agreement=float(np.mean(src_top1 == tgt_top1)),
        top1_mismatches=int(len(mismatched)),
        top5_agreement=float(np.mean(same_top5)),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        cosine_similarity=float(np.mean(_cosine(src, tgt))),
        source_output_range=float(src.max() - src.min()),
        output_size=int(src.shape[1]),
        disagreements=[_disagreement(i, names, src, src_order, tgt_order, paths) for i in mismatched],
    )


def source_margins(source: np.ndarray) -> np.ndarray:
    """Per-image top-1 minus top-2 score of the source model."""
    flat = source.reshape(len(source), -1)
    if flat.shape[1] < 2:
        return np.full(len(flat), np.inf)
    top2 = np.sort(flat, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _disagreement(i: int, names: list[str], src: np.ndarray, src_order: np.ndarray, tgt_order: np.ndarray,
                  paths: list | None = None) -> Disagreement:
    margin = float(src[i, src_order[i, 0]] - src[i, src_order[i, 1]]) if src.shape[1] > 1 else float("inf")
    return Disagreement(
        image=names[i],
        source_label=int(src_order[i, 0]),
        target_label=int(tgt_order[i, 0]),
        source_top5=[int(v) for v in src_order[i, :5]],
        target_top5=[int(v) for v in tgt_order[i, :5]],
        source_margin=margin,
        image_index=int(i),
        image_path=str(Path(paths[i]).resolve()) if paths else None,
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)


def _shape_mismatch(src: np.ndarray, tgt: np.ndarray) -> Metrics:
    return Metrics(
        images=len(src),
        top1_agreement=0.0,
        top1_mismatches=len(src),
        top5_agreement=0.0,
        max_abs_diff=float("inf"),
        mean_abs_diff=float("inf"),
        cosine_similarity=0.0,
        source_output_range=float(src.max() - src.min()) if src.size else 0.0,
        output_shape_matches=False,
    )
