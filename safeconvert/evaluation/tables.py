"""The evaluation's outputs: a markdown table, a JSON document, and the totals in words."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from .cases import MODEL_NOTES
from .prepare import HOLDOUT_EVERY
from .results import CaseResult, Totals, totals


def write_outputs(results: list[CaseResult], folder: Path, quick: bool, not_run: list[str] | None = None) -> Totals:
    """results.md, results.json (and the plot, see plot.py) in `folder`; returns the totals. `not_run` names
    the cases of the run's selection that have no figures yet (tables written from an unfinished run)."""
    from .plot import plot_before_after

    folder.mkdir(parents=True, exist_ok=True)
    summary = totals(results)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    document = {"run": stamp, "quick": quick, "python": platform.python_version(), "machine": _machine(),
                "models": {m: MODEL_NOTES.get(m, "") for m in dict.fromkeys(r.model for r in results)},
                "totals": summary.to_dict(), "cases": [r.to_dict() for r in results], "not_run": not_run or []}
    (folder / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (folder / "results.md").write_text(markdown(results, summary, stamp, not_run or []) + "\n")
    if any(r.scenario == "clean" for r in results):
        (folder / "routes.md").write_text(routes_markdown(results, stamp) + "\n")
    plot_before_after(results, folder / "results.png")
    return summary


def _machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores"


def totals_sentence(summary: Totals) -> str:
    return (f"faults repaired / faults detected: {summary.faults_repaired}/{summary.faults_detected}; "
            f"cases fully repaired (repair and hold-out photos) / faulty cases: "
            f"{summary.cases_fully_repaired}/{summary.faulty_cases}; "
            f"injected faults localized to the planted category: {summary.localized_right}/{summary.injected_faulty}; "
            f"false repairs on clean conversions: {summary.false_repairs}/{summary.clean_cases}; "
            f"errors: {summary.errors}; not applicable: {summary.not_applicable}")


def markdown(results: list[CaseResult], summary: Totals, stamp: str, not_run: list[str] | None = None) -> str:
    models = dict.fromkeys(r.model for r in results)
    lines = [f"# safeconvert evaluation ({stamp})", "",
             *[f"- **{m}**: {MODEL_NOTES.get(m, '')}" for m in models],
             f"- Repair used the packaged photos minus every {HOLDOUT_EVERY}th; those held-out photos were never "
             "seen by repair and are checked afterwards (`hold-out`).", "",
             f"**Totals.** {totals_sentence(summary)}.", "",
             "| model | route | scenario | fault | mismatch before | findings | repairs | mismatch after "
             "| hold-out before -> after | max abs diff before -> after | s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in results]
    if not_run:
        lines += ["", f"**Not run yet ({len(not_run)} of {len(results) + len(not_run)} cases; the totals above leave them out):** "
                      + ", ".join(f"`{case_id}`" for case_id in not_run) + "."]
    return "\n".join(lines)


def routes_markdown(results: list[CaseResult], stamp: str) -> str:
    """The clean conversions as a route x model table: agreement before and after repair, converters, time."""
    clean = [r for r in results if r.scenario == "clean"]
    models = dict.fromkeys(r.model for r in clean)
    lines = [f"# Routes x models ({stamp})", "",
             *[f"- **{m}**: {MODEL_NOTES.get(m, '')}" for m in models], "",
             "Top-1 agreement with the source on the repair photos, as converted and after safeconvert's repair "
             "(the same when nothing needed repair), then on the held-out photos; wall time of the whole "
             "`safeconvert convert` run (conversion in child processes, validation, localization and repair when "
             "needed).", "",
             "| route | model | converters | agreement as converted | after repair | hold-out | max abs diff | s |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [_route_row(r) for r in sorted(clean, key=lambda r: (r.route, list(models).index(r.model)))]
    return "\n".join(lines)


def _route_row(r: CaseResult) -> str:
    if r.status != "ok":
        return f"| {r.route} | {r.model} | - | {r.status}: {_escape(r.error)} | | | | {r.seconds:.0f} |"
    after = r.mismatch_after if r.mismatch_after is not None else r.mismatch_before
    holdout = r.holdout_after if r.holdout_after is not None else r.holdout_before
    return (f"| {r.route} | {r.model} | {' + '.join(r.converters) or '-'} | {_agreement(r.mismatch_before, r.images)} "
            f"| {_agreement(after, r.images)} | {_agreement(holdout, r.holdout_images)} "
            f"| {_float(r.max_abs_after if r.max_abs_after is not None else r.max_abs_before)} | {r.seconds:.0f} |")


def _agreement(mismatches: int | None, images: int) -> str:
    return "-" if mismatches is None or not images else f"{images - mismatches}/{images}"


def _row(r: CaseResult) -> str:
    if r.status != "ok":
        return (f"| {r.model} | {r.route} | {_scenario(r)} | {r.fault_kind or '-'} | {r.status}: {_escape(r.error)} "
                f"| | | | | | {r.seconds:.0f} | {r.peak_mib:.0f} |")
    findings = ", ".join(f"{c} x{n}" if n > 1 else c for c, n in r.findings.items()) or "-"
    if r.expected_category and r.top_category:
        right = r.top_category == r.expected_category
        findings += " (first is right)" if right else f" (first is {r.top_category}, planted {r.expected_category})"
    return (f"| {r.model} | {r.route} | {_scenario(r)} | {r.fault_kind or '-'} | {_share(r.mismatch_before, r.images)} "
            f"| {findings} | {', '.join(r.repairs_applied) or '-'} | {_share(r.mismatch_after, r.images)} "
            f"| {_count(r.holdout_before)} -> {_count(r.holdout_after)} of {r.holdout_images} "
            f"| {_float(r.max_abs_before)} -> {_float(r.max_abs_after)} | {r.seconds:.0f} | {r.peak_mib:.0f} |")


def _scenario(r: CaseResult) -> str:
    return f"{r.scenario} (--keep-quantisation)" if r.case_id.endswith("keep-quantisation") else r.scenario


def _share(count: int | None, images: int) -> str:
    if count is None:
        return "-"
    return f"{count}/{images} ({100 * count / images:.0f}%)" if images else str(count)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _float(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _escape(text: str | None) -> str:
    return (text or "").replace("|", "/")[:160]
