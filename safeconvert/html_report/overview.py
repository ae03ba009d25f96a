"""The top of the page and the run's facts: verdict, headline numbers, route, metrics, settings, timings."""

from __future__ import annotations

from .fmt import e, num, pct

METRIC_COLUMNS = ("images", "top-1 agree", "label changes", "top-5 agree", "max |diff|", "max |diff| / scale",
                  "mean |diff|", "cosine")
OUTPUT_COLUMNS = ("source output", "target output", "values", "max |diff|", "scale", "max |diff| / scale",
                  "worst-image cosine", "label changes")


def header(report: dict) -> str:
    source, target = report.get("source", {}), report.get("target", {})
    written = report.get("output")
    return (f'<h1>safeconvert {e(report.get("command", ""))} report</h1>'
            f'<div class="paths sub"><code>{e(source.get("path"))}</code> ({e(source.get("format", "?"))}) &rarr; '
            f'<code>{e(target.get("path"))}</code> ({e(target.get("format", "?"))})'
            + (f' &nbsp;&middot;&nbsp; wrote <code>{e(written)}</code>' if written else "") + "</div>")


def verdict_banner(report: dict) -> str:
    """Green when verified, red when not, amber when the run failed before a verdict."""
    verdict, error = report.get("verdict"), report.get("error")
    if error and not verdict:
        return _banner("err", "FAILED", [f"{error} (exit code {report.get('exit_code')})"])
    if verdict and verdict.get("verified"):
        applied = [r for r in report.get("repairs", []) if r.get("status") == "applied"]
        title = "REPAIRED &amp; VERIFIED" if applied else "VERIFIED"
        lines = [f"{len(applied)} repair(s) applied; the result agrees with the source"] if applied else [
            "the conversion agrees with the source"]
        lines += [f"label changes on near-tied images, not counted: {', '.join(verdict.get('ambiguous_images', []))}"
                  ] if verdict.get("ambiguous_images") else []
        return _banner("ok", title, lines, escaped_title=True)
    if verdict and verdict.get("failed_outputs"):
        failed = ", ".join(verdict["failed_outputs"])
        return _banner("bad", "NOT VERIFIED", [f"failing output(s): {failed}"] + verdict.get("reasons", []) +
                       ([error] if error else []))
    reasons = (verdict or {}).get("reasons", []) + ([error] if error else [])
    return _banner("bad", "NOT VERIFIED", reasons)


def _banner(kind: str, title: str, lines: list[str], escaped_title: bool = False) -> str:
    items = "".join(f"<li>{e(line)}</li>" for line in lines)
    return (f'<div class="verdict {kind}" id="verdict"><div class="big">{title if escaped_title else e(title)}</div>'
            f'<ul>{items}</ul></div>')


def tiles(report: dict) -> str:
    """The headline numbers, before -> after when a repair ran."""
    before, after = report.get("metrics_before_repair"), report.get("metrics")
    if not after:
        return ""
    applied = sum(1 for r in report.get("repairs", []) if r.get("status") == "applied")
    cells = [
        ("top-1 agreement", _change(before, after, lambda m: pct(m.get("top1_agreement")))),
        ("label changes", _change(before, after, lambda m: num(m.get("top1_mismatches")))),
        ("max |diff| / scale", _change(before, after, _relative)),
        ("findings", str(len(report.get("findings", [])))),
        ("repairs applied", f"{applied} of {len(report.get('repairs', []))}"),
    ]
    body = "".join(f'<div class="tile"><div class="k">{e(k)}</div><div class="v">{v}</div></div>' for k, v in cells)
    return f'<section id="overview"><div class="tiles">{body}</div></section>'


def _change(before: dict | None, after: dict, show) -> str:
    if not before:
        return show(after)
    return f'{show(before)}<span class="arrow">&rarr;</span>{show(after)}'


def _relative(metrics: dict) -> str:
    """max |diff| over the robust scale the verdict uses (the output range in reports that predate it)."""
    diff, spread = metrics.get("max_abs_diff"), metrics.get("source_scale", metrics.get("source_output_range"))
    if isinstance(diff, str) or isinstance(spread, str) or not spread:
        return num(diff)
    return num(diff / spread, 2)


def route(report: dict) -> str:
    hops = report.get("route", [])
    if not hops:
        return ""
    rows = "".join(_hop_row(i, hop) for i, hop in enumerate(hops, start=1))
    head = "".join(f"<th>{c}</th>" for c in ("#", "converter", "version", "from", "to", "options"))
    return (f'<section id="route"><h2>Route</h2><table><tr>{head}<th class="num">seconds</th></tr>{rows}</table>'
            "</section>")


def _hop_row(index: int, hop: dict) -> str:
    options = {k: v for k, v in (hop.get("options") or {}).items() if v not in (None, False, [], {}, "")}
    shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
    numeric = "".join(f'<div class="changed">changes numerics: {e(o)}</div>' for o in hop.get("numeric_options", []))
    return (f"<tr><td>{index}</td><td><b>{e(hop.get('converter'))}</b></td><td>{e(hop.get('tool_version') or '-')}</td>"
            f"<td>{e(hop.get('source_format'))}</td><td>{e(hop.get('target_format'))}</td>"
            f'<td><span class="mono">{e(shown)}</span>{numeric}</td><td class="num">{num(hop.get("seconds"))}</td></tr>')


def metrics_table(report: dict) -> str:
    rows = []
    if report.get("metrics_before_repair"):
        rows.append(_metrics_row("before repair", report["metrics_before_repair"]))
    if report.get("metrics"):
        rows.append(_metrics_row("after repair" if rows else "validation", report["metrics"]))
    if not rows:
        return ""
    head = "<th></th>" + "".join(f'<th class="num">{e(c)}</th>' for c in METRIC_COLUMNS)
    note = _calibration_note(report.get("calibration", {}))
    return (f'<section id="metrics"><h2>Source vs converted outputs</h2><table><tr>{head}</tr>{"".join(rows)}</table>'
            f'{_outputs_table(report)}{note}</section>')


def _outputs_table(report: dict) -> str:
    """Every output compared, each on its own scale, the failing ones marked (labels come from the first)."""
    metrics = report.get("metrics") or {}
    outputs = metrics.get("outputs") or []
    if len(outputs) < 2 and not metrics.get("unmatched_outputs"):
        return ""
    failed = set((report.get("verdict") or {}).get("failed_outputs", []))
    head = "".join(f'<th class="num">{e(c)}</th>' for c in OUTPUT_COLUMNS)
    rows = "".join(_output_row(o, o.get("name") in failed) for o in outputs)
    how = (f'outputs paired by {e(metrics.get("output_matching"))}' if not metrics.get("unmatched_outputs")
           else e(metrics["unmatched_outputs"]))
    return f'<h3 style="margin-top:12px">Every output</h3><p class="sub">{how}</p><table><tr>{head}</tr>{rows}</table>'


def _output_row(output: dict, failed: bool) -> str:
    cells = [e(output.get("name")), e(output.get("target_name") or "-"), num(output.get("values")),
             num(output.get("max_abs_diff")), num(output.get("scale")), num(output.get("relative_max_diff"), 2),
             num(output.get("min_cosine"), 6), num(output.get("top1_mismatches"))]
    mark = ' class="changed"' if failed else ""
    return f"<tr{mark}>" + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>"


def _calibration_note(calib: dict) -> str:
    if not calib:
        return ""
    cached = f' Source outputs {e(calib["source_outputs"])}.' if calib.get("source_outputs") else ""
    return (f'<p class="sub">{num(calib.get("images"))} calibration images from <code>{e(calib.get("source"))}</code>, '
            f'preprocessing <code>{e(calib.get("preprocess"))}</code>.{cached}</p>')


def _metrics_row(label: str, m: dict) -> str:
    images, changed = m.get("images", 0), m.get("top1_mismatches", 0)
    cells = [num(images), f"{pct(m.get('top1_agreement'))} ({images - changed}/{images})", num(changed),
             pct(m.get("top5_agreement")), num(m.get("max_abs_diff")), _relative(m), num(m.get("mean_abs_diff")),
             num(m.get("cosine_similarity"), 6)]
    return f"<tr><th>{e(label)}</th>" + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>"


def details(report: dict) -> str:
    """Thresholds, notes and timings: what a reader needs to reproduce or question the verdict."""
    thresholds = ", ".join(f"{k}={v}" for k, v in report.get("thresholds", {}).items())
    timings = report.get("timings", {})
    timing_rows = "".join(f'<tr><td class="mono">{e(k)}</td><td class="num">{num(v)}</td></tr>' for k, v in timings.items())
    notes = "".join(f"<li>{e(n)}</li>" for n in report.get("localization_notes", []))
    return (f'<section id="details"><h2>Settings and timings</h2><div class="kv">'
            f'<div>thresholds</div><div class="mono">{e(thresholds) or "-"}</div>'
            f'<div>exit code</div><div>{num(report.get("exit_code"))}</div></div>'
            + (f"<h2 style='margin-top:12px'>Notes</h2><ul>{notes}</ul>" if notes else "")
            + (f'<table style="margin-top:12px;max-width:480px"><tr><th>stage</th><th class="num">seconds</th></tr>'
               f"{timing_rows}</table>" if timing_rows else "")
            + "</section>")


def footer(report: dict) -> str:
    return (f"<footer>safeconvert {e(report.get('safeconvert_version'))} &middot; report schema "
            f"{e(report.get('schema_version'))} &middot; Python {e(report.get('python'))}</footer>")
