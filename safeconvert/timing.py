"""Wall time per named stage, accumulated into a dict that reports carry."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from . import progress


class Stopwatch:
    """Collects wall time per named stage (seconds, summed when a stage repeats)."""

    def __init__(self, timings: dict[str, float] | None = None):
        self.timings = timings if timings is not None else {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            with progress.stage(name):  # a spinner per stage on an interactive terminal, nothing otherwise
                yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 4)
