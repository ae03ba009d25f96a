"""Wall time and peak memory of `safeconvert convert` vs the plain converter call, side by side.

MobileNetV2 (real weights) Keras -> ONNX with tf2onnx, and Keras -> TFLite with the TFLite converter.
Each command runs in its own child process; peak memory is that process tree's max RSS. The runs
alternate (plain, safeconvert, plain, safeconvert, ...) so machine noise hits both alike.

    .venv/bin/python benchmarks/convert_overhead.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN_ONNX = """
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import sys, keras, tensorflow as tf, tf2onnx
model = keras.saving.load_model(sys.argv[1], compile=False)
spec = (tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="input"),)
proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec)
open(sys.argv[2], "wb").write(proto.SerializeToString())
"""

PLAIN_TFLITE = """
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import sys, keras, tensorflow as tf
model = keras.saving.load_model(sys.argv[1], compile=False)
open(sys.argv[2], "wb").write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
"""

MEASURE = """
import resource, subprocess, sys, time, json
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024, "rc": code.returncode, "err": code.stderr[-500:]}))
"""


def measure(command: list[str], allowed: tuple[int, ...] = (0,)) -> dict:
    """Seconds and peak MiB of `command` run in a child process; stops the benchmark when it fails."""
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout)
    if figures["rc"] not in allowed:
        raise SystemExit(f"command failed ({figures['rc']}): {' '.join(command)}\n{figures['err']}")
    return figures


def overhead(work: Path, repeats: int) -> list[dict]:
    """Median seconds and max peak MiB of the plain call and of safeconvert, per route, alternating runs.

    safeconvert runs without its per-user cache: each run costs what a first conversion of the model costs
    (with the cache, a repeat would find the source's outputs and skip loading and running it)."""
    import os

    from safeconvert.models.files import mobilenet_v2_files
    from safeconvert.user_cache import ENV_VAR

    os.environ[ENV_VAR] = "off"

    keras_file = mobilenet_v2_files(work)["keras"]
    safeconvert = [sys.executable, "-m", "safeconvert", "convert", str(keras_file), "--preprocess", "torch", "--force", "-o"]
    cases = {
        "Keras -> ONNX": ([sys.executable, "-c", PLAIN_ONNX, str(keras_file), str(work / "plain.onnx")], [*safeconvert, str(work / "sc.onnx")]),
        "Keras -> TFLite": ([sys.executable, "-c", PLAIN_TFLITE, str(keras_file), str(work / "plain.tflite")], [*safeconvert, str(work / "sc.tflite")]),
    }
    rows = []
    for name, (plain_cmd, sc_cmd) in cases.items():
        plain, ours = [], []
        for _ in range(repeats):
            plain.append(measure(plain_cmd))
            ours.append(measure(sc_cmd))
        rows.append({"route": name,
                     "plain_s": statistics.median(r["seconds"] for r in plain),
                     "safeconvert_s": statistics.median(r["seconds"] for r in ours),
                     "plain_mib": max(r["peak_mib"] for r in plain),
                     "safeconvert_mib": max(r["peak_mib"] for r in ours)})
    return rows


def print_overhead(rows: list[dict]) -> None:
    print(f"{'route':<16} {'plain s':>8} {'safeconvert s':>14} {'time x':>7} {'plain MiB':>10} {'safeconvert MiB':>16} {'mem x':>6}")
    for r in rows:
        print(f"{r['route']:<16} {r['plain_s']:8.1f} {r['safeconvert_s']:14.1f} {r['safeconvert_s'] / r['plain_s']:7.2f} "
              f"{r['plain_mib']:10.0f} {r['safeconvert_mib']:16.0f} {r['safeconvert_mib'] / r['plain_mib']:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sc-bench-"))
    print(f"MobileNetV2 (real weights), {args.repeats} alternating runs each; safeconvert validates on 42 photos")
    print_overhead(overhead(work, args.repeats))
    print(f"(run on {time.strftime('%Y-%m-%d')}; files in {work})")


if __name__ == "__main__":
    main()
