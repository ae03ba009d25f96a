"""The HTML report: one self-contained page (inline CSS and SVG, photos as data: URIs, no script, no network)
that a person can open, attach to a ticket or archive as a CI artefact.

Built from the JSON report (docs/report-schema.md), so `safeconvert report r.json -o r.html` renders any
report after the fact, and `--html` renders the one just made. Thumbnails are read from the calibration
photos when the page is written.
"""

from __future__ import annotations

import json
from pathlib import Path


def render_html(report: dict) -> str:
    """The page for a report in its JSON form (`Report.to_dict()` or a parsed report file)."""
    from .findings import divergence, findings, repairs
    from .fmt import e
    from .images import disagreements
    from .overview import details, footer, header, metrics_table, route, tiles, verdict_banner
    from .style import CSS

    sections = [header(report), verdict_banner(report), tiles(report), route(report), metrics_table(report),
                findings(report), divergence(report), repairs(report), disagreements(report), details(report),
                footer(report)]
    title = f"safeconvert {report.get('command', '')}: {Path(str(report.get('target', {}).get('path', ''))).name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(sections)}</main></body></html>\n")


def write_html(report: dict, path: Path) -> None:
    """Write the page atomically (a half-written page must not replace a good one)."""
    from ..atomic import write_bytes_atomically

    write_bytes_atomically(Path(path), render_html(report).encode("utf-8"))


def html_from_json(report_json: Path, html: Path) -> None:
    """`safeconvert report`: render a saved JSON report."""
    from ..errors import BadInputError

    try:
        report = json.loads(Path(report_json).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"cannot read the report {report_json}: {exc}") from None
    if not isinstance(report, dict) or "command" not in report or "source" not in report:
        raise BadInputError(f"{report_json} is not a safeconvert report (no 'command' and 'source')")
    write_html(report, html)
