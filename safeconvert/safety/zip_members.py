"""Member names of a model's zip archive: refuse any name two readers could resolve differently.

Keras (.keras), torch.export (.pt2) and TorchScript (.pt) files are zip archives, and the bytes safeconvert
audits must be the bytes the framework loads. Readers disagree on unusual names:

* a name stored twice: Python's zipfile returns the last copy, while torch's reader (miniz, a binary
  search over a heap-sorted index) returns the first or the last depending on where the copies sit, so
  an audit could read a harmless copy while torch loads a hostile one;
* names that differ only in case: miniz looks names up case-insensitively, zipfile does not;
* a NUL byte: zipfile cuts the name at it, miniz does not;
* backslashes, absolute paths and '..' components: readers and extractors map them to different paths.

torch.export.save, torch.jit.save and Keras never write any of these, so an archive holding one is refused
before any framework opens it.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from ..errors import BadInputError

DRIVE_LETTER = re.compile(r"[A-Za-z]:")


class OddArchiveError(BadInputError):
    """A member name of the archive is odd or repeated: readers could disagree on what the archive holds."""


def check_member_names(archive: zipfile.ZipFile, path: Path) -> None:
    """Raise OddArchiveError if any member name of `archive` is odd or stored twice (case-insensitively)."""
    seen: dict[str, str] = {}
    for info in archive.infolist():
        name = info.orig_filename  # as stored: zipfile's `filename` is already cut at a NUL
        problem = odd_name_problem(name)
        if problem:
            raise OddArchiveError(f"{Path(path).name}: the archive member {name[:80]!r} {problem}; "
                                  "refused (corrupt or hostile)")
        folded = name.casefold()
        if folded in seen:
            what = "is stored twice" if seen[folded] == name else f"differs from {seen[folded][:80]!r} only in case"
            raise OddArchiveError(f"{Path(path).name}: the archive member {name[:80]!r} {what}, so readers "
                                  "disagree on its content; refused (corrupt or hostile)")
        seen[folded] = name


def odd_name_problem(name: str) -> str | None:
    """Why a member name is unsafe to resolve, or None for a plain relative name."""
    if "\x00" in name:
        return "holds a NUL byte"
    if "\\" in name:
        return "holds a backslash"
    if name.startswith("/") or DRIVE_LETTER.match(name):
        return "is an absolute path"
    if ".." in name.split("/"):
        return "holds a '..' component"
    if not name:
        return "is empty"
    return None
