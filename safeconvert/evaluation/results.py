"""What one case came to, and the evaluation's figures, each defined so that it can fail.

- planted faults: cases where the evaluation planted a fault (injected) or the converter was run with
  options that change numerics without `--keep-quantisation` (a real converter fault);
- detected: a planted fault whose conversion, as made, was *not verified* (findings alone do not count);
- repaired: detected and verified after repair; fully repaired: also verified on the held-out photos;
- edits on clean conversions: clean cases (nothing planted) that got any edit or repair applied;
- false verifications on held-out photos: any case verified on the repair photos whose output is not verified
  against the source on the held-out photos (the same verdict and tolerances);
- localization, per planted category, over detected faults: precision (share of findings that name the planted
  category, and the planted layer where it has one) and recall (detected faults with such a finding among
  theirs); "first finding right" reads the findings in the order localization emitted them, before repair;
- kept quantisation: a `--keep-quantisation` case counts as kept only when it is verified *and* its written
  output still stores quantised tensors.

Figures that an older record does not hold (findings order, layers, quantised tensors) are None: unknown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields

DERIVED = ("faulty", "planted", "detected", "repaired", "fully_repaired", "edit_on_clean",
           "false_verification", "kept_quantisation", "first_finding_right")


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
    top_category: str | None = None  # first finding of the report (after repair's reordering)
    repairs_applied: list[str] = field(default_factory=list)
    converters: list[str] = field(default_factory=list)  # the converter of each hop kept (empty for `repair`)
    verified: bool = False
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_mib: float = 0.0
    keep_quantisation: bool = False
    # Findings of the first localization as emitted, before repair reordered them: category, and whether the
    # finding names the planted layer (None: the planted fault has no layer). None: not recorded.
    findings_emitted: list[dict] | None = None
    quantised_tensors: dict[str, int] | None = None  # of the written output (keep-quantisation cases)
    output_bytes: int | None = None  # size of the written output (keep-quantisation cases)
    float_bytes: int | None = None  # size of the same route's float conversion, for comparison
    converted_quantised_tensors: dict[str, int] | None = None  # of the quantised conversion as made, before repair
    converted_bytes: int | None = None
    provenance: dict | None = None  # commit, dirty tree, versions (see provenance.py); None: not recorded

    @property
    def ran(self) -> bool:
        return self.status == "ok"

    @property
    def clean(self) -> bool:
        return self.ran and self.scenario == "clean"

    @property
    def planted(self) -> bool:
        """A fault the evaluation planted, or a converter run that changes numerics unasked."""
        return self.ran and self.scenario != "clean" and not self.keep_quantisation

    @property
    def faulty(self) -> bool:
        """The conversion as made failed validation (any case)."""
        return self.ran and self.first_validation_failed

    @property
    def detected(self) -> bool:
        """A planted fault the verdict caught: not verified as made."""
        return self.planted and self.first_validation_failed

    @property
    def repaired(self) -> bool:
        return self.detected and self.verified

    @property
    def fully_repaired(self) -> bool:
        """Verified on the repair photos and on the hold-out photos repair never saw."""
        return self.repaired and bool(self.holdout_verified)

    @property
    def edit_on_clean(self) -> bool:
        """A clean conversion (nothing planted) that got any edit or repair applied."""
        return self.clean and bool(self.repairs_applied)

    @property
    def false_verification(self) -> bool | None:
        """Verified on the repair photos, not on the held-out photos; None when the hold-out was not checked."""
        if not (self.ran and self.verified):
            return False
        return None if self.holdout_verified is None else not self.holdout_verified

    @property
    def kept_quantisation(self) -> bool | None:
        """A verified --keep-quantisation case whose output still stores quantised tensors; None: not recorded."""
        if not (self.ran and self.keep_quantisation and self.verified):
            return False
        return None if self.quantised_tensors is None else sum(self.quantised_tensors.values()) > 0

    @property
    def first_finding_right(self) -> bool | None:
        """The first finding localization emitted names the planted category; None: order not recorded."""
        if not self.detected or self.findings_emitted is None:
            return None
        return bool(self.findings_emitted) and self.findings_emitted[0]["category"] == self.expected_category

    def to_dict(self) -> dict:
        return {**asdict(self), **{name: getattr(self, name) for name in DERIVED}}

    @classmethod
    def from_dict(cls, data: dict) -> "CaseResult":
        """A recorded case (measured.json or results.json, old records included: missing fields are unknown)."""
        known = {f.name for f in fields(cls)}
        result = cls(**{k: v for k, v in data.items() if k in known})
        if "keep_quantisation" not in data:
            result.keep_quantisation = result.case_id.endswith("keep-quantisation")
        return result


def case_result(raw: dict, seconds: float, peak_mib: float) -> CaseResult:
    """Read a child's result (see child.run) into the figures of the table."""
    case = raw["case"]
    result = CaseResult(case["case_id"], case["model"], f"{case['source']} -> {case['target']}", case["scenario"],
                        case.get("fault_kind"), raw.get("expected_category"), "ok", seconds=round(seconds, 1),
                        peak_mib=round(peak_mib), keep_quantisation=bool(case.get("keep_quantisation")))
    if "error" in raw:
        result.status, result.error = raw.get("status", "error"), raw["error"]
        return result
    _read_report(result, raw["report"])
    _read_holdout(result, raw.get("holdout_before"), raw.get("holdout_after"))
    result.findings_emitted = raw.get("findings_emitted")
    quantisation = raw.get("quantisation") or {}
    result.quantised_tensors = quantisation.get("quantised_tensors")
    result.output_bytes, result.float_bytes = quantisation.get("output_bytes"), quantisation.get("float_bytes")
    result.converted_quantised_tensors = quantisation.get("converted_quantised_tensors")
    result.converted_bytes = quantisation.get("converted_bytes")
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
class Localization:
    """Localization figures of one planted category, over its detected faults."""

    detected: int = 0
    findings: int = 0
    findings_right_category: int = 0
    findings_right_layer: int | None = 0  # None: some case did not record its findings' layers
    recalled_category: int = 0
    recalled_layer: int | None = 0
    first_right: int | None = 0  # None: some case did not record the order localization emitted
    known_first: int = 0

    def add(self, result: CaseResult) -> None:
        self.detected += 1
        emitted = result.findings_emitted
        if emitted is None:  # an older record: the report's findings (same set, repair's order)
            categories = [c for c, n in result.findings.items() for _ in range(n)]
        else:
            categories = [f["category"] for f in emitted]
        right = sum(c == result.expected_category for c in categories)
        self.findings += len(categories)
        self.findings_right_category += right
        self.recalled_category += right > 0
        if emitted is None:
            self.findings_right_layer = self.recalled_layer = self.first_right = None
            return
        at_layer = sum(_at_planted(f, result.expected_category) for f in emitted)
        if self.findings_right_layer is not None:
            self.findings_right_layer += at_layer
            self.recalled_layer += at_layer > 0
        if self.first_right is not None:
            self.first_right += bool(result.first_finding_right)
        self.known_first += 1


def _at_planted(finding: dict, expected: str | None) -> bool:
    """The finding names the planted category, and the planted layer when the fault has one."""
    return finding.get("category") == expected and finding.get("at_planted_layer") is not False


@dataclass
class Totals:
    cases: int
    clean_cases: int
    planted_faults: int
    faults_detected: int  # planted faults not verified as made
    faults_repaired: int
    cases_fully_repaired: int
    edits_on_clean: int  # clean conversions that got any edit or repair
    verified_cases: int
    false_verifications: int  # verified, then not verified on the held-out photos
    false_verifications_unknown: int  # verified, hold-out not checked
    first_finding_right: int | None  # detected faults whose first emitted finding names the planted category
    first_finding_known: int
    keep_quantisation_cases: int
    kept_quantised: int | None  # verified and still quantised
    quantisation_undone: int | None  # verified, but no quantised tensor left
    errors: int
    not_applicable: int
    localization: dict[str, dict] = field(default_factory=dict)  # planted category -> Localization fields
    mixed_versions: bool = False
    versions: dict[str, int] = field(default_factory=dict)  # provenance label -> cases

    def to_dict(self) -> dict:
        return asdict(self)


def totals(results: list[CaseResult]) -> Totals:
    from .provenance import describe_versions

    ran = [r for r in results if r.ran]
    detected = [r for r in ran if r.detected]
    first = [r.first_finding_right for r in detected]
    keep = [r for r in ran if r.keep_quantisation]
    kept = [r.kept_quantisation for r in keep if r.verified]
    mixed, versions = describe_versions([r.provenance for r in results])
    return Totals(
        cases=len(results),
        clean_cases=sum(r.clean for r in ran),
        planted_faults=sum(r.planted for r in ran),
        faults_detected=len(detected),
        faults_repaired=sum(r.repaired for r in ran),
        cases_fully_repaired=sum(r.fully_repaired for r in ran),
        edits_on_clean=sum(r.edit_on_clean for r in ran),
        verified_cases=sum(r.verified for r in ran),
        false_verifications=sum(r.false_verification is True for r in ran),
        false_verifications_unknown=sum(r.false_verification is None for r in ran),
        first_finding_right=None if None in first else sum(first),
        first_finding_known=sum(v is not None for v in first),
        keep_quantisation_cases=len(keep),
        kept_quantised=None if None in kept else sum(kept),
        quantisation_undone=None if None in kept else sum(not v for v in kept),
        errors=sum(r.status in ("error", "timeout") for r in results),
        not_applicable=sum(r.status == "not applicable" for r in results),
        localization=_localization(detected),
        mixed_versions=mixed,
        versions=versions,
    )


def _localization(detected: list[CaseResult]) -> dict[str, dict]:
    per_category: dict[str, Localization] = {}
    for result in detected:
        if result.expected_category:
            per_category.setdefault(result.expected_category, Localization()).add(result)
    return {category: asdict(figures) for category, figures in sorted(per_category.items())}
