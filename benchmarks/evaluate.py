"""The conversion experiment of the literature, re-run on safeconvert: models x routes x scenarios.

For each case safeconvert converts (or repairs a seeded faulty conversion) on the repair photos, in its own
process, and the result is checked on photos held out from repair. Writes results.md, results.json and
results.png to --out (default: results/) and prints the totals.

    .venv/bin/python benchmarks/evaluate.py                       # the full run (hours on 2 cores)
    .venv/bin/python benchmarks/evaluate.py --quick --models small   # the fast subset (a few minutes)
    .venv/bin/python benchmarks/evaluate.py --models mobilenet_v2 --only injected
    .venv/bin/python benchmarks/evaluate.py --work ~/eval --resume  # continue an interrupted run
    .venv/bin/python benchmarks/evaluate.py --work ~/eval --tables-only  # tables of what it has finished so far
    .venv/bin/python benchmarks/evaluate.py --tables-only --from-json results/results.json --out /tmp/tables
        # an earlier run's tables recomputed with today's definitions (unknown where its records fall short)

--resume reuses a finished case only when the same commit (and uncommitted changes) and library versions
measured it; others run again, unless --keep-other-versions (the tables then say "mixed versions").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from safeconvert.evaluation.cases import MODELS, evaluation_cases
from safeconvert.evaluation.runner import DEFAULT_CASE_TIMEOUT, finished_cases, recorded_results, run_cases
from safeconvert.evaluation.tables import totals_sentence, write_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="mobilenet_v2,resnet101,inception_v3 (or small)")
    parser.add_argument("--quick", action="store_true", help="the fast subset: clean, one real fault, one fault per category")
    parser.add_argument("--only", default=None, help="only scenarios containing this text (e.g. injected, clean, tflite)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (kept; models are reused from it)")
    parser.add_argument("--resume", action="store_true", help="with --work: keep the cases an earlier run finished there")
    parser.add_argument("--tables-only", action="store_true",
                        help="with --work: write the tables from the cases finished there, run nothing")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="with --tables-only: the results.json of an earlier run instead of --work")
    parser.add_argument("--keep-other-versions", action="store_true",
                        help="with --resume: keep cases measured by another commit or other library versions")
    parser.add_argument("--case-timeout", type=float, default=DEFAULT_CASE_TIMEOUT)
    args = parser.parse_args()
    cases = evaluation_cases(args.models.split(","), quick=args.quick)
    if args.only:
        cases = [c for c in cases if args.only in c.case_id]
    if args.tables_only and args.work is None and args.from_json is None:
        parser.error("--tables-only needs --work (the folder of an earlier run) or --from-json (its results.json)")
    if args.from_json is not None and args.from_json.resolve().parent == args.out.resolve():
        parser.error("--from-json would overwrite the run it reads: give another --out")
    work = args.work or Path(tempfile.mkdtemp(prefix="safeconvert-evaluate-"))
    not_run: list[str] = []
    if args.tables_only and args.from_json is not None:
        results, not_run = recorded_results(args.from_json)
        print(f"{len(results)} cases recorded in {args.from_json}", flush=True)
    elif args.tables_only:
        results, missing = finished_cases(cases, work)
        not_run = [case.case_id for case in missing]
        print(f"{len(results)} of {len(cases)} cases finished in {work}", flush=True)
    else:
        print(f"{len(cases)} cases; scratch in {work}", flush=True)
        results = run_cases(cases, work, args.case_timeout, on_result=_print_row, resume=args.resume,
                            keep_other_versions=args.keep_other_versions)
    summary = write_outputs(results, args.out, args.quick, not_run)
    print(totals_sentence(summary))
    print(f"table: {args.out / 'results.md'}  plot: {args.out / 'results.png'}")


def _print_row(result) -> None:
    after = "-" if result.mismatch_after is None else result.mismatch_after
    print(f"{result.case_id:<70} {result.status:<8} {result.mismatch_before:>3} -> {after!s:<3} "
          f"{','.join(result.findings) or '-':<12} {','.join(result.repairs_applied) or '-':<8} "
          f"{result.seconds:6.0f} s {result.peak_mib:6.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
