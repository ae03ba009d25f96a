"""Falling back to another converter for a hop: which routes to try next, and what the report says of each.

When a hop's converter fails (crash, hang, memory, error), the routes that swap in another converter for
that very hop come next, and those that swap an earlier hop after all others. When a route converts but its model is not verified (and repair could not fix it),
every other converter for every hop gets its turn. Routes are tried one swap at a time: the planned route is
the user's preference, so a fallback changes as little of it as it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..formats import Format
from ..localize.findings import Category, Finding, RepairProposal
from ..wrappers.base import Converter

KEPT, DROPPED = "kept", "dropped"


@dataclass
class Attempt:
    """One converter tried for one hop (report field `converters_tried`)."""

    converter: str
    hop: str  # e.g. "keras->onnx"
    hop_index: int  # from 1
    outcome: str  # kept | dropped
    why: str
    seconds: float

    def to_dict(self) -> dict:
        return {"converter": self.converter, "hop": self.hop, "hop_index": self.hop_index, "outcome": self.outcome,
                "why": self.why, "seconds": round(self.seconds, 3)}


def hop_formats(route: list[Converter], src_format: Format) -> list[Format]:
    """The input format of each hop of `route`."""
    formats = [src_format]
    for converter in route[:-1]:
        formats.append(converter.target)
    return formats


def hop_name(route: list[Converter], index: int, src_format: Format) -> str:
    return f"{hop_formats(route, src_format)[index].value}->{route[index].target.value}"


class RouteQueue:
    """The routes still to try, in order; each distinct route is handed out once."""

    def __init__(self, route: list[Converter], src_format: Format,
                 alternatives: Callable[[Converter, Format], list[Converter]]):
        self.src_format = src_format
        self.alternatives = alternatives
        self.pending: list[list[Converter]] = [list(route)]
        self.seen: set[tuple[str, ...]] = {_key(route)}

    def next(self) -> list[Converter] | None:
        return self.pending.pop(0) if self.pending else None

    def after_failure(self, route: list[Converter], index: int) -> None:
        """Hop `index` failed: the routes with another converter for that hop go first; those that change an
        earlier hop go last (an earlier converter's output, e.g. its opset, can be what the failing one chokes on)."""
        self.pending[:0] = self._swaps(route, [index])
        self.pending.extend(self._swaps(route, range(index)))

    def after_unverified(self, route: list[Converter]) -> None:
        """The route converted but was not verified: every single-hop swap goes to the back."""
        self.pending.extend(self._swaps(route, range(len(route))))

    def _swaps(self, route: list[Converter], indices) -> list[list[Converter]]:
        formats = hop_formats(route, self.src_format)
        swaps = []
        for index in indices:
            for other in self.alternatives(route[index], formats[index]):
                candidate = [*route[:index], other, *route[index + 1:]]
                if _key(candidate) not in self.seen:
                    self.seen.add(_key(candidate))
                    swaps.append(candidate)
        return swaps


def _key(route: list[Converter]) -> tuple[str, ...]:
    return tuple(c.name for c in route)


def tool_finding(converter: str, hop: str, failure: str, message: str, log_tail: list[str],
                 status: int | None, next_converter: str | None) -> Finding:
    """A converter's failure as a TOOL finding, with its last lines and the fallback taken (if any)."""
    evidence = {"converter": converter, "hop": hop, "failure": failure, "exit_status": status,
                "log_tail": list(log_tail)[-20:]}
    repair = RepairProposal("fallback_converter", {"to": next_converter}) if next_converter else None
    return Finding(Category.TOOL, f"{converter} ({hop}): {message}", evidence=evidence, repair=repair)
