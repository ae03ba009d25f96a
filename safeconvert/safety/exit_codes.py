"""Exit codes of failures that are not SafeConvertErrors, so the report records what the CLI will return.

Without this, a run cut short by Ctrl-C, SIGTERM, a full disk or a bug of ours would leave a report that
still says exit_code 0. The CLI prints the message; these are the same codes as its table in the README.
"""

from __future__ import annotations

from ..errors import EXIT_BAD_INPUT
from .disk import disk_problem
from .signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated

EXIT_INTERNAL = 4


def exit_code_for(exc: BaseException) -> int:
    """The exit code `safeconvert.cli.main` turns `exc` into."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    if disk_problem(exc) is not None:
        return EXIT_BAD_INPUT
    return EXIT_INTERNAL


def describe(exc: BaseException) -> str:
    """A short description for the report's `error` field."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, Terminated):
        return "terminated"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
