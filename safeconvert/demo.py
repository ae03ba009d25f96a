"""`safeconvert demo`: the real MobileNetV2 (torchvision ImageNet weights) along several routes.

Faithful routes must come out verified; the TFLite converter's default weight quantisation is a real
converter fault and must be caught. The exit code says whether every route got the expected verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .errors import SafeConvertError, one_line
from .wrappers.base import ConversionOptions

SANITY_PHOTOS = {"orange.jpg": "orange", "baboon.jpg": "baboon", "coffee.jpg": "espresso"}


@dataclass
class DemoCase:
    title: str
    source: str  # key of the model files
    output: str
    options: ConversionOptions
    expect_verified: bool


def demo_cases() -> list[DemoCase]:
    return [
        DemoCase("Keras -> ONNX", "keras", "mobilenet_v2.onnx", ConversionOptions(), True),
        DemoCase("Keras -> TFLite", "keras", "mobilenet_v2.tflite", ConversionOptions(), True),
        DemoCase("ONNX -> PyTorch", "onnx", "mobilenet_v2_from_onnx.pt", ConversionOptions(), True),
        DemoCase("PyTorch -> ONNX", "pt2", "mobilenet_v2_from_torch.onnx", ConversionOptions(), True),
        DemoCase("Keras -> PyTorch", "keras", "mobilenet_v2_from_keras.pt", ConversionOptions(), True),
        DemoCase("Keras -> TFLite, Optimize.DEFAULT", "keras", "mobilenet_v2_dynamic_range.tflite",
                 ConversionOptions(tflite_optimizations=["DEFAULT"]), False),
    ]


def run_demo(workdir: Path, images: int | None = None, console: Console | None = None) -> int:
    from .models.files import mobilenet_v2_files

    console = console or Console()
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"Building the real MobileNetV2 (torchvision ImageNet weights) in Keras and PyTorch under {workdir}/ ...")
    models = {k: v for k, v in mobilenet_v2_files(workdir).items()}
    _sanity_check(models["pt2"], console)
    calib = _calibration_subset(workdir, images)
    table = Table("route", "top-1 agree", "max |diff|", "verdict", "as expected", "s")
    as_expected = True
    for case in demo_cases():
        row, ok, output = _run_case(case, models, workdir, calib)
        if output is not None and case.output.endswith(".onnx") and case.source == "keras":
            models["onnx"] = output
        converters, agree, diff, verdict, expected, seconds = row
        table.add_row(case.title, agree, diff, verdict, "yes" if ok else "NO", seconds)
        as_expected &= ok
        console.print(f"  {case.title} [{converters}]: top-1 {agree}, max |diff| {diff}: {verdict} "
                      f"(expected {expected}, {seconds} s)")
    console.print(table)
    console.print("[green]every route got the expected verdict[/green]" if as_expected else "[red]some routes did not get the expected verdict[/red]")
    console.print(f"models and JSON reports are in {workdir}/")
    return 0 if as_expected else 1


def _run_case(case: DemoCase, models: dict[str, Path], workdir: Path, calib: Path | None):
    from .pipeline import ConvertRequest, run_convert

    output = workdir / case.output
    request = ConvertRequest(models[case.source], output, calib=calib, preprocess="torch", options=case.options,
                             force=True, report_path=workdir / f"{output.name}.report.json")
    started = time.perf_counter()
    try:
        report = run_convert(request).report
    except SafeConvertError as exc:
        seconds = f"{time.perf_counter() - started:.1f}"
        return ["-", "-", "-", f"failed: {one_line(exc, 60)}", _expected(case), seconds], False, None
    seconds = f"{time.perf_counter() - started:.1f}"
    m = report.metrics or {}
    verdict = "verified" if report.verified else "NOT verified"
    row = [
        " + ".join(f"{h.converter} {h.tool_version}" for h in report.route),
        f"{m.get('images', 0) - m.get('top1_mismatches', 0)}/{m.get('images', 0)}",
        f"{m.get('max_abs_diff', float('nan')):.3g}",
        verdict,
        _expected(case),
        seconds,
    ]
    return row, report.verified == case.expect_verified, Path(report.output) if report.output else None


def _expected(case: DemoCase) -> str:
    return "verified" if case.expect_verified else "caught (not verified)"


def _calibration_subset(workdir: Path, images: int | None) -> Path | None:
    """The packaged photos, or a directory of links to the first N of them."""
    if images is None:
        return None
    from .validators.calibration import default_calibration_dir, IMAGE_SUFFIXES

    subset = workdir / f"calib-{images}"
    subset.mkdir(exist_ok=True)
    photos = sorted(p for p in default_calibration_dir().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:images]
    for photo in photos:
        link = subset / photo.name
        if not link.exists():
            link.symlink_to(photo)
    return subset


def _sanity_check(pt2: Path, console: Console) -> None:
    """The source model must name well-known photos correctly, or nothing below means much."""
    import numpy as np

    from .runners import load_runner
    from .summary import class_names
    from .validators.calibration import default_calibration_dir, read_image
    from .validators.preprocess import Preprocessing, to_model_layout

    runner = load_runner(pt2)
    photos = [default_calibration_dir() / name for name in SANITY_PHOTOS]
    batch = Preprocessing("torch", 224, 224).apply([read_image(p) for p in photos])
    labels = np.argmax(runner.run(to_model_layout(batch, runner.spec)), axis=1)
    names = class_names()
    seen = ", ".join(f"{p.name} -> {names[i]}" for p, i in zip(photos, labels))
    console.print(f"source model sees: {seen}")
