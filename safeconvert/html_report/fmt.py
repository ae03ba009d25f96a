"""Small HTML formatting helpers shared by the page's sections: numbers, chips, layer names, evidence."""

from __future__ import annotations

import re
from html import escape

from .style import CATEGORY_COLOURS, STATUS_COLOURS

FUSED_SEPARATOR = ";"  # TFLite names a fused op after every op it absorbed, joined by ';'


def e(value) -> str:
    """Escape anything for HTML text and attributes."""
    return escape("" if value is None else str(value), quote=True)


def num(value, digits: int = 3) -> str:
    """A number as people read it; strings ("inf" from JSON) and None pass through."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return e(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return compact(f"{value:.{digits}g}")


def compact(text: str) -> str:
    """1.2e-07 -> 1.2e-7: shorter, and still what Python and JSON read."""
    return re.sub(r"e([+-])0*(\d)", lambda m: f"e{'-' if m.group(1) == '-' else ''}{m.group(2)}", text)


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def chip(text: str, colour: str, title: str = "") -> str:
    tip = f' title="{e(title)}"' if title else ""
    return f'<span class="chip" style="background:{colour}"{tip}>{e(text)}</span>'


def category_chip(category: str, title: str = "") -> str:
    return chip(category, CATEGORY_COLOURS.get(category, "#57606a"), title)


def status_chip(status: str) -> str:
    return chip(status, STATUS_COLOURS.get(status, "#cf222e"))


def layer(name: str | None) -> str:
    """A layer name, shortened when it is a fused TFLite name (the full name stays in the tooltip)."""
    if not name:
        return '<span class="sub">-</span>'
    parts = str(name).split(FUSED_SEPARATOR)
    extra = f' <span class="fused">+{len(parts) - 1} fused</span>' if len(parts) > 1 else ""
    return f'<span class="layer" title="{e(name)}">{e(parts[0])}</span>{extra}'


def evidence(values: dict | None, limit: int = 8) -> str:
    """A finding's evidence as short `key: value` lines (nested keys joined by dots)."""
    items = list(_flatten(values or {}))
    if not items:
        return '<span class="sub">-</span>'
    lines = [f"<li><b>{e(key)}</b>: {e(_short(value))}</li>" for key, value in items[:limit]]
    if len(items) > limit:
        lines.append(f'<li class="sub">... {len(items) - limit} more in the JSON</li>')
    return f'<ul class="evidence">{"".join(lines)}</ul>'


def _flatten(values: dict, prefix: str = ""):
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and "array_shape" not in value:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _short(value, width: int = 90) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict) and "array_shape" in value:
        text = f"array {value['array_shape']}"
    elif isinstance(value, (list, tuple)):
        text = "(" + ", ".join(_short(v, width) for v in value) + ")"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."
