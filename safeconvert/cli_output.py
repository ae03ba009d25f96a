"""How a command shows its outcome: the rich summary, nothing (--quiet), or the JSON report (--json).

Scripts read `--json` from stdout, so in that mode stdout carries exactly one JSON document, also when
the run fails (`{"error": ..., "exit_code": ...}`); the one-line error still goes to stderr as always.
Exit codes do not depend on the mode.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from .errors import SafeConvertError, one_line

if TYPE_CHECKING:
    from .pipeline import Outcome

QuietOption = typer.Option(False, "--quiet", "-q", help="Print nothing but errors (exit code only).")
JsonOption = typer.Option(False, "--json", help="Print the JSON report on stdout instead of the summary.")


def show_outcome(outcome: Outcome, quiet: bool = False, as_json: bool = False) -> None:
    """Print the outcome in the mode the user chose."""
    if as_json:
        print(outcome.report.to_json())
    elif quiet:
        return
    elif outcome.up_to_date:
        print(f"up to date: {outcome.report.output} is already verified from these source bytes and settings; nothing to do")
    else:
        from .summary import print_summary

        print_summary(outcome.report)


@contextmanager
def json_errors(as_json: bool) -> Iterator[None]:
    """With --json, a failed run still prints one JSON document on stdout before the usual one-line error."""
    try:
        yield
    except SafeConvertError as exc:
        if as_json:
            print(json.dumps({"error": one_line(exc), "exit_code": exc.exit_code}))
            sys.stdout.flush()
        raise
