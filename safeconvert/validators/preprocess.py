"""Preprocessing presets and geometry: turn calibration images into each model's input tensor.

Every model of a comparison gets the same preprocessed pixels (canonical NHWC float32); only the
layout differs per model, so a disagreement is the conversion's, never the harness's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError
from ..formats import Format, InputSpec

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)

# How each preset maps 0..255 RGB pixels; shown by `safeconvert doctor` and in the README.
PRESETS: dict[str, str] = {
    "torch": "x/255, minus ImageNet mean, divided by ImageNet std (RGB)",
    "tf": "x/127.5 - 1, i.e. [-1, 1] (RGB)",
    "caffe": "RGB -> BGR, minus the ImageNet BGR mean (0..255 scale)",
    "raw": "x/255, i.e. [0, 1] (RGB)",
    "none": "pixels as float 0..255, unchanged",
}

DEFAULT_PRESET_BY_FRAMEWORK = {"torch": "torch", "tensorflow": "tf", "onnx": "torch"}

# The short side is resized to size * 256/224 before the centre crop, as in ImageNet evaluation.
RESIZE_RATIO = 256 / 224
# Above this many pixels the intermediate resized image is not built (a 1 x 100000 image would need gigabytes).
MAX_RESIZED_PIXELS = 1 << 26


@dataclass(frozen=True)
class Preprocessing:
    """A preset plus the spatial size the source model wants."""

    preset: str
    height: int
    width: int

    def apply(self, images: list[np.ndarray]) -> np.ndarray:
        """uint8 RGB images of any size -> NHWC float32 batch at (height, width)."""
        batch = np.stack([resize_and_crop(image, self.height, self.width) for image in images]).astype(np.float32)
        return normalise(batch, self.preset)


def default_preset(fmt: Format) -> str:
    return DEFAULT_PRESET_BY_FRAMEWORK[fmt.framework]


def check_preset(name: str) -> str:
    if name not in PRESETS:
        raise BadInputError(f"unknown preprocessing '{name}' (known: {', '.join(PRESETS)})")
    return name


def normalise(batch: np.ndarray, preset: str) -> np.ndarray:
    """Apply a preset to an NHWC float batch of 0..255 RGB pixels."""
    if preset == "torch":
        return (batch / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    if preset == "tf":
        return batch / 127.5 - 1.0
    if preset == "caffe":
        return batch[..., ::-1] - CAFFE_BGR_MEAN
    if preset == "raw":
        return batch / 255.0
    if preset == "none":
        return batch
    raise BadInputError(f"unknown preprocessing '{preset}'")


def resize_and_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize so the image covers (height, width) scaled by RESIZE_RATIO, then take the centre crop."""
    from PIL import Image

    src_h, src_w = image.shape[:2]
    scale = max(height * RESIZE_RATIO / src_h, width * RESIZE_RATIO / src_w)
    new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    if new_w * new_h > MAX_RESIZED_PIXELS:  # extreme aspect ratio: resample only the part that is kept
        x_scale, y_scale = new_w / src_w, new_h / src_h
        box = (left / x_scale, top / y_scale, (left + width) / x_scale, (top + height) / y_scale)
        return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR, box=box))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    return resized[top : top + height, left : left + width]


def to_model_layout(batch_nhwc: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Lay a canonical NHWC batch out the way a model wants it (channels last or first)."""
    held = batch_nhwc.shape[1:]
    if spec.channels == 1 and batch_nhwc.shape[-1] == 3:
        batch_nhwc = batch_nhwc.mean(axis=-1, keepdims=True)
    if not fits(batch_nhwc.shape[1:], spec):
        raise BadInputError(f"your calibration set does not match the model's input {model_input_shape(spec)}: "
                            f"its images are {held[0]}x{held[1]} with {held[2]} channel(s)")
    out = batch_nhwc if spec.layout == "NHWC" else np.transpose(batch_nhwc, (0, 3, 1, 2))
    return np.ascontiguousarray(out, dtype=np.float32)


def fits(image_hwc: tuple[int, ...], spec: InputSpec) -> bool:
    """Whether an H x W x C item fits the model's input (a dynamic dimension takes any size).

    Checked before the model runs: a framework's own shape error names its layers and tensors, not the
    calibration set the user passed."""
    wanted = (spec.height, spec.width, spec.channels)
    return all(want in (None, have) for want, have in zip(wanted, image_hwc))


def model_input_shape(spec: InputSpec) -> str:
    """The model's input shape as a user reads it, e.g. (N,28,28,1): N for the batch, ? for dynamic sizes."""
    return "(" + ",".join(["N"] + ["?" if d is None else str(d) for d in spec.shape[1:]]) + ")"


def spatial_size(spec: InputSpec, fallback: int = 224) -> tuple[int, int]:
    """The model's input height and width, or a square fallback when they are dynamic."""
    return spec.height or fallback, spec.width or fallback
