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

QuietOption = typer.Option(False, "--quiet", "-q", help="Print no summary: only a one-line reason on stderr when the "
                           "run is not verified or fails (the exit code says which).")
JsonOption = typer.Option(False, "--json", help="Print the JSON report on stdout instead of the summary.")
VerboseOption = typer.Option(False, "--verbose", help="Also show what the frameworks print (warnings, native runtime "
                             "logs); hidden by default.")


def show_outcome(outcome: Outcome, quiet: bool = False, as_json: bool = False) -> None:
    """Print the outcome in the mode the user chose; a run that is not verified always says why on stderr
    (in the summary otherwise), so a CI log shows the reason without --json."""
    if as_json or quiet:
        if as_json:
            print(outcome.report.to_json())
        reason = failure_line(outcome.report)
        if reason:
            sys.stdout.flush()
            print(reason, file=sys.stderr)
        return
    elif outcome.up_to_date:
        print(f"up to date: {outcome.report.output} is already verified from these source bytes and settings; nothing to do")
    else:
        from .summary import print_summary

        print_summary(outcome.report)


def failure_line(report) -> str | None:
    """The one line a machine-read mode prints when a run finished without a verified model; None when verified."""
    if report.verified or report.verdict is None:
        return None
    reasons = "; ".join(report.verdict.get("reasons") or []) or "the target disagrees with the source"
    written = f" (written anyway with --allow-unverified: {report.output})" if report.output else ""
    return f"safeconvert: NOT verified: {reasons}{written}"


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
