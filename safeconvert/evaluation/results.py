"""What one case came to, and the totals the literature reports (faults repaired / detected, cases fully
repaired / faulty cases, false repairs on clean conversions)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class CaseResult:
    """A case's figures, read from its safeconvert report and its hold-out checks."""

    case_id: str
    model: str
    route: str
    scenario: str
    fault_kind: str | None
    expected_category: str | None
    status: str  # "ok", "error", "timeout", "not applicable"
    error: str | None = None
    images: int = 0
    mismatch_before: int = 0
    mismatch_after: int | None = None
    max_abs_before: float | None = None
    max_abs_after: float | None = None
    holdout_images: int = 0
    holdout_before: int | None = None
    holdout_after: int | None = None
    holdout_verified: bool | None = None
    first_validation_failed: bool = False
    findings: dict[str, int] = field(default_factory=dict)  # category -> count
    top_category: str | None = None
    repairs_applied: list[str] = field(default_factory=list)
    converters: list[str] = field(default_factory=list)  # the converter of each hop kept (empty for `repair`)
    verified: bool = False
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_mib: float = 0.0

    @property
    def faulty(self) -> bool:
        """The conversion as made failed validation: there was a fault to detect."""
        return self.status == "ok" and self.first_validation_failed

    @property
    def detected(self) -> bool:
        return self.faulty and bool(self.findings)

    @property
    def repaired(self) -> bool:
        return self.detected and self.verified

    @property
    def fully_repaired(self) -> bool:
        """Verified on the repair photos and on the hold-out photos repair never saw."""
        return self.repaired and bool(self.holdout_verified)

    @property
    def false_repair(self) -> bool:
        """A repair applied to a conversion that was verified as made."""
        return self.status == "ok" and not self.first_validation_failed and bool(self.repairs_applied)

    def to_dict(self) -> dict:
        return {**asdict(self), "faulty": self.faulty, "detected": self.detected, "repaired": self.repaired,
                "fully_repaired": self.fully_repaired, "false_repair": self.false_repair}


def case_result(raw: dict, seconds: float, peak_mib: float) -> CaseResult:
    """Read a child's result (see child.run) into the figures of the table."""
    case = raw["case"]
    result = CaseResult(case["case_id"], case["model"], f"{case['source']} -> {case['target']}", case["scenario"],
                        case.get("fault_kind"), raw.get("expected_category"), "ok", seconds=round(seconds, 1),
                        peak_mib=round(peak_mib))
    if "error" in raw:
        result.status, result.error = raw.get("status", "error"), raw["error"]
        return result
    _read_report(result, raw["report"])
    _read_holdout(result, raw.get("holdout_before"), raw.get("holdout_after"))
    return result


def _read_report(result: CaseResult, report: dict) -> None:
    before = report.get("metrics_before_repair") or report.get("metrics") or {}
    after = report.get("metrics") or {}
    result.first_validation_failed = report.get("metrics_before_repair") is not None
    result.images = before.get("images", 0)
    result.mismatch_before = before.get("top1_mismatches", 0)
    result.max_abs_before = _number(before.get("max_abs_diff"))
    result.mismatch_after = after.get("top1_mismatches")
    result.max_abs_after = _number(after.get("max_abs_diff"))
    result.findings = dict(Counter(f["category"] for f in report.get("findings", [])))
    result.top_category = report["findings"][0]["category"] if report.get("findings") else None
    result.repairs_applied = [r["category"] for r in report.get("repairs", []) if r.get("status") == "applied"]
    result.converters = [hop["converter"] for hop in report.get("route") or [] if hop.get("converter")]
    result.verified = bool((report.get("verdict") or {}).get("verified"))
    result.stage_seconds = {k: round(v, 2) for k, v in (report.get("timings") or {}).items()}


def _read_holdout(result: CaseResult, before: dict | None, after: dict | None) -> None:
    if before and before.get("metrics"):
        result.holdout_before = before["metrics"]["top1_mismatches"]
        result.holdout_images = before["metrics"]["images"]
    if after and after.get("metrics"):
        result.holdout_after = after["metrics"]["top1_mismatches"]
        result.holdout_images = after["metrics"]["images"]
        result.holdout_verified = bool((after.get("verdict") or {}).get("verified"))


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Totals:
    cases: int
    clean_cases: int
    faulty_cases: int
    faults_detected: int
    faults_repaired: int
    cases_fully_repaired: int
    localized_right: int  # injected faults whose first finding names the planted category
    injected_faulty: int
    false_repairs: int  # repairs applied to clean conversions that were verified as made
    errors: int
    not_applicable: int

    def to_dict(self) -> dict:
        return asdict(self)


def totals(results: list[CaseResult]) -> Totals:
    ran = [r for r in results if r.status == "ok"]
    injected = [r for r in ran if r.fault_kind and r.faulty]
    return Totals(
        cases=len(results),
        clean_cases=sum(r.scenario == "clean" for r in ran),
        faulty_cases=sum(r.faulty for r in ran),
        faults_detected=sum(r.detected for r in ran),
        faults_repaired=sum(r.repaired for r in ran),
        cases_fully_repaired=sum(r.fully_repaired for r in ran),
        localized_right=sum(r.top_category == r.expected_category for r in injected),
        injected_faulty=len(injected),
        false_repairs=sum(r.false_repair for r in ran),
        errors=sum(r.status in ("error", "timeout") for r in results),
        not_applicable=sum(r.status == "not applicable" for r in results),
    )
