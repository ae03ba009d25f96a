"""Size limits that stop an absurd model or image before anything is allocated for it.

A corrupt or hostile file can declare an input of a billion elements; building even one calibration batch
for it would exhaust memory long before any framework complains. Real image models are far below these
limits (MobileNetV2: 150,528 input elements; a 2048x2048 RGB input: 12.6 million).
"""

from __future__ import annotations

import math
from typing import Iterable

from ..errors import BadInputError

MAX_IMAGE_ELEMENTS = 2**24  # one input image (H x W x C): 16.8 million values, 64 MB as float32
MAX_TENSOR_ELEMENTS = 2**28  # any one tensor a model declares: 1 GB as float32


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
