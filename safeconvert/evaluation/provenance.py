"""Which code and which libraries measured a case: the git commit (and whether the tree differed from it),
safeconvert's version and the versions of the converters and runtimes.

A long evaluation is resumed across days; figures measured by different code must not be added up as if they
were one run, so every case records this and `--resume` compares it before reusing a case.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

# The files whose changes can change a case's figures (tests and docs cannot).
CODE_PATHS = ("safeconvert", "benchmarks", "pyproject.toml", "requirements")
UNKNOWN = "unknown"


def current_provenance() -> dict:
    """This checkout's commit, dirty state and library versions, as recorded with each case."""
    from .. import __version__
    from ..environment import COMPONENTS, installed_version

    commit, dirty, digest = _git_state(_repository_root())
    return {"commit": commit, "dirty": dirty, "tree_digest": digest, "safeconvert": __version__,
            "libraries": {name: installed_version(name) or "absent" for name, _ in COMPONENTS}}


def provenance_key(provenance: dict | None) -> str:
    """A short label that is equal for two cases exactly when the same code and libraries measured them."""
    if not provenance:
        return UNKNOWN
    text = repr(sorted((k, repr(v)) for k, v in provenance.items()))
    commit = str(provenance.get("commit", UNKNOWN))[:10]
    dirty = "+dirty" if provenance.get("dirty") else ""
    return f"{commit}{dirty} ({hashlib.sha256(text.encode()).hexdigest()[:8]})"


def describe_versions(provenances: list[dict | None]) -> tuple[bool, dict[str, int]]:
    """Whether the cases were measured by more than one code/library version (unrecorded counts as one
    more), and how many cases each version measured."""
    counts: dict[str, int] = {}
    for provenance in provenances:
        key = provenance_key(provenance)
        counts[key] = counts.get(key, 0) + 1
    return len(counts) > 1 or UNKNOWN in counts, counts


def _repository_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def _git_state(root: Path) -> tuple[str, bool, str | None]:
    """(commit, dirty, digest of the changes to the code paths); commit "unknown" outside a git checkout."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return UNKNOWN, False, None
    status = _git(root, "status", "--porcelain", "--", *CODE_PATHS) or ""
    if not status.strip():
        return commit.strip(), False, None
    return commit.strip(), True, _changes_digest(root, status)


def _changes_digest(root: Path, status: str) -> str:
    """Hash of the diff against HEAD plus the untracked files' bytes: two dirty trees with different edits
    get different digests."""
    digest = hashlib.sha256((_git(root, "diff", "HEAD", "--", *CODE_PATHS) or "").encode())
    for line in sorted(status.splitlines()):
        if line.startswith("??"):
            path = root / line[3:].strip()
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                digest.update(str(file.relative_to(root)).encode())
                digest.update(file.read_bytes() if file.is_file() else b"")
    return digest.hexdigest()[:16]


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
