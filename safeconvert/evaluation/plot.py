"""The evaluation's plot, one pair of bars per faulty case: label mismatches before and after repair (top),
and the largest output difference before and after (bottom, log scale: a fault can move every output
without flipping a label, and repair must bring both back)."""

from __future__ import annotations

from pathlib import Path

from .results import CaseResult

BEFORE, AFTER = "#d62728", "#2ca02c"


def plot_before_after(results: list[CaseResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.faulty] or [r for r in results if r.status == "ok"]
    figure, (labels_axes, diff_axes) = plt.subplots(2, 1, sharex=True, figsize=(max(7.0, 0.3 * len(shown) + 3), 7))
    _bars(labels_axes, shown, [_mismatch_pct(r, r.mismatch_before) for r in shown],
          [_mismatch_pct(r, r.mismatch_after) for r in shown])
    labels_axes.set_ylabel("top-1 label mismatch\n(% of repair photos)")
    labels_axes.legend(loc="upper right")
    _bars(diff_axes, shown, [r.max_abs_before or 0 for r in shown], [r.max_abs_after or 0 for r in shown])
    diff_axes.set_yscale("log")
    diff_axes.set_ylabel("max |output difference|")
    diff_axes.set_xticks(range(len(shown)), [_label(r) for r in shown], rotation=75, ha="right", fontsize=7)
    figure.suptitle("safeconvert: before vs after repair, per faulty case", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _bars(axes, shown: list[CaseResult], before: list[float], after: list[float]) -> None:
    positions = range(len(shown))
    axes.bar([p - 0.2 for p in positions], before, width=0.4, label="before repair", color=BEFORE)
    axes.bar([p + 0.2 for p in positions], after, width=0.4, label="after repair", color=AFTER)


def _mismatch_pct(result: CaseResult, count: int | None) -> float:
    return 100 * (count or 0) / max(result.images, 1)


def _label(r: CaseResult) -> str:
    return f"{r.model} {r.route.replace(' -> ', '>')} {r.fault_kind or r.scenario}"
