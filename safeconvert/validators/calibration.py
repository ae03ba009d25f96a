"""Calibration sets: a directory of images or a .npy array, read lazily in batches.

Images are decoded on demand (a thread pool decodes a batch in parallel) so a large set never has to
sit in memory at once. Anything PIL opens is accepted, converted to 8-bit RGB: grayscale, palette,
RGBA and 16-bit images are handled rather than rejected.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import BadInputError, one_line

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def default_calibration_dir() -> Path:
    """The 42 real photographs shipped inside the package (licences in SOURCES.md beside them)."""
    return Path(str(resources.files("safeconvert") / "data" / "calib"))


@dataclass
class CalibrationSet:
    """Names of the calibration items and how to read them as uint8 RGB images or ready tensors.

    `array` is set for a .npy set; `paths` for an image directory. A float .npy holds inputs that are
    already preprocessed (NHWC), so no preset is applied to them.
    """

    source: str
    names: list[str]
    paths: list[Path] = field(default_factory=list)
    array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def preprocessed(self) -> bool:
        return self.array is not None and self.array.dtype.kind == "f"

    def subset(self, indices: list[int]) -> "CalibrationSet":
        """The same set restricted to some items, e.g. the images that disagree."""
        return CalibrationSet(
            self.source,
            [self.names[i] for i in indices],
            [self.paths[i] for i in indices] if self.paths else [],
            self.array[indices] if self.array is not None else None,
        )

    def read(self, start: int, stop: int) -> list[np.ndarray]:
        """Items start..stop as HxWxC arrays (uint8 RGB images, or float tensors for a float .npy)."""
        if self.array is not None:
            return [np.asarray(item) for item in self.array[start:stop]]
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(read_image, self.paths[start:stop]))

    def iter_chunks(self, size: int) -> Iterator[tuple[int, list[np.ndarray]]]:
        for start in range(0, len(self), size):
            yield start, self.read(start, min(start + size, len(self)))


def load_calibration(path: Path | None, limit: int | None = None) -> CalibrationSet:
    """Open a calibration set (the embedded photos when path is None); fail clearly when it is unusable."""
    path = Path(path) if path is not None else default_calibration_dir()
    if not path.exists():
        raise BadInputError(f"calibration set not found: {path}")
    if not (path.is_file() or path.is_dir()):
        raise BadInputError(f"calibration set {path} is neither a directory nor a regular file")
    calib = _load_npy(path) if path.is_file() else _load_directory(path)
    if limit is not None and limit < len(calib):
        calib = calib.subset(list(range(limit)))
    return calib


def _load_directory(path: Path) -> CalibrationSet:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInputError(f"calibration directory {path} holds no images (jpg, png, bmp, webp)")
    for file in files:  # check every image up front: a bad file should fail the run before any conversion
        _check_image(file)
    return CalibrationSet(str(path), [f.name for f in files], paths=files)


def _load_npy(path: Path) -> CalibrationSet:
    if path.suffix.lower() != ".npy":
        raise BadInputError(f"calibration set must be a directory of images or a .npy file, got {path.name}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise BadInputError(f"{path.name}: not a readable .npy array ({one_line(exc)})") from None
    if array.ndim != 4 or array.shape[0] == 0:
        raise BadInputError(f"{path.name}: expected an N x H x W x C (or N x C x H x W) array with N > 0, got shape {list(array.shape)}")
    if array.dtype.kind not in "uif":
        raise BadInputError(f"{path.name}: unsupported array dtype {array.dtype}")
    if array.shape[1] in (1, 3) and array.shape[3] not in (1, 3):
        array = np.transpose(array, (0, 2, 3, 1))  # NCHW -> NHWC, the canonical layout here
    if min(array.shape[1:3]) == 0:
        raise BadInputError(f"{path.name}: the images are empty (shape {list(array.shape)})")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BadInputError(f"{path.name}: the array holds NaN or infinite values")
    if array.dtype.kind in "ui":
        array = _as_rgb(np.clip(array, 0, 255).astype(np.uint8), path.name)
    return CalibrationSet(str(path), [f"{path.name}[{i}]" for i in range(array.shape[0])], array=array)


def _as_rgb(images: np.ndarray, name: str) -> np.ndarray:
    """uint8 N x H x W x C pixels as RGB: grayscale is repeated, an alpha channel is composited over white."""
    channels = images.shape[3]
    if channels == 1:
        return np.repeat(images, 3, axis=3)
    if channels == 4:
        alpha = images[..., 3:].astype(np.float32) / 255.0
        return np.round(images[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if channels != 3:
        raise BadInputError(f"{name}: uint8 images need 1, 3 or 4 channels, the array has {channels}")
    return images


def _check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"calibration image {path.name} cannot be read ({one_line(exc)})") from None
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"calibration image {path.name} is too large ({one_line(exc)})") from None


def read_image(path: Path) -> np.ndarray:
    """Decode one image to HxWx3 uint8 RGB, whatever its mode (L, P, RGBA, I;16, CMYK...)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I"):  # 16/32-bit integer: rescale to 8 bits rather than clip
                data = np.asarray(image, dtype=np.float64)
                peak = data.max() or 1.0
                image = Image.fromarray((data * (255.0 / peak)).astype(np.uint8))
            elif image.mode == "F":
                data = np.asarray(image, dtype=np.float64)
                span = (data.max() - data.min()) or 1.0
                image = Image.fromarray(((data - data.min()) * (255.0 / span)).astype(np.uint8))
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"calibration image {path.name} cannot be decoded ({one_line(exc)})") from None
