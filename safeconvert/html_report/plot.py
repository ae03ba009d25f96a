"""The per-layer divergence plot as inline SVG: relative error of the target's activations vs the source's at
every aligned layer, on a log scale, with the detection floor and the first diverging layer marked.

Hand-written SVG rather than a plotting library: the page stays self-contained and crisp at any zoom, the
report needs no extra dependency, and every point carries a tooltip (<title>) naming its layers.
"""

from __future__ import annotations

import math
from html import escape

from .fmt import num

LINE_COLOUR = "#1f6feb"  # the error series; the browser test looks for it in the screenshot
FIRST_COLOUR = "#d1242f"  # the first diverging layer
FLOOR_COLOUR = "#8c959f"  # the detection floor
WIDTH, HEIGHT = 920, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 18, 46
SMALLEST = 1e-9  # exact zeros are drawn at the bottom of the axis


def divergence_svg(divergence: dict) -> str:
    """The plot for a report's `divergence` object (layers in execution order, `first_divergent` index)."""
    from ..ir.compare import DIVERGENCE_FLOOR

    errors = [_finite(layer["error"]) for layer in divergence["layers"]]
    low, high = _decades(errors)
    scale = _Scale(len(errors), low, high)
    first = divergence.get("first_divergent")
    parts = [_axes(scale, low, high), _floor_line(scale, DIVERGENCE_FLOOR), _series(scale, errors)]
    if first is not None:
        parts.append(_first_marker(scale, first, errors[first], divergence["layers"][first]))
    parts.append(_points(scale, errors, divergence["layers"], first))
    return (f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" xmlns="http://www.w3.org/2000/svg" '
            f'aria-label="relative error per aligned layer">{"".join(parts)}</svg>')


class _Scale:
    """Layer index -> x pixel, error -> y pixel (log10)."""

    def __init__(self, count: int, low: int, high: int):
        self.count, self.low, self.high = max(count, 2), low, high

    def x(self, index: int) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * index / (self.count - 1)

    def y(self, error: float) -> float:
        value = math.log10(max(error, 10.0 ** self.low))
        return TOP + (HEIGHT - TOP - BOTTOM) * (self.high - value) / (self.high - self.low)


def _finite(value) -> float:
    """Errors may arrive as strings ("inf"/"nan") from JSON: plot them at the top or the bottom."""
    number = float(value)
    if math.isnan(number):
        return SMALLEST
    return min(number, 1e6)


def _decades(errors: list[float]) -> tuple[int, int]:
    """Whole powers of ten that hold every error (and at least 1e-6..1, so scales compare across reports)."""
    positive = [e for e in errors if e > 0]
    low = min([-6] + [math.floor(math.log10(e)) for e in positive])
    high = max([0] + [math.ceil(math.log10(e)) for e in positive])
    return max(low, round(math.log10(SMALLEST))), high


def _axes(scale: _Scale, low: int, high: int) -> str:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    out = [f'<rect x="{LEFT}" y="{TOP}" width="{right - LEFT}" height="{bottom - TOP}" fill="#ffffff" stroke="#d0d7de"/>']
    step = 1 if high - low <= 8 else 2
    for power in range(low, high + 1, step):
        y = scale.y(10.0 ** power)
        out.append(f'<line x1="{LEFT}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">1e{power}</text>')
    for index in _x_ticks(scale.count):
        x = scale.x(index)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#57606a"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle" class="tick">{index}</text>')
    out.append(f'<text x="{(LEFT + right) / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle" class="axis">'
               f'aligned layer (execution order)</text>')
    out.append(f'<text transform="translate(14 {(TOP + bottom) / 2:.0f}) rotate(-90)" text-anchor="middle" '
               f'class="axis">relative error</text>')
    return "".join(out)


def _x_ticks(count: int) -> list[int]:
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 10**9) if count / s <= 12)
    return list(range(0, count, step))


def _floor_line(scale: _Scale, floor: float) -> str:
    y = scale.y(floor)
    return (f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{FLOOR_COLOUR}" '
            f'stroke-dasharray="6 4"/><text x="{WIDTH - RIGHT - 6}" y="{y - 5:.1f}" text-anchor="end" '
            f'class="note">divergence floor {floor:g}</text>')


def _series(scale: _Scale, errors: list[float]) -> str:
    coords = " ".join(f"{scale.x(i):.1f},{scale.y(e):.1f}" for i, e in enumerate(errors))
    return (f'<polyline points="{coords}" fill="none" stroke="{LINE_COLOUR}" stroke-width="2.5" '
            f'stroke-linejoin="round" class="series"/>')


def _first_marker(scale: _Scale, index: int, error: float, layer: dict) -> str:
    x, y = scale.x(index), scale.y(error)
    anchor = "end" if x > WIDTH * 0.6 else "start"
    shift = -8 if anchor == "end" else 8
    label = f"first divergence: #{index} {layer.get('kind', '')} ({num(error)})"
    return (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{FIRST_COLOUR}" '
            f'stroke-width="2" stroke-dasharray="5 3"/>'
            f'<text x="{x + shift:.1f}" y="{TOP + 16}" text-anchor="{anchor}" class="first">{escape(label)}</text>'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="none" stroke="{FIRST_COLOUR}" stroke-width="2.5"/>')


def _points(scale: _Scale, errors: list[float], layers: list[dict], first: int | None) -> str:
    radius = 3.0 if len(errors) <= 150 else 1.8
    out = []
    for index, (error, layer) in enumerate(zip(errors, layers)):
        colour = FIRST_COLOUR if index == first else LINE_COLOUR
        tip = (f"#{index} {layer.get('kind', '')}: relative error {error:.3g}\nsource: {layer.get('source_layer')}"
               f"\ntarget: {layer.get('target_layer')}")
        out.append(f'<circle cx="{scale.x(index):.1f}" cy="{scale.y(error):.1f}" r="{radius}" fill="{colour}">'
                   f'<title>{escape(tip)}</title></circle>')
    return "".join(out)
