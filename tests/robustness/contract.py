"""What every run on a hostile or broken input must honour, whatever the input (a plain module).

The CLI contract: an exit code from the README's table (0..3 here: 4 means a bug of ours); no traceback;
a failure is exactly one line on stderr; OUT untouched unless the run was verified; no `.safeconvert-*`
scratch left beside OUT; a report, when one was asked for, that records the same exit code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CONTRACT_CODES = {0, 1, 2, 3}


@dataclass
class RunResult:
    code: int
    stdout: str
    stderr: str


def snapshot(path: Path | None) -> list[tuple[str, int]] | None:
    """What is at `path` (names and sizes, recursively), to tell whether a run touched it."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        return [(path.name, path.stat().st_size)]
    return sorted((str(p.relative_to(path)), p.stat().st_size if p.is_file() else -1) for p in path.rglob("*"))


def assert_contract(result: RunResult, out: Path | None, scratch_dirs: list[Path], report: Path | None = None,
                    out_before: list[tuple[str, int]] | None = None) -> None:
    text = result.stdout + result.stderr
    assert result.code in CONTRACT_CODES, f"exit code {result.code}: {result.stderr[-2000:]}"
    assert "Traceback" not in text, text[-3000:]
    if result.code in (2, 3):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("safeconvert: error:"), result.stderr[-2000:]
    if out is not None and result.code != 0:  # OUT is as it was: absent, or the user's untouched file
        assert snapshot(out) == out_before, f"{out} changed although the run ended with exit code {result.code}"
    for directory in scratch_dirs:
        left = [p.name for p in directory.iterdir() if p.name.startswith(".safeconvert-")] if directory.is_dir() else []
        assert not left, f"scratch left behind in {directory}: {left}"
    if report is not None and report.exists():
        assert json.loads(report.read_text())["exit_code"] == result.code
