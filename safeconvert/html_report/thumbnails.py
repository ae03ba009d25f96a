"""Small JPEG thumbnails of calibration images as data: URIs, so the page shows the photos whose label changed
without linking to files that may move (the page is one self-contained file)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

THUMB_SIZE = 96  # CSS pixels; drawn at 2x for sharp rendering on high-density screens
JPEG_QUALITY = 82


def thumbnail_uri(disagreement: dict, calibration: dict) -> str | None:
    """The image of one disagreement (its recorded file, or its row of a .npy set), or None when it is gone."""
    from ..errors import SafeConvertError

    try:
        pixels = _pixels(disagreement, calibration)
    except (OSError, ValueError, IndexError, SafeConvertError):  # moved, unreadable: the page says so
        return None
    return None if pixels is None else _jpeg_uri(pixels)


def _pixels(disagreement: dict, calibration: dict) -> np.ndarray | None:
    path = disagreement.get("image_path")
    if path and Path(path).is_file():
        from ..validators.calibration import read_image

        return read_image(Path(path))
    source, index = calibration.get("source"), disagreement.get("image_index", -1)
    if source and (Path(source) / disagreement["image"]).is_file():  # reports written before image_path existed
        from ..validators.calibration import read_image

        return read_image(Path(source) / disagreement["image"])
    if source and str(source).lower().endswith(".npy") and index >= 0 and Path(source).is_file():
        return _npy_row(Path(source), index)
    return None


def _npy_row(path: Path, index: int) -> np.ndarray:
    """One image of a .npy calibration set as uint8 RGB (float rows are stretched to 0..255 for display)."""
    row = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False)[index])
    if row.shape[0] in (1, 3) and row.shape[-1] not in (1, 3):
        row = np.transpose(row, (1, 2, 0))
    if row.dtype.kind == "f":
        span = float(row.max() - row.min()) or 1.0
        row = (row - row.min()) * (255.0 / span)
    row = np.clip(row, 0, 255).astype(np.uint8)
    return np.repeat(row, 3, axis=2) if row.shape[2] == 1 else row[..., :3]


def _jpeg_uri(pixels: np.ndarray) -> str:
    """Centre-cropped square (what a classifier sees after its centre crop), as a base64 JPEG data URI."""
    from PIL import Image, ImageOps

    side = THUMB_SIZE * 2
    image = ImageOps.fit(Image.fromarray(pixels), (side, side), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
