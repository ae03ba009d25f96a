"""What the security tests share: running the CLI in-process, the shape of a refusal, a two-photo calibration set."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Run:
    code: int
    stderr: str


def run_main(argv: list[str], capfd) -> Run:
    from safeconvert.cli import main

    capfd.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(argv)
    return Run(ended.value.code, capfd.readouterr().err)


def assert_refused(result: Run, fragment: str) -> None:
    """Exit 2 with exactly one line on stderr, which says why."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and fragment in lines[0], (result.code, result.stderr)


def two_photo_calibration(directory: Path) -> Path:
    """Two of the packaged photos: enough for a run that only has to load and start."""
    from safeconvert.validators.calibration import default_calibration_dir

    for name in ("dog.jpg", "fruits.jpg"):
        shutil.copy(default_calibration_dir() / name, directory / name)
    return directory
