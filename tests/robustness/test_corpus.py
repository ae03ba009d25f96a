"""The hostile-input corpus, run in-process through safeconvert.cli.main (one TensorFlow start-up for all).

Every case must honour contract.assert_contract. A mutant that is still a valid model may legitimately be
verified (exit 0): a flipped low mantissa bit in a weight leaves a model the converter reproduces faithfully,
and then OUT is written. Cases with a known answer (unusual images that must be handled, broken paths that
must be refused) also assert their exit code. The per-case time limit turns a hang into a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .cases import Case, build_cases, prepare
from .contract import RunResult, assert_contract, snapshot

CASES = build_cases()
PER_CASE_SECONDS = 120


def run_main(argv: list[str], capfd) -> RunResult:
    """safeconvert.cli.main in this process, as the console script calls it."""
    from safeconvert.cli import main

    capfd.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(argv)
    captured = capfd.readouterr()
    return RunResult(ended.value.code, captured.out, captured.err)


def test_corpus_is_large_enough():
    assert len(CASES) >= 200 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.timeout(PER_CASE_SECONDS)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input(case: Case, tmp_path: Path, base_models, absurd_models, small_calib, capfd):
    prepared = prepare(case, tmp_path / "case", base_models, absurd_models, small_calib)
    before = snapshot(prepared.out)
    result = run_main(prepared.argv, capfd)
    scratch_dirs = [tmp_path / "case", tmp_path / "case" / "out"]
    assert_contract(result, prepared.out, scratch_dirs, prepared.report, before)
    if prepared.expect is not None:
        assert result.code in prepared.expect, result.stderr[-2000:]
    if prepared.fragment is not None:
        assert prepared.fragment in result.stderr, result.stderr[-2000:]
