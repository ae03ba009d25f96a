"""A concise terminal summary of a report (rich), readable in a CI log as well as a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .report import Report


def class_names() -> list[str]:
    """ImageNet-1k class names in index order, for naming labels in summaries."""
    from importlib import resources

    text = (resources.files("safeconvert") / "data" / "imagenet_classes.txt").read_text()
    return text.splitlines()


def label_names(metrics: dict | None) -> list[str]:
    """ImageNet names when the model's output has 1000 values; none otherwise (labels are then shown as numbers)."""
    return class_names() if (metrics or {}).get("output_size") == 1000 else []


def label_name(index: int, names: list[str]) -> str:
    return names[index] if len(names) == 1000 and 0 <= index < len(names) else str(index)


def print_summary(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    route = " -> ".join([report.source.get("format", "?")] + [h.target_format for h in report.route])
    tools = ", ".join(f"{h.converter} {h.tool_version or ''}".strip() for h in report.route)
    console.print(f"[bold]{report.command}[/bold] {report.source['path']} -> {report.target['path']}")
    if report.route:
        console.print(f"route: {route}  ({tools})")
    for hop in report.route:
        for option in hop.numeric_options:
            console.print(f"[yellow]note:[/yellow] {hop.converter} ran with {option}")
    if report.metrics_before_repair:
        console.print("before repair:")
        console.print(metrics_table(report, report.metrics_before_repair))
    _print_findings(report, console)
    _print_notes(report, console)
    _print_repairs(report, console)
    if report.metrics:
        if report.metrics_before_repair:
            console.print("after repair:")
        console.print(metrics_table(report))
        _print_outputs(report, console)
        _print_disagreements(report, console)
    _print_verdict(report, console)


def metrics_table(report: Report, metrics: dict | None = None) -> Table:
    m = metrics or report.metrics or {}
    table = Table(show_header=True, header_style="bold")
    for column in ("images", "top-1 agree", "top-5 agree", "max |diff|", "mean |diff|", "cosine"):
        table.add_column(column, justify="right")
    table.add_row(
        str(m["images"]),
        f"{m['top1_agreement']:.1%} ({m['images'] - m['top1_mismatches']}/{m['images']})",
        f"{m['top5_agreement']:.1%}",
        _num(m["max_abs_diff"]),
        _num(m["mean_abs_diff"]),
        f"{m['cosine_similarity']:.6f}",
    )
    return table


def _print_outputs(report: Report, console: Console) -> None:
    """Every output on its own scale, when the model has several (labels above come from the first)."""
    metrics = report.metrics or {}
    outputs = metrics.get("outputs") or []
    if metrics.get("unmatched_outputs"):
        console.print(f"[red]outputs not paired:[/red] {metrics['unmatched_outputs']}")
    if len(outputs) < 2:
        return
    failed = set((report.verdict or {}).get("failed_outputs", []))
    table = Table(show_header=True, header_style="bold")
    for column in ("output", "target output", "max |diff|", "scale", "|diff|/scale", "worst cosine", ""):
        table.add_column(column, justify="right")
    for out in outputs:
        status = "[red]fails[/red]" if out["name"] in failed else "ok"
        table.add_row(out["name"], out.get("target_name") or "-", _num(out["max_abs_diff"]), _num(out["scale"]),
                      _num(out["relative_max_diff"]), _num(out["min_cosine"]), status)
    console.print(f"every output (paired by {metrics.get('output_matching')}):")
    console.print(table)


def _print_findings(report: Report, console: Console, limit: int = 12) -> None:
    if not report.findings:
        return
    table = Table("#", "category", "finding", "target layer", show_header=True, header_style="bold")
    for index, finding in enumerate(report.findings[:limit], start=1):
        table.add_row(str(index), f"{finding['category']} ({finding['title']})", finding["summary"],
                      str(finding.get("target_layer") or "-"))
    console.print(f"findings ({len(report.findings)}, most likely cause first):")
    console.print(table)
    if report.divergence and report.divergence.get("first_divergent") is not None:
        first = report.divergence["layers"][report.divergence["first_divergent"]]
        console.print(f"activations first diverge at {first['kind']} {first['target_layer']} "
                      f"(relative error {first['error']:.3g})")


def _print_notes(report: Report, console: Console) -> None:
    for note in report.localization_notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def _print_repairs(report: Report, console: Console) -> None:
    for record in report.repairs:
        change = ""
        if record.get("mismatches_after") is not None:
            change = f" (label changes {record['mismatches_before']} -> {record['mismatches_after']})"
        colour = {"applied": "green", "rolled back": "yellow"}.get(record["status"], "red")
        console.print(f"[{colour}]{record['status']}[/{colour}] {record['category']}: {record['detail'] or record['finding']}{change}")


def _print_disagreements(report: Report, console: Console, limit: int = 10) -> None:
    rows = (report.metrics or {}).get("disagreements", [])
    if not rows:
        return
    names = label_names(report.metrics)
    console.print(f"images whose top-1 label changed ({len(rows)}):")
    for row in rows[:limit]:
        console.print(f"  {row['image']}: {label_name(row['source_label'], names)} -> {label_name(row['target_label'], names)}"
                      f"  (source margin {row['source_margin']:.3g})")
    if len(rows) > limit:
        console.print(f"  ... and {len(rows) - limit} more (see the JSON report)")


def _print_verdict(report: Report, console: Console) -> None:
    if report.verdict is None:
        return
    excused = report.verdict.get("near_ties_excused") or 0
    if excused:
        console.print(f"[yellow]note:[/yellow] {excused} label change(s) on near-tied images excused "
                      f"(cap {report.thresholds.get('max_near_ties', '?')}): {', '.join(report.verdict.get('ambiguous_images', []))}")
    if report.verified:
        console.print("[bold green]verified[/bold green]" + (f": wrote {report.output}" if report.output else ""))
        return
    console.print("[bold red]NOT verified[/bold red]: " + "; ".join(report.verdict.get("reasons", [])))
    if report.output:
        console.print(f"[yellow]wrote the unverified model anyway (--allow-unverified): {report.output}[/yellow]")
    elif report.command == "convert":
        console.print("nothing was written at the output path")


def _num(value) -> str:
    return value if isinstance(value, str) else f"{value:.3g}"
