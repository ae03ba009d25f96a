"""The evaluation: its bookkeeping (pure) and its fast subset, run for real on the small seeded CNN."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from safeconvert.evaluation.cases import Case, evaluation_cases
from safeconvert.evaluation.results import CaseResult, case_result, totals
from safeconvert.evaluation.tables import markdown, routes_markdown, totals_sentence

ROOT = Path(__file__).resolve().parent.parent


def _raw(case: Case, before: dict | None, after: dict, findings=(), repairs=(), holdout_verified=True) -> dict:
    return {
        "case": case.to_dict(), "expected_category": case.expected_category,
        "report": {"metrics_before_repair": before, "metrics": after, "verdict": {"verified": after["top1_mismatches"] == 0},
                   "findings": [{"category": c} for c in findings],
                   "repairs": [{"category": c, "status": "applied"} for c in repairs], "timings": {"total": 1.0}},
        "holdout_after": {"metrics": {"top1_mismatches": 0 if holdout_verified else 2, "images": 10},
                          "verdict": {"verified": holdout_verified}},
        "findings_emitted": [{"category": c, "at_planted_layer": None} for c in findings],
    }


def _metrics(mismatches: int) -> dict:
    return {"images": 32, "top1_mismatches": mismatches, "max_abs_diff": 0.5 if mismatches else 1e-7}


def test_case_ids_are_unique_and_name_the_fault():
    cases = evaluation_cases(["mobilenet_v2", "resnet101"])
    ids = [c.case_id for c in cases]
    assert len(ids) == len(set(ids))
    assert "mobilenet_v2__keras-to-onnx__injected__dilation__seed1" in ids
    assert {c.expected_category for c in cases if c.fault_kind} == {"WB", "LH", "CG", "TSS", "ID", "PP"}
    assert not any(c.source == "pt2" for c in cases if c.model == "resnet101")


def test_totals_count_detected_repaired_held_out_and_false_figures():
    clean = Case("m", "keras", "onnx", "clean")
    results = [
        case_result(_raw(clean, None, _metrics(0)), 1, 100),
        case_result(_raw(clean, _metrics(2), _metrics(0), ["WB"], ["WB"]), 1, 100),  # a clean conversion edited
        case_result(_raw(Case("m", "keras", "onnx", "injected", "stride"), _metrics(5), _metrics(0), ["LH"], ["LH"]), 1, 1),
        case_result(_raw(Case("m", "keras", "onnx", "injected", "hw_swap"), _metrics(3), _metrics(0), ["WB"], ["WB"],
                         holdout_verified=False), 1, 1),
        case_result(_raw(Case("m", "keras", "onnx", "injected", "dilation"), _metrics(4), _metrics(4)), 1, 1),  # not repaired
        case_result({"case": Case("m", "keras", "tflite", "clean").to_dict(), "error": "boom", "status": "timeout"}, 9, 1),
    ]
    summary = totals(results)
    assert (summary.planted_faults, summary.faults_detected, summary.faults_repaired) == (3, 3, 2)
    assert summary.cases_fully_repaired == 1 and summary.edits_on_clean == 1 and summary.errors == 1
    assert (summary.false_verifications, summary.verified_cases) == (1, 4)
    assert summary.localization["LH"]["recalled_category"] == 1 and summary.localization["ID"]["recalled_category"] == 0
    sentence = totals_sentence(summary)
    assert "faults repaired / faults detected: 2/3" in sentence and "edits on clean conversions: 1/2" in sentence
    assert "false verifications on held-out photos: 1/4" in sentence
    table = markdown(results, summary, "today")
    assert "| m | keras -> onnx | injected | hw_swap | 3/32 (9%) | WB (first emitted is WB, planted ID)" in table
    assert "timeout: boom" in table and "How each figure is defined" in table


def test_detected_means_not_verified_as_made_not_any_finding():
    """A planted fault that passed the verdict is not detected, whatever localization would say; clean and
    --keep-quantisation cases are not planted faults."""
    missed = _raw(Case("m", "keras", "onnx", "injected", "fp16_weights"), None, _metrics(0), ["WB"])
    kept = _raw(Case("m", "keras", "tflite", "tflite-int8", keep_quantisation=True), _metrics(3), _metrics(3), ["TOOL"])
    results = [case_result(missed, 1, 1), case_result(kept, 1, 1)]
    assert results[0].findings == {"WB": 1} and not results[0].detected and results[0].planted
    assert not results[1].planted and not results[1].detected and results[1].keep_quantisation
    summary = totals(results)
    assert (summary.planted_faults, summary.faults_detected, summary.localization) == (1, 0, {})


def _emitted(*pairs) -> list[dict]:
    return [{"category": c, "at_planted_layer": at} for c, at in pairs]


def test_localization_precision_recall_and_first_finding_use_the_emitted_order():
    """The report's order (the finding whose repair was kept first) is not what localization said first."""
    stride = _raw(Case("m", "keras", "onnx", "injected", "stride"), _metrics(5), _metrics(0), ["LH", "WB"], ["LH"])
    stride["findings_emitted"] = _emitted(("WB", False), ("LH", True))  # repair put LH first in the report
    dilation = _raw(Case("m", "keras", "onnx", "injected", "dilation"), _metrics(4), _metrics(0), ["LH", "LH"], ["LH"])
    dilation["findings_emitted"] = _emitted(("LH", False), ("LH", False))  # right category, wrong layer
    swap = _raw(Case("m", "keras", "onnx", "injected", "hw_swap"), _metrics(3), _metrics(0), ["ID"], ["ID"])
    swap["findings_emitted"] = _emitted(("ID", None))  # an input fault has no layer to name
    results = [case_result(r, 1, 1) for r in (stride, dilation, swap)]
    assert results[0].top_category == "LH" and results[0].first_finding_right is False
    summary = totals(results)
    lh = summary.localization["LH"]
    assert (lh["detected"], lh["findings"], lh["findings_right_category"], lh["findings_right_layer"]) == (2, 4, 3, 1)
    assert (lh["recalled_category"], lh["recalled_layer"], lh["first_right"]) == (2, 1, 1)
    assert summary.localization["ID"]["findings_right_layer"] == 1
    assert (summary.first_finding_right, summary.first_finding_known) == (2, 3)
    table = markdown(results, summary, "today")
    assert "| LH | 2 | 3/4 (75%) | 1/4 (25%) | 2/2 (100%) | 1/2 (50%) | 1/2 (50%) |" in table
    assert "| LH, WB (first emitted is WB, planted LH) |" in table


def test_keep_quantisation_counts_only_outputs_still_quantised():
    case = Case("m", "keras", "tflite", "tflite-dynamic-range", keep_quantisation=True)
    undone = _raw(case, _metrics(3), _metrics(0), ["TOOL"], ["TOOL"])
    undone["quantisation"] = {"quantised_tensors": {}, "output_bytes": 4 * 2**20, "float_bytes": 4 * 2**20,
                              "converted_quantised_tensors": {"int8": 52}, "converted_bytes": 2**20}
    kept = _raw(case, _metrics(3), _metrics(0), ["TOOL"], ["TOOL"])
    kept["quantisation"] = {"quantised_tensors": {"int8": 50}, "output_bytes": 2**20, "float_bytes": 4 * 2**20,
                            "converted_quantised_tensors": {"int8": 52}, "converted_bytes": 2**20}
    results = [case_result(undone, 1, 1), case_result(kept, 1, 1)]
    assert [r.kept_quantisation for r in results] == [False, True]
    summary = totals(results)
    assert (summary.kept_quantised, summary.quantisation_undone, summary.keep_quantisation_cases) == (1, 1, 2)
    table = markdown(results, summary, "today")
    assert ("| m | tflite-dynamic-range | yes | none / 52 int8 | 4.00 / 4.00 MiB (1.00x) | 1.00 MiB "
            "| quantisation undone |") in table
    assert ("| m | tflite-dynamic-range | yes | 50 int8 / 52 int8 | 1.00 / 4.00 MiB (0.25x) | 1.00 MiB "
            "| verified, quantisation partly kept (50 of 52 quantised tensors, 96%) |") in table


def test_old_records_give_unknown_not_guessed_figures(tmp_path: Path):
    """A results.json written before these figures existed: what it records is recomputed, the rest unknown."""
    old_case = {"case_id": "m__keras-to-tflite__tflite-int8__keep-quantisation", "model": "m", "route": "keras -> tflite",
                "scenario": "tflite-int8", "fault_kind": None, "expected_category": "TOOL", "status": "ok",
                "images": 32, "mismatch_before": 3, "mismatch_after": 0, "first_validation_failed": True,
                "findings": {"TOOL": 1}, "top_category": "TOOL", "repairs_applied": ["TOOL"], "verified": True,
                "holdout_verified": False, "faulty": True, "detected": True, "false_repair": False}
    injected = {**old_case, "case_id": "m__keras-to-onnx__injected__stride__seed0", "route": "keras -> onnx",
                "scenario": "injected", "fault_kind": "stride", "expected_category": "LH", "holdout_verified": True,
                "findings": {"WB": 1, "LH": 1}, "top_category": "LH", "repairs_applied": ["LH"]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"cases": [old_case, injected]}))
    from safeconvert.evaluation.runner import recorded_results

    results, not_run = recorded_results(path)
    assert results[0].keep_quantisation and results[0].kept_quantisation is None and not_run == []
    summary = totals(results)
    assert summary.kept_quantised is None and summary.first_finding_right is None and summary.mixed_versions
    assert summary.false_verifications == 1 and summary.localization["LH"]["findings_right_category"] == 1
    assert summary.localization["LH"]["findings_right_layer"] is None
    sentence = totals_sentence(summary)
    assert "quantisation kept (still quantised) / --keep-quantisation cases: unknown/1" in sentence
    assert "names the planted category: unknown" in sentence


def test_tables_only_from_json_refuses_to_overwrite_the_run_it_reads(tmp_path: Path):
    (tmp_path / "results.json").write_text(json.dumps({"cases": []}))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "evaluate.py"), "--tables-only", "--from-json",
                           str(tmp_path / "results.json"), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "overwrite" in done.stderr


def test_a_finding_names_the_planted_layer_by_its_node():
    from safeconvert.evaluation.child import at_planted_layer

    fault = {"category": "LH", "target_node": "block_3/conv;block_3/bn"}
    assert at_planted_layer({"target_layer": "block_3/conv", "evidence": {}}, fault) is True
    assert at_planted_layer({"target_layer": "block_9/conv", "repair": {"arguments": {"nodes": ["x"]}}}, fault) is False
    assert at_planted_layer({"target_layer": None}, {"category": "PP", "target_node": "input"}) is None
    assert at_planted_layer({"target_layer": "a"}, None) is None


@pytest.mark.slow
def test_fast_subset_runs_and_repairs_every_fault(tmp_path: Path):
    """The evaluation's fast subset on the small CNN: every fault found, repaired, held out, nothing false."""
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "evaluate.py"), "--quick", "--models", "small",
                           "--out", str(out), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads((out / "results.json").read_text())
    summary = document["totals"]
    assert summary["errors"] == 0 and summary["planted_faults"] >= 7
    assert summary["faults_detected"] == summary["planted_faults"]
    assert summary["faults_repaired"] == summary["faults_detected"] == summary["cases_fully_repaired"]
    assert summary["first_finding_right"] == summary["first_finding_known"] == summary["faults_detected"]
    assert summary["edits_on_clean"] == 0 and summary["false_verifications"] == 0
    assert all(case["provenance"]["commit"] and case["provenance"]["libraries"] for case in document["cases"])
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "faults repaired / faults detected" in (out / "results.md").read_text()
    assert "faults repaired / faults detected" in done.stdout


def test_resume_keeps_finished_cases_and_retries_failed_ones(tmp_path: Path, monkeypatch):
    """--resume reuses a finished case's figures without preparing the model again; a crashed case runs again."""
    from dataclasses import asdict

    from safeconvert.evaluation import runner

    done_case, crashed_case = Case("m", "keras", "onnx", "clean"), Case("m", "keras", "tflite", "clean")
    finished = case_result(_raw(done_case, None, _metrics(0)), 12.0, 300)
    finished.provenance = runner.current_provenance()
    crashed = case_result({"case": crashed_case.to_dict(), "error": "boom", "status": "error"}, 3, 1)
    for case, result in ((done_case, finished), (crashed_case, crashed)):
        folder = tmp_path / "m" / case.case_id
        folder.mkdir(parents=True)
        (folder / runner.MEASURED).write_text(json.dumps(asdict(result)))
    ran = []
    monkeypatch.setattr(runner, "prepare", lambda model, work: f"prepared {model}")
    monkeypatch.setattr(runner, "run_case", lambda case, prepared, folder, timeout, env=None: ran.append((case, prepared)) or finished)
    results = runner.run_cases([done_case, crashed_case], tmp_path, resume=True)
    assert results[0] == finished and ran == [(crashed_case, "prepared m")]


def test_resume_runs_again_cases_measured_by_other_versions_unless_kept(tmp_path: Path, monkeypatch):
    """A case recorded by another commit is not mixed in silently: it runs again, or, when kept on request,
    the totals and the table say "mixed versions"."""
    from dataclasses import asdict

    from safeconvert.evaluation import runner

    case = Case("m", "keras", "onnx", "clean")
    older = case_result(_raw(case, None, _metrics(0)), 12.0, 300)
    older.provenance = {**runner.current_provenance(), "commit": "0" * 40}
    folder = tmp_path / "m" / case.case_id
    folder.mkdir(parents=True)
    (folder / runner.MEASURED).write_text(json.dumps(asdict(older)))
    ran = []
    fresh = case_result(_raw(case, None, _metrics(0)), 5.0, 300)
    monkeypatch.setattr(runner, "prepare", lambda model, work: "prepared")
    monkeypatch.setattr(runner, "run_case", lambda case, prepared, folder, timeout, env=None: ran.append(case) or fresh)
    kept = runner.run_cases([case], tmp_path, resume=True, keep_other_versions=True)
    assert ran == [] and kept[0].provenance["commit"] == "0" * 40
    summary = totals(kept + [fresh])
    fresh.provenance = runner.current_provenance()
    summary = totals(kept + [fresh])
    assert summary.mixed_versions and len(summary.versions) == 2
    assert "**Mixed versions**" in markdown(kept + [fresh], summary, "today")
    again = runner.run_cases([case], tmp_path, resume=True)
    assert ran == [case] and again[0].provenance == runner.current_provenance()
    assert not totals(again).mixed_versions


def test_cases_share_a_cache_in_the_scratch_folder_unless_told_otherwise(tmp_path: Path, monkeypatch):
    from safeconvert.evaluation import runner
    from safeconvert.user_cache import ENV_VAR

    caches = []
    finished = case_result(_raw(Case("m", "keras", "onnx", "clean"), None, _metrics(0)), 1.0, 1)
    monkeypatch.setattr(runner, "prepare", lambda model, work: "prepared")

    def run_case(case, prepared, folder, timeout, env=None):
        folder.mkdir(parents=True, exist_ok=True)
        caches.append(env[ENV_VAR])
        return finished

    monkeypatch.setattr(runner, "run_case", run_case)
    monkeypatch.delenv(ENV_VAR)
    runner.run_cases([Case("m", "keras", "onnx", "clean")], tmp_path)
    monkeypatch.setenv(ENV_VAR, "off")
    runner.run_cases([Case("m", "keras", "onnx", "clean")], tmp_path)
    assert caches == [str(tmp_path / "cache"), "off"]


def test_routes_table_has_one_row_per_clean_route_and_model():
    raw = _raw(Case("m", "keras", "onnx", "clean"), None, _metrics(0))
    raw["report"]["route"] = [{"converter": "tf2onnx"}]
    faulty = _raw(Case("m", "onnx", "tflite", "clean"), _metrics(3), _metrics(0), ["TOOL"], ["TOOL"])
    faulty["report"]["route"] = [{"converter": "onnx2tf-tflite"}]
    injected = _raw(Case("m", "keras", "onnx", "injected", "stride"), _metrics(5), _metrics(0), ["LH"], ["LH"])
    table = routes_markdown([case_result(r, 30, 1) for r in (raw, faulty, injected)], "today")
    assert "| keras -> onnx | m | tf2onnx | 32/32 | 32/32 | 10/10 | 1e-07 | 30 |" in table
    assert "| onnx -> tflite | m | onnx2tf-tflite | 29/32 | 32/32 | 10/10 |" in table
    assert "stride" not in table and table.count("\n| ") == 3  # header + two clean routes


def test_tables_only_lists_what_an_unfinished_run_has_not_run(tmp_path: Path):
    """--tables-only: recorded cases (errors too) make the table, the others are named as not run."""
    from dataclasses import asdict

    from safeconvert.evaluation import runner
    from safeconvert.evaluation.tables import write_outputs

    done, crashed, pending = (Case("m", "keras", "onnx", "clean"), Case("m", "keras", "tflite", "clean"),
                              Case("m", "keras", "onnx", "injected", "stride"))
    for case, result in ((done, case_result(_raw(done, None, _metrics(0)), 12.0, 300)),
                         (crashed, case_result({"case": crashed.to_dict(), "error": "boom", "status": "error"}, 3, 1))):
        folder = tmp_path / "m" / case.case_id
        folder.mkdir(parents=True)
        (folder / runner.MEASURED).write_text(json.dumps(asdict(result)))
    results, missing = runner.finished_cases([done, crashed, pending], tmp_path)
    assert [r.case_id for r in results] == [done.case_id, crashed.case_id] and missing == [pending]
    assert results[1].status == "error"
    write_outputs(results, tmp_path / "out", quick=False, not_run=[c.case_id for c in missing])
    text = (tmp_path / "out" / "results.md").read_text()
    assert "Not run yet (1 of 3 cases" in text and f"`{pending.case_id}`" in text
    assert json.loads((tmp_path / "out" / "results.json").read_text())["not_run"] == [pending.case_id]


def test_provenance_tells_commits_and_uncommitted_changes_apart(tmp_path: Path):
    from safeconvert.evaluation.provenance import _git_state, provenance_key

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    (tmp_path / "safeconvert").mkdir()
    (tmp_path / "safeconvert" / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    commit, dirty, digest = _git_state(tmp_path)
    assert len(commit) == 40 and not dirty and digest is None
    (tmp_path / "safeconvert" / "a.py").write_text("x = 2\n")
    first = _git_state(tmp_path)
    (tmp_path / "safeconvert" / "a.py").write_text("x = 3\n")
    second = _git_state(tmp_path)
    (tmp_path / "notes.txt").write_text("outside the code paths")
    assert first[1] and second[1] and first[2] != second[2] and _git_state(tmp_path) == second
    keys = {provenance_key({"commit": c, "dirty": d, "tree_digest": g}) for c, d, g in (first, second)}
    assert len(keys) == 2 and provenance_key(None) == "unknown"
    assert _git_state(tmp_path / "safeconvert" / "missing")[0] == "unknown"
