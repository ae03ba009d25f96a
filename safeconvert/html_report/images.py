"""The photos whose top-1 label changed: a thumbnail, both models' top-5 labels, and what the repair changed.

When a repair ran, the interesting images are the ones that disagreed before it; each card then says
whether the repaired model agrees on it. Images that still disagree after the repair get a card too.
"""

from __future__ import annotations

from .fmt import e, num
from .thumbnails import thumbnail_uri

CARD_LIMIT = 24  # the JSON lists every image; the page shows the first ones


def disagreements(report: dict) -> str:
    before = (report.get("metrics_before_repair") or {}).get("disagreements", [])
    after = (report.get("metrics") or {}).get("disagreements", [])
    repaired = report.get("metrics_before_repair") is not None
    rows = _merged(before, after) if repaired else [(d, None) for d in after]
    if not rows:
        return ""
    names = _names(report)
    ambiguous = set((report.get("verdict") or {}).get("ambiguous_images", []))
    cards = "".join(_card(first, later, repaired, names, report.get("calibration", {}), ambiguous)
                    for first, later in rows[:CARD_LIMIT])
    more = f'<p class="sub">... and {len(rows) - CARD_LIMIT} more in the JSON report.</p>' if len(rows) > CARD_LIMIT else ""
    when = " before repair" if repaired else ""
    return (f'<section id="images"><h2>Images whose top-1 label changed{when} ({len(rows)})</h2>'
            f'<div class="cards">{cards}</div>{more}</section>')


def _merged(before: list[dict], after: list[dict]) -> list[tuple[dict, dict | None]]:
    """(disagreement before repair, the same image's disagreement after it or None), then new ones."""
    later = {d["image"]: d for d in after}
    rows = [(d, later.pop(d["image"], None)) for d in before]
    return rows + [(d, d) for d in later.values()]


def _names(report: dict) -> list[str]:
    from ..summary import label_names

    return label_names(report.get("metrics") or report.get("metrics_before_repair"))


def _card(first: dict, later: dict | None, repaired: bool, names: list[str], calibration: dict, ambiguous: set) -> str:
    uri = thumbnail_uri(first, calibration)
    picture = (f'<img src="{uri}" alt="{e(first["image"])}" width="96" height="96">' if uri
               else '<div class="noimg">image not available</div>')
    source_top, target_top = first.get("source_top5", []), first.get("target_top5", [])
    top1 = first.get("source_label")
    heading = "converted" if not repaired else "converted, after repair" if first is later else "converted, before repair"
    return (f'<div class="card">{picture}<div><div class="name" title="{e(first.get("image_path") or "")}">'
            f'{e(first["image"])}</div><div class="cols">'
            f'<div><div class="colhead">source</div>{_top5(source_top, names, top1, is_source=True)}</div>'
            f'<div><div class="colhead">{heading}</div>{_top5(target_top, names, top1, is_source=False)}</div>'
            f'</div></div><div class="foot">{_footnote(first, later, repaired, names, ambiguous)}</div></div>')


def _top5(labels: list[int], names: list[str], source_top1: int, is_source: bool) -> str:
    items = []
    for position, label in enumerate(labels):
        css = ""
        if label == source_top1:
            css = ' class="same"'
        elif position == 0 and not is_source:
            css = ' class="changed"'
        items.append(f'<li{css} title="{e(_label(label, names))}">{e(_short_label(label, names))}</li>')
    return f"<ol>{''.join(items)}</ol>"


def _label(index: int, names: list[str]) -> str:
    """The full class name with its index (shown as a tooltip)."""
    from ..summary import label_name

    named = label_name(index, names)
    return named if named == str(index) else f"{named} ({index})"


def _short_label(index: int, names: list[str]) -> str:
    """ImageNet names list synonyms ("worm fence, snake fence, ..."): the first one is enough on a card."""
    from ..summary import label_name

    return label_name(index, names).split(",")[0]


def _footnote(first: dict, later: dict | None, repaired: bool, names: list[str], ambiguous: set) -> str:
    parts = [f"source margin {num(first.get('source_margin'))}"]
    if first["image"] in ambiguous:
        parts.append("near-tie: not counted")
    if repaired and first is later:
        parts.append('<span class="still">agreed before the repair, changed by it</span>')
    elif repaired and later is None:
        parts.append('<span class="fixed">after repair: agrees</span>')
    elif repaired:
        parts.append(f'<span class="still">after repair: still {e(_short_label(later["target_label"], names))}</span>')
    return " &middot; ".join(parts)
