"""The run report: a stable JSON document (schema in docs/report-schema.md) and a terminal summary."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__

SCHEMA_VERSION = 1


@dataclass
class Hop:
    """One converter call of the route."""

    converter: str
    tool_version: str | None
    source_format: str
    target_format: str
    seconds: float
    options: dict = field(default_factory=dict)
    numeric_options: list[str] = field(default_factory=list)  # options that change numerics on purpose
    interpreter: str | None = None  # the Python that ran the converter (its child process), when isolated


@dataclass
class Report:
    command: str
    source: dict
    target: dict
    calibration: dict = field(default_factory=dict)
    route: list[Hop] = field(default_factory=list)
    metrics: dict | None = None  # after repair, when a repair ran
    verdict: dict | None = None
    metrics_before_repair: dict | None = None
    findings: list[dict] = field(default_factory=list)  # localization, ranked (first = most likely cause)
    repairs: list[dict] = field(default_factory=list)  # every repair tried: applied, rolled back, not applicable
    converters_tried: list[dict] = field(default_factory=list)  # every converter run per hop, kept or dropped, and why
    divergence: dict | None = None  # per aligned layer error of the target vs the source (first localization)
    localization_notes: list[str] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    output: str | None = None  # the path written, or None when nothing was written
    error: str | None = None
    exit_code: int = 0
    notes: list[str] = field(default_factory=list)  # what the run chose not to use, and why (an unsafe cache)
    safeconvert_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    python: str = field(default_factory=platform.python_version)

    @property
    def verified(self) -> bool:
        return bool(self.verdict and self.verdict.get("verified"))

    def to_dict(self) -> dict:
        return _json_safe(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def write(self, path: Path) -> None:
        from .atomic import write_bytes_atomically

        write_bytes_atomically(Path(path), (self.to_json() + "\n").encode())


_PAGES: ContextVar[tuple[Path, ...]] = ContextVar("safeconvert_report_pages", default=())


@contextmanager
def pages_rendered(*pages: Path | None) -> Iterator[None]:
    """Declare the files a caller will render from the report once the run ends (the CLI's --html page), so
    the run refuses them up front like the report path itself (pipeline.check_report_paths_of)."""
    token = _PAGES.set(tuple(Path(p) for p in pages if p is not None))
    try:
        yield
    finally:
        _PAGES.reset(token)


def rendered_pages() -> tuple[Path, ...]:
    return _PAGES.get()


def _json_safe(value):
    """Replace inf/nan (not valid JSON) with strings so the report parses everywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
