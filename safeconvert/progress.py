"""Progress bars for the long steps (conversion hops, validation batches, TVM builds, localization stages).

A run can take minutes on a real model, so a person at a terminal should see which step is running. A log
file, a pipe, `--quiet` and `--json` must get nothing: scripts read those outputs. The command line turns
the display on with `shown(...)`; the stages announce themselves with `task(...)`, which costs nothing
when no display is on (the default, e.g. for the Python API).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

Advance = Callable[..., None]

# What the Stopwatch stages mean to a reader; unknown stages are shown by their name.
STAGE_LABELS = {
    "plan": "planning the route",
    "load_source": "loading the source model",
    "load_target": "loading the converted model",
    "validate": "validating on the calibration images",
    "localize": "localizing the disagreement",
    "localize_and_repair": "localizing and repairing",
    "write": "writing the verified model",
    "tool": "checking the converter options",
    "input": "trying input transforms",
    "import_and_align": "importing both models into TVM and aligning layers",
    "static": "comparing layer parameters and attributes",
    "activations": "building both models in TVM and tracing activations",
}

_display: Progress | None = None
# Scratch folders and the name a user knows their contents by (the OUT a conversion is made for).
_scratch_names: dict[Path, str] = {}


def wanted(quiet: bool = False, as_json: bool = False) -> bool:
    """Show progress only to a person: stderr is a terminal and no machine-read mode was asked for."""
    return not quiet and not as_json and sys.stderr.isatty()


@contextmanager
def shown(enabled: bool, console: Console | None = None) -> Iterator[None]:
    """Display the tasks started inside this block (on stderr unless a console is given); erased at the end."""
    global _display
    if not enabled or _display is not None:
        yield
        return
    _display = _new_display(console)
    try:
        with _display:
            yield
    finally:
        _display = None


def _new_display(console: Console | None) -> Progress:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn,
                               TimeElapsedColumn)
    from rich.text import Text

    class CountedOnly(ProgressColumn):
        """A column drawn only for tasks with a known total (stages are spinners, batches are bars)."""

        def __init__(self, column: ProgressColumn):
            super().__init__()
            self.column = column

        def get_table_column(self):
            return self.column.get_table_column()

        def render(self, task):
            return self.column(task) if task.total is not None else Text("")

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), CountedOnly(BarColumn()),
                    CountedOnly(MofNCompleteColumn()), TimeElapsedColumn(), console=console or Console(stderr=True),
                    transient=True, redirect_stdout=False)  # stdout may be a file; only stderr lines go above the bars


@contextmanager
def task(description: str, total: int | None = None) -> Iterator[Advance]:
    """One step: a bar when `total` is known, a spinner otherwise. Yields advance(n=1)."""
    display = _display
    if display is None:
        yield _nothing
        return
    task_id = display.add_task(description, total=total)
    try:
        yield lambda amount=1: display.advance(task_id, amount)
    finally:
        display.remove_task(task_id)


@contextmanager
def stage(name: str) -> Iterator[Advance]:
    """A named pipeline stage (as the Stopwatch names them), shown as a spinner."""
    with task(stage_label(name)) as advance:
        yield advance


def stage_label(name: str) -> str:
    if name.startswith("convert:"):
        return f"converting with {name.split(':', 1)[1]}"
    return STAGE_LABELS.get(name, name.replace("_", " ").replace(":", ": "))


@contextmanager
def named(folder: Path, name: str) -> Iterator[None]:
    """Show models built inside the scratch `folder` under `name` (e.g. "out.onnx (converted)").

    Hops and repair candidates are written under internal names (hop1-tflite.tflite, repair-3.onnx); a person
    watching the display knows only the source and OUT, so tasks name those instead.
    """
    key = Path(folder).absolute()
    _scratch_names[key] = name
    try:
        yield
    finally:
        _scratch_names.pop(key, None)


def display_name(path) -> str:
    """A model's name as the user knows it: the name given to its scratch folder, else its file name."""
    if not isinstance(path, (str, Path)):
        return str(path)
    absolute = Path(path).absolute()
    for folder, name in _scratch_names.items():
        if absolute.is_relative_to(folder):
            return name
    return absolute.name


def active() -> bool:
    return _display is not None


def _nothing(amount: int = 1) -> None:
    """The advance callback when nothing is displayed."""
