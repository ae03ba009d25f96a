"""What localization found and what the repair did: findings by category, the divergence plot, the repairs."""

from __future__ import annotations

from .fmt import category_chip, e, evidence, layer, num, status_chip
from .plot import FIRST_COLOUR, FLOOR_COLOUR, LINE_COLOUR, divergence_svg
from .style import CATEGORY_COLOURS


def _titles() -> dict[str, str]:
    from ..localize.findings import CATEGORY_TITLES

    return {category.value: title for category, title in CATEGORY_TITLES.items()}


def findings(report: dict) -> str:
    """Findings grouped by category, groups in the order of their best-ranked finding (rank numbers kept)."""
    found = report.get("findings", [])
    if not found:
        return ""
    groups: dict[str, list[tuple[int, dict]]] = {}
    for rank, finding in enumerate(found, start=1):
        groups.setdefault(finding.get("category", "?"), []).append((rank, finding))
    head = "".join(f"<th>{c}</th>" for c in ("#", "finding", "source layer", "target layer", "evidence", "repair"))
    rows = "".join(_group(category, items) for category, items in groups.items())
    return (f'<section id="findings"><h2>Findings ({len(found)}, most likely cause first)</h2>{_category_strip(groups)}'
            f"<table><tr>{head}</tr>{rows}</table></section>")


def _category_strip(groups: dict) -> str:
    """Every category, with its count; categories with nothing found are greyed."""
    chips = []
    for category, title in _titles().items():
        count = len(groups.get(category, []))
        colour = CATEGORY_COLOURS[category]
        off = "" if count else " off"
        chips.append(f'<span class="chip{off}" style="background:{colour}" title="{e(title)}">'
                     f"{category} {e(title)}: {count}</span>")
    return f'<div class="chips">{"".join(chips)}</div>'


def _group(category: str, items: list[tuple[int, dict]]) -> str:
    title = items[0][1].get("title") or _titles().get(category, "")
    header = f'<tr class="group"><td colspan="6">{category_chip(category)} {e(title)} ({len(items)})</td></tr>'
    return header + "".join(_finding_row(rank, f) for rank, f in items)


def _finding_row(rank: int, finding: dict) -> str:
    repair = finding.get("repair") or {}
    return (f"<tr><td>{rank}</td><td>{e(finding.get('summary'))}</td><td>{layer(finding.get('source_layer'))}</td>"
            f"<td>{layer(finding.get('target_layer'))}</td><td>{evidence(finding.get('evidence'))}</td>"
            f'<td class="mono">{e(repair.get("action", "-"))}</td></tr>')


def divergence(report: dict) -> str:
    """The per-layer error plot, or why there is none (nothing disagreed, or a cheap finding explained it)."""
    data = report.get("divergence")
    if not data or not data.get("layers"):
        if not report.get("findings"):
            return ""
        return ('<section id="divergence"><h2>Per-layer divergence</h2><p class="sub">Not measured: the findings '
                "explained the disagreement before activations were traced layer by layer. "
                "Runs with <code>--html PAGE</code> trace them.</p></section>")
    first = data.get("first_divergent")
    images = ", ".join(data.get("images", []))
    return (f'<section id="divergence"><h2>Per-layer divergence ({len(data["layers"])} aligned layers)</h2>'
            f'<figure style="margin:0">{divergence_svg(data)}</figure>{_legend()}{_first_text(data, first)}'
            f'<p class="sub">Relative error of the converted model\'s activations against the source\'s at each '
            f"aligned layer, measured on {e(images) or 'the disagreeing images'} before any repair. "
            "Hover a point for its layer names.</p></section>")


def _legend() -> str:
    return ('<div class="legend">'
            f'<span><span class="swatch" style="background:{LINE_COLOUR}"></span>relative error (target vs source)</span>'
            f'<span><span class="swatch" style="background:{FLOOR_COLOUR}"></span>divergence floor</span>'
            f'<span><span class="swatch" style="background:{FIRST_COLOUR}"></span>first diverging layer</span></div>')


def _first_text(data: dict, first: int | None) -> str:
    if first is None:
        return '<p>No layer diverges: every aligned layer stays within float noise.</p>'
    layer_error = data["layers"][first]
    return (f'<p>Activations first diverge at layer #{first}, a <b>{e(layer_error.get("kind"))}</b>: '
            f'source {layer(layer_error.get("source_layer"))}, target {layer(layer_error.get("target_layer"))} '
            f'(relative error {num(layer_error.get("error"))}).</p>')


def repairs(report: dict) -> str:
    records = report.get("repairs", [])
    if not records:
        return ""
    head = "".join(f"<th>{c}</th>" for c in ("status", "category", "what", "action"))
    head += '<th class="num">label changes</th><th class="num">max |diff|</th>'
    rows = "".join(_repair_row(r) for r in records)
    return f'<section id="repairs"><h2>Repairs ({len(records)} tried)</h2><table><tr>{head}</tr>{rows}</table></section>'


def _repair_row(record: dict) -> str:
    labels = _before_after(record.get("mismatches_before"), record.get("mismatches_after"))
    diffs = _before_after(record.get("max_abs_diff_before"), record.get("max_abs_diff_after"))
    what = record.get("detail") or record.get("finding")
    why = f'<div class="sub">{e(record["finding"])}</div>' if record.get("detail") and record.get("finding") else ""
    return (f"<tr><td>{status_chip(record.get('status', '?'))}</td><td>{category_chip(record.get('category', '?'))}</td>"
            f"<td>{e(what)}{why}</td><td class=\"mono\">{e(record.get('action', '-'))}</td>"
            f'<td class="num">{labels}</td><td class="num">{diffs}</td></tr>')


def _before_after(before, after) -> str:
    if before is None and after is None:
        return "-"
    return f"{num(before)} &rarr; {num(after)}"
