"""A full disk (or a file-size limit) while writing the converted model: an unusable output location.

Converters write into the scratch directory beside OUT; when that filesystem is full they fail with
ENOSPC, EDQUOT or EFBIG, either as a raw OSError or wrapped in a ConverterFailedError that quotes it.
Neither is a converter bug, so both become one BadInputError (exit code 2) that names the real cause.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import BadInputError, ConverterFailedError

DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
DISK_MESSAGES = tuple(os.strerror(code) for code in DISK_ERRNOS)


class OutputSpaceError(BadInputError):
    """OUT's filesystem is full, over quota, read-only, or the file is over the process's size limit."""


def disk_problem(exc: BaseException) -> str | None:
    """The OS's words for a disk-full kind of failure behind `exc`, or None if it is something else."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return os.strerror(exc.errno)
    if isinstance(exc, ConverterFailedError):
        return next((message for message in DISK_MESSAGES if message in str(exc)), None)
    return None


def as_output_space_error(exc: BaseException, where: Path) -> OutputSpaceError | None:
    """An OutputSpaceError describing `exc` at `where`, or None if `exc` is not a disk-full failure."""
    problem = disk_problem(exc)
    if problem is None:
        return None
    return OutputSpaceError(f"cannot write the converted model in {where}: {problem}; nothing was written at the output path")
