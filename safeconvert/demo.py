"""`safeconvert demo`: the real MobileNetV2 (torchvision ImageNet weights) along several routes.

Faithful routes must come out verified with nothing to repair. Two faulty conversions must be localized
and repaired: the TFLite converter's Optimize.DEFAULT weight quantisation (a real converter fault, TOOL),
and a shifted padding planted in the ONNX conversion (LH, repaired with `safeconvert repair`). The exit
code says whether every case came out as expected.
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
    expect_repair: str | None = None  # the category whose repair must be applied; None: nothing to repair
    inject: str | None = None  # a fault kind planted in the `source` conversion, then repaired with `repair`


def demo_cases() -> list[DemoCase]:
    return [
        DemoCase("Keras -> ONNX", "keras", "mobilenet_v2.onnx", ConversionOptions()),
        DemoCase("Keras -> TFLite", "keras", "mobilenet_v2.tflite", ConversionOptions()),
        DemoCase("ONNX -> PyTorch", "onnx", "mobilenet_v2_from_onnx.pt", ConversionOptions()),
        DemoCase("PyTorch -> ONNX", "pt2", "mobilenet_v2_from_torch.onnx", ConversionOptions()),
        DemoCase("Keras -> PyTorch", "keras", "mobilenet_v2_from_keras.pt", ConversionOptions()),
        DemoCase("Keras -> TFLite, Optimize.DEFAULT", "keras", "mobilenet_v2_dynamic_range.tflite",
                 ConversionOptions(tflite_optimizations=["DEFAULT"]), expect_repair="TOOL"),
        DemoCase("ONNX with a shifted pad (planted)", "onnx", "mobilenet_v2_pads_repaired.onnx", ConversionOptions(),
                 expect_repair="LH", inject="pads_shifted"),
    ]


def run_demo(workdir: Path, images: int | None = None, console: Console | None = None) -> int:
    from .models.files import mobilenet_v2_files

    console = console or Console()
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"Building the real MobileNetV2 (torchvision ImageNet weights) in Keras and PyTorch under {workdir}/ ...")
    models = {k: v for k, v in mobilenet_v2_files(workdir).items()}
    _sanity_check(models["pt2"], console)
    calib = _calibration_subset(workdir, images)
    table = Table("case", "top-1 before", "top-1 after", "repaired", "verdict", "as expected", "s")
    as_expected = True
    for case in demo_cases():
        started = time.perf_counter()
        try:
            report = _run_case(case, models, workdir, calib)
        except SafeConvertError as exc:
            table.add_row(case.title, "-", "-", "-", f"failed: {one_line(exc, 60)}", "NO", f"{time.perf_counter() - started:.1f}")
            as_expected = False
            continue
        if case.source == "keras" and case.output.endswith(".onnx") and report.output:
            models["onnx"] = Path(report.output)
        row, ok = _row(case, report)
        seconds = f"{time.perf_counter() - started:.1f}"
        table.add_row(case.title, *row, "yes" if ok else "NO", seconds)
        as_expected &= ok
        console.print(f"  {case.title}: top-1 {row[0]} -> {row[1]}, repaired: {row[2]}, {row[3]} ({seconds} s)")
    console.print(table)
    console.print("[green]every case came out as expected[/green]" if as_expected else "[red]some cases did not come out as expected[/red]")
    console.print(f"models and JSON reports are in {workdir}/")
    return 0 if as_expected else 1


def _run_case(case: DemoCase, models: dict[str, Path], workdir: Path, calib: Path | None):
    from .pipeline import ConvertRequest, RepairRequest, run_convert, run_repair

    output = workdir / case.output
    report_path = workdir / f"{output.name}.report.json"
    if case.inject is None:
        return run_convert(ConvertRequest(models[case.source], output, calib=calib, preprocess="torch", options=case.options,
                                          force=True, report_path=report_path)).report
    from .faults import inject

    faulty = workdir / f"mobilenet_v2_{case.inject}.onnx"
    inject(models[case.source], faulty, case.inject, seed=0)
    return run_repair(RepairRequest(models["keras"], faulty, calib=calib, preprocess="torch", report_path=report_path,
                                    output=output, force=True)).report


def _row(case: DemoCase, report) -> tuple[list[str], bool]:
    before = report.metrics_before_repair or report.metrics or {}
    after = report.metrics or {}
    applied = sorted({r["category"] for r in report.repairs if r["status"] == "applied"})
    expected_repairs = [case.expect_repair] if case.expect_repair else []
    ok = report.verified and applied == expected_repairs
    agree = lambda m: f"{m.get('images', 0) - m.get('top1_mismatches', 0)}/{m.get('images', 0)}"  # noqa: E731
    verdict = "verified" if report.verified else "NOT verified"
    return [agree(before), agree(after), ", ".join(applied) or "-", verdict], ok


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
