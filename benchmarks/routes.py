"""Every route `safeconvert routes` says works here, run on the real MobileNetV2: agreement and time per route.

Each source format is written by its own framework (not by safeconvert's wrappers): the .keras and .pt2 that
ship with safeconvert, an ONNX export (TorchScript-based exporter, opset 13, dynamic batch), a SavedModel
exported by Keras, a float TFLite made by TensorFlow's converter, and a traced TorchScript file. Each route
runs as `safeconvert convert` (hops in child processes, validation on the packaged photos, repair when the
conversion disagrees) and prints one markdown row.

    .venv/bin/python benchmarks/routes.py [--only keras] [--images 42] [--out routes.md]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

HEADER = ("| route | converters | agreement as converted | after repair | max abs diff | s |\n"
          "|---|---|---|---|---|---|")


def mobilenet_sources(work: Path) -> dict[str, Path]:
    """The real MobileNetV2 in every source format, each written with its framework's own API."""
    import torch

    from safeconvert.models.files import mobilenet_v2_files
    from safeconvert.models.mobilenet_v2 import torch_mobilenet_v2
    from safeconvert.runners.tf_runner import load_keras_model, quiet_tensorflow
    from safeconvert.runners.torch_runner import SPEC_EXTRA_FILE

    files = {k: Path(v) for k, v in mobilenet_v2_files(work).items()}
    module = torch_mobilenet_v2().eval()
    example = torch.randn(1, 3, 224, 224)
    onnx_path = work / "mobilenet_v2.onnx"
    torch.onnx.export(module, (example,), str(onnx_path), dynamo=False, opset_version=13, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    torchscript = work / "mobilenet_v2.pt"
    spec = {"name": "input", "shape": [None, 3, 224, 224], "layout": "NCHW", "dtype": "float32"}
    torch.jit.save(torch.jit.trace(module, example), str(torchscript), _extra_files={SPEC_EXTRA_FILE: json.dumps(spec)})
    keras_model = load_keras_model(files["keras"])
    saved_model = work / "mobilenet_v2_savedmodel"
    keras_model.export(str(saved_model), verbose=False)
    tflite = work / "mobilenet_v2.tflite"
    with contextlib.redirect_stdout(io.StringIO()):
        tflite.write_bytes(quiet_tensorflow().lite.TFLiteConverter.from_keras_model(keras_model).convert())
    return {**files, "onnx": onnx_path, "torchscript": torchscript, "savedmodel": saved_model, "tflite": tflite}


def run_route(source: Path, target_format: str, out: Path, calib: Path | None) -> str:
    """One `safeconvert convert` along the planned route; the markdown row of its outcome."""
    from safeconvert.errors import SafeConvertError
    from safeconvert.pipeline import ConvertRequest, run_convert

    started = time.perf_counter()
    try:
        report = run_convert(ConvertRequest(source, out, target_format=target_format, calib=calib, preprocess="torch",
                                            trust_model_code=True, force=True)).report
    except SafeConvertError as exc:
        return f"| {exc} | | | | | {time.perf_counter() - started:.0f} |"
    seconds = time.perf_counter() - started
    before = report.metrics_before_repair or report.metrics
    return (f"| {' + '.join(hop.converter for hop in report.route)} | {_agreement(before)} "
            f"| {_agreement(report.metrics)}{'' if report.verified else ' (not verified)'} "
            f"| {report.metrics['max_abs_diff']:.3g} | {seconds:.0f} |")


def _agreement(metrics: dict) -> str:
    return f"{metrics['images'] - metrics['top1_mismatches']}/{metrics['images']}"


def main() -> None:
    from safeconvert.routes import route_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="only routes from this source format")
    parser.add_argument("--images", type=int, default=None, help="only the first N packaged photos")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="safeconvert-routes-"))
    calib = _first_photos(work / "photos", args.images) if args.images else None
    sources = mobilenet_sources(work)
    rows = [r for r in route_table() if r["works"] and (args.only is None or r["source"] == args.only)]
    lines = [HEADER]
    print(HEADER, flush=True)
    for row in rows:
        out = work / "out" / f"{row['source']}-to-{row['target']}"
        out.parent.mkdir(parents=True, exist_ok=True)
        target = out.with_suffix({"onnx": ".onnx", "tflite": ".tflite", "pt2": ".pt2", "torchscript": ".pt"}.get(row["target"], ""))
        line = f"| {row['source']} -> {row['target']} {run_route(sources[row['source']], row['target'], target, calib)}"
        lines.append(line)
        print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


def _first_photos(folder: Path, count: int) -> Path:
    from safeconvert.validators.calibration import IMAGE_SUFFIXES, default_calibration_dir

    folder.mkdir(parents=True)
    photos = sorted(p for p in default_calibration_dir().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    for photo in photos:
        (folder / photo.name).write_bytes(photo.read_bytes())
    return folder


if __name__ == "__main__":
    main()
