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
    return (f"faults detected (not verified as made) / planted faults: {summary.faults_detected}/{summary.planted_faults}; "
            f"faults repaired / faults detected: {summary.faults_repaired}/{summary.faults_detected}; "
            f"cases fully repaired (repair and hold-out photos) / faults detected: "
            f"{summary.cases_fully_repaired}/{summary.faults_detected}; "
            f"first finding (as localization emitted it) names the planted category: "
            f"{_known(summary.first_finding_right, summary.first_finding_known, summary.faults_detected)}; "
            f"edits on clean conversions: {summary.edits_on_clean}/{summary.clean_cases}; "
            f"false verifications on held-out photos: {summary.false_verifications}/{summary.verified_cases}"
            f"{_unknown_note(summary.false_verifications_unknown)}; "
            f"repaired with quantisation kept (still quantised) / --keep-quantisation cases: "
            f"{_count(summary.kept_quantised) if summary.kept_quantised is not None else 'unknown'}"
            f"/{summary.keep_quantisation_cases}; "
            f"errors: {summary.errors}; not applicable: {summary.not_applicable}"
            f"{'; MIXED VERSIONS' if summary.mixed_versions else ''}")


def _known(count: int | None, known: int, of: int) -> str:
    if count is None:
        return f"unknown ({of - known} of {of} cases did not record the order)" if known < of else "unknown"
    return f"{count}/{of}"


def _unknown_note(unknown: int) -> str:
    return f" ({unknown} verified cases without a hold-out check)" if unknown else ""


DEFINITIONS = [
    "**How each figure is defined.**",
    "- *Planted faults*: injected cases, and real converter faults (TFLite quantisation options without "
    "`--keep-quantisation`, int8 TFLite -> ONNX). *Detected*: the conversion as made was not verified by the verdict "
    "(a finding alone does not count). *Repaired*: detected, then verified on the repair photos. *Fully repaired*: "
    "also verified on the held-out photos.",
    "- *Edits on clean conversions*: clean cases (nothing planted) that got any edit or repair applied; each is a "
    "change safeconvert made to a conversion that had no planted fault.",
    "- *False verifications on held-out photos*: cases verified on the repair photos whose output, checked against "
    "the source on the held-out photos with the same verdict and tolerances, is not verified (a label change not "
    "excused, or a numeric difference beyond the tolerance). Out of all verified cases, clean ones included.",
    "- *Localization* (per planted category, over detected faults): precision = findings that name the planted "
    "category (and, for faults planted in a layer, that layer) / all findings; recall = detected faults with at "
    "least one such finding / detected faults. *First finding right* reads the findings in the order localization "
    "emitted them, before any repair ran (the report lists the finding whose repair was kept first).",
    "- *Repaired with quantisation kept*: a `--keep-quantisation` case that is verified and whose written output "
    "still stores quantised tensors (counted as in the TOOL finding); a verified output with none left is "
    "\"quantisation undone\", not a success. Each row gives the output's quantised tensors beside those of the "
    "quantised conversion as made, and the sizes: \"partly kept\" says how much of the quantisation is left.",
    "- *unknown*: the figure needs something an older record does not hold (the findings' order and layers, the "
    "output's quantised tensors); it is not guessed.",
]


def markdown(results: list[CaseResult], summary: Totals, stamp: str, not_run: list[str] | None = None) -> str:
    models = dict.fromkeys(r.model for r in results)
    lines = [f"# safeconvert evaluation ({stamp})", "",
             *[f"- **{m}**: {MODEL_NOTES.get(m, '')}" for m in models],
             f"- Repair used the packaged photos minus every {HOLDOUT_EVERY}th; those held-out photos were never "
             "seen by repair and are checked afterwards (`hold-out`).", "",
             f"**Totals.** {totals_sentence(summary)}.", "", *versions_lines(summary), *DEFINITIONS, "",
             *localization_lines(summary), *quantisation_lines(results),
             "| model | route | scenario | fault | mismatch before | findings | repairs | mismatch after "
             "| hold-out before -> after | max abs diff before -> after | s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in results]
    if not_run:
        lines += ["", f"**Not run yet ({len(not_run)} of {len(results) + len(not_run)} cases; the totals above leave them out):** "
                      + ", ".join(f"`{case_id}`" for case_id in not_run) + "."]
    return "\n".join(lines)


def versions_lines(summary: Totals) -> list[str]:
    """Which code measured the cases; "mixed versions" when more than one did (or some case did not say)."""
    listed = "; ".join(f"`{key}`: {count} cases" for key, count in summary.versions.items())
    if summary.mixed_versions:
        return [f"**Mixed versions**: these cases were measured by different code or library versions "
                f"(commit, dirty tree, versions; `unknown`: not recorded): {listed}. Their figures are not one run's.", ""]
    return [f"Measured by {listed}.", ""]


def localization_lines(summary: Totals) -> list[str]:
    if not summary.localization:
        return []
    lines = ["| planted category | detected | precision (category) | precision (category and layer) "
             "| recall (category) | recall (category and layer) | first finding right |", "|---|---|---|---|---|---|---|"]
    for category, f in summary.localization.items():
        lines.append(f"| {category} | {f['detected']} | {_ratio(f['findings_right_category'], f['findings'])} "
                     f"| {_ratio(f['findings_right_layer'], f['findings'])} "
                     f"| {_ratio(f['recalled_category'], f['detected'])} | {_ratio(f['recalled_layer'], f['detected'])} "
                     f"| {_ratio(f['first_right'], f['detected'])} |")
    return [*lines, ""]


def quantisation_lines(results: list[CaseResult]) -> list[str]:
    """The --keep-quantisation cases: verified or not, still quantised or not, and the output's size."""
    keep = [r for r in results if r.keep_quantisation and r.status == "ok"]
    if not keep:
        return []
    lines = ["| model | scenario (--keep-quantisation) | verified | quantised tensors in the output / as converted "
             "| output size / float conversion | size as converted | outcome |", "|---|---|---|---|---|---|---|"]
    for r in keep:
        lines.append(f"| {r.model} | {r.scenario} | {'yes' if r.verified else 'no'} "
                     f"| {_tensors(r.quantised_tensors)} / {_tensors(r.converted_quantised_tensors)} "
                     f"| {_size_ratio(r.output_bytes, r.float_bytes)} | {_mib(r.converted_bytes)} | {_kept_outcome(r)} |")
    return [*lines, ""]


def _tensors(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "unknown"
    return ", ".join(f"{n} {t}" for t, n in counts.items()) or "none"


def _mib(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 2**20:.2f} MiB"


def _kept_outcome(r: CaseResult) -> str:
    if not r.verified:
        return "not verified"
    kept = r.kept_quantisation
    if kept and r.converted_quantised_tensors:
        left, made = sum(r.quantised_tensors.values()), sum(r.converted_quantised_tensors.values())
        if left < made:
            return f"verified, quantisation partly kept ({left} of {made} quantised tensors, {100 * left / made:.0f}%)"
    return {True: "verified, quantisation kept", False: "quantisation undone", None: "verified, unknown"}[kept]


def _size_ratio(output: int | None, float_bytes: int | None) -> str:
    if output is None:
        return "unknown"
    if not float_bytes:
        return f"{output / 2**20:.2f} MiB"
    return f"{output / 2**20:.2f} / {float_bytes / 2**20:.2f} MiB ({output / float_bytes:.2f}x)"


def _ratio(count: int | None, of: int) -> str:
    if count is None:
        return "unknown"
    return f"{count}/{of} ({100 * count / of:.0f}%)" if of else "-"


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
    findings = _findings(r)
    return (f"| {r.model} | {r.route} | {_scenario(r)} | {r.fault_kind or '-'} | {_share(r.mismatch_before, r.images)} "
            f"| {findings} | {', '.join(r.repairs_applied) or '-'} | {_share(r.mismatch_after, r.images)} "
            f"| {_count(r.holdout_before)} -> {_count(r.holdout_after)} of {r.holdout_images} "
            f"| {_float(r.max_abs_before)} -> {_float(r.max_abs_after)} | {r.seconds:.0f} | {r.peak_mib:.0f} |")


def _findings(r: CaseResult) -> str:
    """The report's findings, and whether the first one localization emitted (before repair reordered them)
    names the planted category."""
    text = ", ".join(f"{c} x{n}" if n > 1 else c for c, n in r.findings.items()) or "-"
    if not (r.expected_category and r.detected and r.findings):
        return text
    if r.findings_emitted is None:
        return text + " (order not recorded)"
    first = r.findings_emitted[0]["category"] if r.findings_emitted else None
    if first == r.expected_category:
        return text + " (first emitted is right)"
    return text + f" (first emitted is {first or 'none'}, planted {r.expected_category})"


def _scenario(r: CaseResult) -> str:
    scenario = f"{r.scenario} (--keep-quantisation)" if r.keep_quantisation else r.scenario
    return f"{scenario}, {r.case_id.split('__options-')[1].split('__')[0]}" if "__options-" in r.case_id else scenario


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
