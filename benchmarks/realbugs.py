"""safeconvert on the real-converter-bug corpus (tests/realbugs/corpus.py): detected, localized, repaired.

Each corpus model and its clean control goes through the real CLI in a subprocess, with repair on and a JSON
report: `safeconvert convert` along the entry's route, or, for a converter the route planner does not pick
first (onnx-tf), `safeconvert repair SOURCE TARGET` on that converter's own output. Columns:

    detected   the conversion was found not to agree (not verified at first, or a repair was tried)
    localized  a finding names the mistranslated op
    repaired   exit 0 on the buggy model (verified after repair); on a control, exit 0 with no repair applied
    seconds    wall time of the run, converter included

    .venv/bin/python benchmarks/realbugs.py [--only NAME,...] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.realbugs.corpus import CORPUS, RealBug  # noqa: E402
from tests.realbugs.live import CliRun, run_cli  # noqa: E402

# What a finding may call each corpus op: the source op name, and the names TVM's importers give it.
OP_NAMES = {
    "Resize": ("resize",),
    "ResizeArea": ("resize",),
    "Upsample": ("upsample", "resize"),
    "CumSum": ("cumsum",),
    "ConvTranspose": ("convtranspose", "conv_transpose", "conv2d_transpose"),
    "AveragePool": ("averagepool", "avg_pool", "avgpool"),
    "avg_pool2d": ("averagepool", "avg_pool", "avgpool"),
    "Slice": ("slice", "strided_slice", "flip", "reverse"),
}


@dataclass
class Row:
    bug: str
    converter: str
    model: str  # "bug" or "control"
    command: str
    exit_code: int
    detected: bool
    localized: bool
    repaired: bool
    repairs_applied: int
    seconds: float


def detected(run: CliRun) -> bool:
    """Not verified as converted: exit 1, or exit 0 only after a repair or after dropping a converter."""
    if run.exit_code == 1:
        return True
    if run.exit_code != 0:  # bad input, converter failure, internal error: nothing was judged
        return False
    report = run.report
    dropped = any(t.get("outcome") != "kept" for t in report.get("converters_tried") or [])
    return bool(report.get("repairs")) or report.get("metrics_before_repair") is not None or dropped


def localized(run: CliRun, bug: RealBug) -> bool:
    names = OP_NAMES.get(bug.op, (bug.op.lower(),))
    text = json.dumps(run.report.get("findings", [])).lower()
    return any(name in text for name in names)


def measure(bug: RealBug, folder: Path) -> list[Row]:
    rows = []
    for model, build in (("bug", bug.build_bug), ("control", bug.build_control)):
        run = run_cli(bug, build(folder), folder, repair=True)
        repairs = len(run.report.get("repairs") or [])
        is_detected = detected(run)
        repaired = run.exit_code == 0 and (model == "control" and repairs == 0 or model == "bug")
        rows.append(Row(bug.name, bug.converter, model, run.command, run.exit_code, is_detected,
                        localized(run, bug), repaired, repairs, round(run.seconds, 1)))
    return rows


def print_table(rows: list[Row]) -> None:
    header = f"{'bug':42s} {'converter':18s} {'model':8s} {'cmd':8s} {'exit':>4s} {'detected':>8s} " \
             f"{'localized':>9s} {'repaired':>8s} {'repairs':>7s} {'seconds':>7s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.bug:42s} {r.converter:18s} {r.model:8s} {r.command:8s} {r.exit_code:>4d} {_yes(r.detected):>8s} "
              f"{_yes(r.localized):>9s} {_yes(r.repaired):>8s} {r.repairs_applied:>7d} {r.seconds:>7.1f}")
    bugs = [r for r in rows if r.model == "bug"]
    controls = [r for r in rows if r.model == "control"]
    print(f"\nbugs: {len(bugs)}; detected {sum(r.detected for r in bugs)}, localized {sum(r.localized for r in bugs)}, "
          f"repaired {sum(r.repaired for r in bugs)}; controls verified without repair "
          f"{sum(r.repaired for r in controls)} of {len(controls)}, controls flagged {sum(r.detected for r in controls)}")


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated corpus names (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    wanted = {n for n in args.only.split(",") if n}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="safeconvert-realbugs-") as work:
        for bug in CORPUS:
            if wanted and bug.name not in wanted:
                continue
            folder = Path(work) / bug.name
            folder.mkdir()
            rows += measure(bug, folder)
            print(f"{bug.name}: done", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
