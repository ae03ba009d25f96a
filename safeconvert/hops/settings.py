"""How hops are isolated in a run: limits, and which interpreter runs which converter."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .envs import ConverterEnvs
from .isolate import Limits


@dataclass
class Isolation:
    """Per-hop limits and converter interpreters; `enabled` False runs converters in-process (as before).

    In-process is only the fallback for an embedded interpreter with no executable to start children with.
    """

    limits: Limits = field(default_factory=Limits)
    envs: ConverterEnvs = field(default_factory=ConverterEnvs)
    enabled: bool = True

    @property
    def active(self) -> bool:
        return self.enabled and bool(sys.executable)


def isolation_from_options(hop_timeout: float | None, hop_memory: int | None, converter_env: list[str] | None,
                           config: Path | None) -> Isolation:
    """The command line's --hop-timeout, --hop-memory, --converter-env and --config (or ./safeconvert.toml)."""
    from ..errors import BadInputError
    from .envs import converter_envs

    if hop_timeout is not None and hop_timeout <= 0:
        raise BadInputError(f"--hop-timeout must be a positive number of seconds, got {hop_timeout:g}")
    if hop_memory is not None and hop_memory <= 0:
        raise BadInputError(f"--hop-memory must be a positive number of MB, got {hop_memory}")
    limits = Limits(timeout=hop_timeout if hop_timeout is not None else Limits().timeout, memory_mb=hop_memory)
    return Isolation(limits=limits, envs=converter_envs(converter_env, config))


def with_isolation(request, hop_timeout: float | None, hop_memory: int | None, converter_env: list[str] | None,
                   config: Path | None):
    """`request` (a convert or repair request) with the isolation the command line asked for."""
    request.isolation = isolation_from_options(hop_timeout, hop_memory, converter_env, config)
    return request
