"""Size limits that stop an absurd model, image or calibration set before anything is allocated for it.

A corrupt or hostile file can declare an input of a billion elements, compute one (an ONNX ConstantOfShape
of 20000 x 20000), or be a sparse .npy of gigabytes that takes 4 KB on disk; building even one batch for it
would exhaust memory long before any framework complains. Real image models and calibration sets are far
below these limits (MobileNetV2: 150,528 input elements; a 2048x2048 RGB input: 12.6 million; the 42
shipped photos: 6 MB). The limits a user may legitimately need to raise read an environment variable.
"""

from __future__ import annotations

import math
import os
from typing import Iterable

from ..errors import BadInputError

MAX_IMAGE_ELEMENTS = 2**24  # one input image (H x W x C): 16.8 million values, 64 MB as float32
MAX_TENSOR_ELEMENTS = 2**28  # any one tensor a model declares: 1 GB as float32

# Limits a user can raise, with their environment variables and defaults.
TENSOR_ELEMENTS_VARIABLE = "SAFECONVERT_MAX_TENSOR_ELEMENTS"  # any tensor an ONNX model computes
CALIB_IMAGES_VARIABLE = "SAFECONVERT_MAX_CALIB_IMAGES"
CALIB_BYTES_VARIABLE = "SAFECONVERT_MAX_CALIB_BYTES"  # a .npy's data, or an image directory's files
IMAGE_PIXELS_VARIABLE = "SAFECONVERT_MAX_IMAGE_PIXELS"  # one calibration image, decoded
DEFAULTS = {TENSOR_ELEMENTS_VARIABLE: MAX_TENSOR_ELEMENTS, CALIB_IMAGES_VARIABLE: 10_000,
            CALIB_BYTES_VARIABLE: 2 << 30, IMAGE_PIXELS_VARIABLE: 2**26}


def limit(variable: str) -> int:
    """The limit named by `variable`: its environment value when set, else its default."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return DEFAULTS[variable]
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value <= 0:
        raise BadInputError(f"{variable}={text!r}: expected a positive number")
    return value


def raise_hint(variable: str) -> str:
    return f"set {variable} to raise the limit"


def element_count(shape: Iterable[int | None]) -> int:
    """Elements of one item of `shape` (batch axis excluded); unknown dimensions count as 1."""
    dims = list(shape)[1:]
    return math.prod(int(d) for d in dims if d is not None and int(d) > 0)


def check_input_shape(shape: Iterable[int | None], name: str) -> None:
    """Refuse an input whose single image would exceed MAX_IMAGE_ELEMENTS."""
    shape = list(shape)
    count = element_count(shape)
    if count > MAX_IMAGE_ELEMENTS:
        raise BadInputError(
            f"{name}: input shape {shape} means {count:,} values per image; safeconvert refuses more than "
            f"{MAX_IMAGE_ELEMENTS:,} (the file is corrupt, or not an image model)"
        )
