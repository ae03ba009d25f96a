"""Localize + repair cost per fault category, on MobileNetV2 (real weights) and ResNet101 (seeded).

For each model: a Keras source, its ONNX conversion (tf2onnx), then one planted fault per category
(safeconvert.faults, seed 0); each fault is repaired by `safeconvert repair` in its own process so that
peak memory is that run's alone. Prints wall time per stage and peak RSS.

Each fault runs twice by default: "cold", with an empty cache (the first check of a source), and "warm",
with what an earlier check of that source leaves in the cache (its float TFLite export and its outputs on
the photos), as when the same source is checked again.

    .venv/bin/python benchmarks/localize.py [--models mobilenet_v2,resnet101] [--kinds transposed_kernel,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safeconvert.user_cache import ENV_VAR

KINDS = {"WB": "transposed_kernel", "LH": "dilation", "CG": "removed_activation", "TSS": "layout_reinterpret",
         "ID": "hw_swap", "PP": "channel_order"}
TARGETS_SECONDS = {"mobilenet_v2": 30.0, "resnet101": 120.0}


def build_source(model: str, work: Path) -> tuple[Path, str]:
    """The Keras source and its preprocessing preset."""
    path = work / f"{model}.keras"
    if model == "mobilenet_v2":
        from safeconvert.models.files import mobilenet_v2_files

        return mobilenet_v2_files(work)["keras"], "torch"
    from safeconvert.models.seeded import keras_seeded_model

    if not path.exists():
        keras_seeded_model(model).save(path)
    return path, "tf"


def one_case(source: str, faulty: str, preset: str, out: str, mode: str = "warm") -> None:
    """Child process: repair one faulty conversion and print its figures as JSON.

    mode "baseline" repairs as before the speedups: activations always traced, on 4 images."""
    from safeconvert.pipeline import RepairRequest, run_repair

    if mode == "baseline":
        from safeconvert.localize import engine
        from safeconvert.repair import loop

        loop.STATIC_FIRST, engine.DIVERGENCE_IMAGES = False, 4

    started = time.perf_counter()
    report = run_repair(RepairRequest(Path(source), Path(faulty), preprocess=preset, output=Path(out), force=True)).report
    print(json.dumps({
        "seconds": time.perf_counter() - started,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timings": report.timings,
        "stages": {k: v for k, v in report.timings.items() if k.startswith("repair:")},
        "before": (report.metrics_before_repair or report.metrics)["top1_mismatches"],
        "after": report.metrics["top1_mismatches"],
        "found": [f["category"] for f in report.findings[:1]],
        "applied": [r["category"] for r in report.repairs if r["status"] == "applied"],
        "verified": report.verified,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet101")
    parser.add_argument("--kinds", default=",".join(KINDS.values()))
    parser.add_argument("--json", type=Path, help="also write every case's figures here")
    parser.add_argument("--compare", action="store_true", help="run each case also as before the speedups")
    parser.add_argument("--cache", choices=("both", "cold", "warm"), default="both",
                        help="the per-user cache: empty per case (cold), kept across cases (warm), or both")
    parser.add_argument("--case", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        one_case(*args.case)
        return
    from safeconvert.faults import inject
    from safeconvert.pipeline import ConvertRequest, run_convert

    work = Path(tempfile.mkdtemp(prefix="sc-localize-"))
    os.environ[ENV_VAR] = str(work / "cache")  # the clean conversion below fills the warm cache, not the user's
    results: list[dict] = []
    print(f"{'model':<13} {'category':<4} {'fault':<20} {'mode':<8} {'labels':>9} {'found':>6} {'repaired':>9} {'total s':>8} "
          f"{'localize s':>11} {'repair s':>9} {'peak MiB':>9}")
    for model in args.models.split(","):
        source, preset = build_source(model, work)
        clean = work / f"{model}.onnx"
        if not clean.exists():
            run_convert(ConvertRequest(source, clean, preprocess=preset))
        if "warm" in CACHE_MODES[args.cache]:
            fill_cache(source)
        for kind in args.kinds.split(","):
            faulty = work / f"{model}-{kind}.onnx"
            inject(clean, faulty, kind, seed=0)
            for mode in (["baseline"] if args.compare else []) + CACHE_MODES[args.cache]:
                run_case(model, kind, mode, source, faulty, preset, work, results)
        print(f"  target for {model}: localize+repair <= {TARGETS_SECONDS.get(model, 0):.0f} s per fault")
    print(f"(run on {time.strftime('%Y-%m-%d %H:%M')}; files in {work})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def fill_cache(source: Path) -> None:
    """Put the source's float-reference export in the warm cache, as an earlier check of it would have
    (the clean conversion has already put the source's outputs there)."""
    from safeconvert.ir import reference_cache
    from safeconvert.ir.keras_reference import keras_to_tflite
    from safeconvert.runners.tf_runner import load_keras_model

    reference_cache.cached_float_tflite(source, lambda: keras_to_tflite(load_keras_model(source)))


CACHE_MODES = {"both": ["cold", "warm"], "cold": ["cold"], "warm": ["warm"]}


def run_case(model: str, kind: str, mode: str, source: Path, faulty: Path, preset: str, work: Path,
             results: list[dict]) -> None:
    """One repair in a child process (its own peak memory); print its row and stage line."""
    from safeconvert.faults import KINDS as ALL_KINDS

    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-cold-")) if mode in ("cold", "baseline") else work / "cache"
    env = {**os.environ, ENV_VAR: str(cache)}
    child = subprocess.run([sys.executable, __file__, "--case", str(source), str(faulty), preset,
                            str(work / f"{model}-{kind}-fixed.onnx"), mode], capture_output=True, text=True, env=env)
    if child.returncode not in (0, 1):
        print(f"{model:<13} {kind}: failed: {child.stderr.strip().splitlines()[-1:]}")
        return
    r = json.loads(child.stdout.strip().splitlines()[-1])
    results.append({"model": model, "kind": kind, "mode": mode, **r})
    t = r["timings"]
    print(f"{model:<13} {ALL_KINDS[kind].category.value:<4} {kind:<20} {mode:<8} {r['before']:>3} -> {r['after']:<3} "
          f"{','.join(r['found']) or '-':>6} {','.join(r['applied']) or '-':>9} {r['seconds']:8.1f} "
          f"{t.get('repair:localize', 0):11.1f} {t.get('repair:repair', 0):9.1f} {r['peak_mib']:9.0f}", flush=True)
    print(f"{'':<13} stages: {stage_line(t)}", flush=True)


STAGES = ["tool", "runtime", "input", "import_and_align", "source:import", "source:normalise", "target:import",
          "target:normalise", "static", "activations", "source:compile", "source:vm_init", "target:compile",
          "target:vm_init", "source:run_per_image"]


def stage_line(timings: dict) -> str:
    """Seconds per localization stage (summed over repair rounds) and per TVM step, where they ran."""
    parts = [f"{name}={timings[f'repair:localize:{name}']:.2f}" for name in STAGES
             if f"repair:localize:{name}" in timings]
    validate = timings.get("validate", 0.0)
    return " ".join([f"validate={validate:.2f}", *parts])


if __name__ == "__main__":
    main()
