"""The calibration sample onnx2tf insists on, made from the photos that ship with safeconvert.

onnx2tf 1.29 runs a test inference on every single-image-input model while converting, and reads its input
from `calibration_image_sample_data_20x128x128x3_float32.npy` in the *current working directory*; when the file
is missing it downloads it from the internet (`download_test_image_data`). safeconvert never downloads at run
time, so the wrapper runs onnx2tf in a scratch working directory where this module has written that file first:
20 of the packaged photographs, centre-cropped to 128x128, RGB scaled to 0..1 (the value range of onnx2tf's
own sample, MS-COCO images divided by 255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_COUNT = 20
SAMPLE_SIZE = 128
SAMPLE_FILE = f"calibration_image_sample_data_{SAMPLE_COUNT}x{SAMPLE_SIZE}x{SAMPLE_SIZE}x3_float32.npy"


def sample_images() -> np.ndarray:
    """20 packaged photos (sorted by name) as a 20x128x128x3 float32 array in 0..1."""
    from ..validators.calibration import IMAGE_SUFFIXES, default_calibration_dir, read_image
    from ..validators.preprocess import resize_and_crop

    photos = sorted(p for p in default_calibration_dir().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(photos) < SAMPLE_COUNT:
        raise FileNotFoundError(f"onnx2tf needs {SAMPLE_COUNT} sample photos, the package ships {len(photos)}")
    crops = [resize_and_crop(read_image(p), SAMPLE_SIZE, SAMPLE_SIZE) for p in photos[:SAMPLE_COUNT]]
    return (np.stack(crops).astype(np.float32) / 255.0).astype(np.float32)


def write_sample(directory: Path) -> Path:
    """Write the sample where onnx2tf looks for it (the directory it will run in); return its path."""
    path = Path(directory) / SAMPLE_FILE
    np.save(path, sample_images())
    return path
