"""Calibration sets: a directory of images or a .npy array, read lazily in batches.

Images are decoded on demand (a thread pool decodes a batch in parallel) so a large set never has to
sit in memory at once. Anything PIL opens is accepted, converted to 8-bit RGB: grayscale, palette,
RGBA and 16-bit images are handled rather than rejected. A .npy is judged from its header (shape, dtype,
size) before any data is read, then memory-mapped: batches are converted as they are read, never the whole
array (a sparse file of gigabytes takes a few KB on disk). Both kinds are bounded in images and bytes
(safety.limits), so a hostile set is refused up front instead of exhausting memory or time.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import BadInputError, one_line
from ..safety.limits import (CALIB_BYTES_VARIABLE, CALIB_IMAGES_VARIABLE, IMAGE_PIXELS_VARIABLE, MAX_IMAGE_ELEMENTS,
                             limit, raise_hint)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def default_calibration_dir() -> Path:
    """The 42 real photographs shipped inside the package (licences in SOURCES.md beside them)."""
    return Path(str(resources.files("safeconvert") / "data" / "calib"))


@dataclass
class CalibrationSet:
    """Names of the calibration items and how to read them as uint8 RGB images or ready tensors.

    `array` is set for a .npy set (memory-mapped, NHWC, its stored dtype); `paths` for an image directory.
    A float .npy holds inputs that are already preprocessed, so no preset is applied to them; an integer one
    holds pixels, turned into uint8 RGB batch by batch as they are read.
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
            batch = np.asarray(self.array[start:stop])
            if batch.dtype.kind in "ui":
                batch = _as_rgb(np.clip(batch, 0, 255).astype(np.uint8), self.source)
            return list(batch)
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
    _check_set_size(path.name, len(files), sum(f.stat().st_size for f in files), "its image files")
    for file in files:  # check every image up front: a bad file should fail the run before any conversion
        _check_image(file)
    return CalibrationSet(str(path), [f.name for f in files], paths=files)


def _check_set_size(name: str, images: int, size: int, what: str) -> None:
    """Refuse a set with more images or bytes than the limits, before anything of it is decoded."""
    if images > limit(CALIB_IMAGES_VARIABLE):
        raise BadInputError(f"calibration set {name}: {images:,} images, more than the limit of "
                            f"{limit(CALIB_IMAGES_VARIABLE):,} ({raise_hint(CALIB_IMAGES_VARIABLE)})")
    if size > limit(CALIB_BYTES_VARIABLE):
        raise BadInputError(f"calibration set {name}: {what} take {size:,} bytes, more than the limit of "
                            f"{limit(CALIB_BYTES_VARIABLE):,} ({raise_hint(CALIB_BYTES_VARIABLE)})")


def _load_npy(path: Path) -> CalibrationSet:
    if path.suffix.lower() != ".npy":
        raise BadInputError(f"calibration set must be a directory of images or a .npy file, got {path.name}")
    shape, dtype = _npy_header(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise BadInputError(f"{path.name}: not a readable .npy array ({one_line(exc)})") from None
    if tuple(array.shape) != shape or array.dtype != dtype:
        raise BadInputError(f"{path.name}: not a readable .npy array (its header changed while it was read)")
    if array.shape[1] in (1, 3) and array.shape[3] not in (1, 3):
        array = np.transpose(array, (0, 2, 3, 1))  # NCHW -> NHWC, the canonical layout here (a view, no copy)
    if array.dtype.kind in "ui" and array.shape[3] not in (1, 3, 4):
        raise BadInputError(f"{path.name}: uint8 images need 1, 3 or 4 channels, the array has {array.shape[3]}")
    if array.dtype.kind == "f":
        _check_finite(array, path.name)
    return CalibrationSet(str(path), [f"{path.name}[{i}]" for i in range(array.shape[0])], array=array)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the .npy header alone, refused when the data would be unusable or too large."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle, max_header_size=10_000)
            elif version in ((2, 0), (3, 0)):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle, max_header_size=10_000)
            else:
                raise ValueError(f"unknown .npy version {version}")
            offset = handle.tell()
    except Exception as exc:
        raise BadInputError(f"{path.name}: not a readable .npy array ({one_line(exc)})") from None
    if dtype.hasobject or dtype.names is not None:
        raise BadInputError(f"{path.name}: the array holds Python objects or records ({dtype}); safeconvert never "
                            "unpickles a calibration set")
    if len(shape) != 4 or shape[0] == 0:
        raise BadInputError(f"{path.name}: expected an N x H x W x C (or N x C x H x W) array with N > 0, "
                            f"got shape {list(shape)}")
    if dtype.kind not in "uif":
        raise BadInputError(f"{path.name}: unsupported array dtype {dtype}")
    if min(shape[1:]) <= 0:
        raise BadInputError(f"{path.name}: the images are empty (shape {list(shape)})")
    if math.prod(shape[1:]) > MAX_IMAGE_ELEMENTS:
        raise BadInputError(f"{path.name}: {math.prod(shape[1:]):,} values per image, more than the limit of "
                            f"{MAX_IMAGE_ELEMENTS:,}")
    size = math.prod(shape) * dtype.itemsize
    _check_set_size(path.name, shape[0], size, "its data")
    if path.stat().st_size < offset + size:
        raise BadInputError(f"{path.name}: the file is truncated (its header declares {size:,} bytes of data)")
    return tuple(shape), dtype


def _check_finite(array: np.ndarray, name: str, chunk_bytes: int = 64 << 20) -> None:
    """NaN or infinity anywhere refuses the set; scanned in chunks so memory stays bounded."""
    per_item = max(1, array[0].nbytes)
    step = max(1, chunk_bytes // per_item)
    for start in range(0, len(array), step):
        if not np.isfinite(array[start:start + step]).all():
            raise BadInputError(f"{name}: the array holds NaN or infinite values")


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
            pixels = image.size[0] * image.size[1]
            if pixels > limit(IMAGE_PIXELS_VARIABLE):
                raise BadInputError(f"calibration image {path.name} has {pixels:,} pixels, more than the limit of "
                                    f"{limit(IMAGE_PIXELS_VARIABLE):,} ({raise_hint(IMAGE_PIXELS_VARIABLE)})")
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
