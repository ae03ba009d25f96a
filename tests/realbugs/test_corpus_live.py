"""Every corpus bug is live in the pinned converters, its control is not, and safeconvert tells them apart.

The first tests convert with the real converter (safeconvert's wrappers) and compare against the source's own
runtime: the buggy model must disagree beyond BUG_TOLERANCE and the control must agree. If a converter upgrade
fixes a bug, its test fails and the entry moves to the candidates "not in the corpus" in docs/real-bugs.md.
The CLI tests (one bug per converter) hold the detection that repair builds on: `safeconvert convert
--no-repair` (or `check` of the entry's own conversion, when the route planner would pick another converter first) does not verify a buggy
model (exit 1) and verifies its control (exit 0).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .corpus import CORPUS, RealBug
from .live import ONNX_TF_PYTHON, convert, disagreement, run_cli

EXIT_VERIFIED, EXIT_NOT_VERIFIED = 0, 1


def _params(entries: list[RealBug], slow_all: bool = False):
    return [pytest.param(b, id=b.name, marks=[pytest.mark.slow] if (slow_all or b.slow) else []) for b in entries]


def _needs_onnx_tf(bug: RealBug) -> None:
    if bug.converter == "onnx-tf" and not ONNX_TF_PYTHON.exists():
        pytest.skip("onnx-tf needs its own interpreter: make onnx-tf-env")


def test_corpus_spans_enough_bugs_and_converters():
    names = [bug.name for bug in CORPUS]
    assert len(names) == len(set(names))
    assert len(CORPUS) >= 10
    assert len({bug.converter for bug in CORPUS}) >= 3
    for bug in CORPUS:
        assert bug.citation and bug.op and bug.trigger


@pytest.mark.parametrize("bug", _params(CORPUS))
def test_bug_is_live_and_control_is_clean(bug: RealBug, tmp_path: Path):
    _needs_onnx_tf(bug)
    buggy = bug.build_bug(tmp_path)
    found = disagreement(buggy, convert(bug, buggy, tmp_path))
    assert found.is_bug, f"{bug.name}: the converter now agrees (relative error {found.relative_error:.3g})"

    control = bug.build_control(tmp_path)
    clean = disagreement(control, convert(bug, control, tmp_path))
    assert not clean.is_bug, f"{bug.name}: the control disagrees too (relative error {clean.relative_error:.3g})"


def _one_per_converter(entries: list[RealBug]) -> list[RealBug]:
    """The CLI tests run end to end (a conversion and a validation each): one bug per converter keeps the
    suite short; benchmarks/realbugs.py runs every entry."""
    seen: dict[str, RealBug] = {}
    for bug in entries:
        seen.setdefault(bug.converter, bug)
    return list(seen.values())


@pytest.mark.parametrize("bug", _params(_one_per_converter(CORPUS), slow_all=True))
def test_safeconvert_detects_bug_and_verifies_control(bug: RealBug, tmp_path: Path):
    _needs_onnx_tf(bug)
    buggy = run_cli(bug, bug.build_bug(tmp_path), tmp_path, repair=False)
    assert buggy.exit_code == EXIT_NOT_VERIFIED, f"{bug.name}: {buggy.command} exit {buggy.exit_code} on the buggy model"
    control = run_cli(bug, bug.build_control(tmp_path), tmp_path, repair=False)
    assert control.exit_code == EXIT_VERIFIED, f"{bug.name}: {control.command} exit {control.exit_code} on the control"
