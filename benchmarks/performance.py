"""Speed and memory of safeconvert, side by side in one run: the figures its targets are judged by.

1. plain converter call vs `safeconvert convert` on a clean conversion (MobileNetV2 Keras -> ONNX and
   Keras -> TFLite): wall-time and peak-memory ratios (targets: <= 1.2x each);
2. localize + repair time for one planted fault per category on MobileNetV2 (target <= 30 s) and the seeded
   ResNet101 (<= 120 s), from benchmarks/localize.py;
3. validation scaling with the number of images (10, 100, 1000, made by augmenting the packaged photos):
   `safeconvert check` time should grow linearly and its memory stay flat (batched, streaming inference).

    .venv/bin/python benchmarks/performance.py [--parts overhead,localize,scaling] [--repeats 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from convert_overhead import measure, overhead, print_overhead  # noqa: E402

SCALING_COUNTS = (10, 100, 1000)


def augmented_photos(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEGs made from the packaged photos by seeded flips, crops, rotations and brightness changes."""
    import numpy as np
    from PIL import Image

    from safeconvert.validators.calibration import IMAGE_SUFFIXES, default_calibration_dir

    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in default_calibration_dir().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    rng = np.random.default_rng(seed)
    for index in range(count):
        out = folder / f"aug{index:05d}.jpg"
        if out.exists():
            continue
        with Image.open(photos[index % len(photos)]) as photo:
            image = _augment(photo.convert("RGB"), rng)
        image.save(out, quality=90)
    return folder


def _augment(image, rng):
    from PIL import ImageEnhance, ImageOps

    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    width, height = image.size
    keep = rng.uniform(0.7, 1.0)
    left, top = rng.uniform(0, 1 - keep) * width, rng.uniform(0, 1 - keep) * height
    image = image.crop((int(left), int(top), int(left + keep * width), int(top + keep * height)))
    image = image.rotate(float(rng.uniform(-15, 15)), expand=False)
    return ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.7, 1.3)))


def scaling(work: Path) -> list[dict]:
    """`safeconvert check` of MobileNetV2 Keras vs its ONNX conversion on 10, 100 and 1000 images (without the
    per-user cache: both models run over every image)."""
    import os

    from safeconvert.models.files import mobilenet_v2_files
    from safeconvert.user_cache import ENV_VAR

    os.environ[ENV_VAR] = "off"

    keras_file = mobilenet_v2_files(work)["keras"]
    onnx_file = work / "scaling.onnx"
    if not onnx_file.exists():
        measure([sys.executable, "-m", "safeconvert", "convert", str(keras_file), "-o", str(onnx_file), "--preprocess", "torch"])
    rows = []
    for count in SCALING_COUNTS:
        photos = augmented_photos(work / "augmented" / str(count), count)
        figures = measure([sys.executable, "-m", "safeconvert", "check", str(keras_file), str(onnx_file),
                           "--calib", str(photos), "--preprocess", "torch"], allowed=(0, 1))
        rows.append({"images": count, "seconds": figures["seconds"], "peak_mib": figures["peak_mib"]})
    return rows


def print_scaling(rows: list[dict]) -> None:
    print(f"{'images':>7} {'check s':>8} {'s/image':>8} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['images']:>7} {r['seconds']:8.1f} {r['seconds'] / r['images']:8.3f} {r['peak_mib']:9.0f}")
    first, last = rows[0], rows[-1]
    print(f"  {last['images'] // first['images']}x the images: {last['seconds'] / first['seconds']:.1f}x the time, "
          f"{last['peak_mib'] / first['peak_mib']:.2f}x the peak memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="overhead,localize,scaling")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    parts = args.parts.split(",")
    work = Path(tempfile.mkdtemp(prefix="sc-performance-"))
    if "overhead" in parts:
        print(f"== plain converter vs safeconvert convert (MobileNetV2, {args.repeats} alternating runs; targets <= 1.2x)")
        print_overhead(overhead(work, args.repeats))
    if "localize" in parts:
        print("== localize + repair, one planted fault per category (targets: MobileNetV2 <= 30 s, ResNet101 <= 120 s)", flush=True)
        subprocess.run([sys.executable, str(HERE / "localize.py")], check=False)
    if "scaling" in parts:
        print("== validation scaling (safeconvert check, MobileNetV2 Keras vs ONNX)", flush=True)
        print_scaling(scaling(work))
    print(f"(run on {time.strftime('%Y-%m-%d %H:%M')}; files in {work})")


if __name__ == "__main__":
    main()
