"""Errors that end a run, each carrying the exit code the CLI contract promises.

Exit codes are part of the public contract (build systems branch on them):
0 verified, 1 not verified, 2 bad input or usage, 3 converter failed.
"""

from __future__ import annotations

EXIT_VERIFIED = 0
EXIT_NOT_VERIFIED = 1
EXIT_BAD_INPUT = 2
EXIT_CONVERTER_FAILED = 3


class SafeConvertError(Exception):
    """Base for errors that the CLI turns into a one-line message and an exit code."""

    exit_code = EXIT_BAD_INPUT


class BadInputError(SafeConvertError):
    """The user's model, calibration set, option or output path cannot be used."""

    exit_code = EXIT_BAD_INPUT


class ConverterFailedError(SafeConvertError):
    """A wrapped converter crashed, is missing, or produced nothing usable."""

    exit_code = EXIT_CONVERTER_FAILED

    def __init__(self, tool: str, message: str):
        super().__init__(f"{tool} failed: {message}")
        self.tool = tool
        self.detail = message


class NotVerifiedError(SafeConvertError):
    """The converted model disagrees with the source beyond the verdict's limits."""

    exit_code = EXIT_NOT_VERIFIED


def one_line(exc: BaseException, limit: int = 300) -> str:
    """Collapse an exception into a single short line for user-facing messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
