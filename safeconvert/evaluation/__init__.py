"""The evaluation: the literature's conversion experiment re-run on safeconvert, case by case.

Models x routes x scenarios (clean conversions, real converter faults, seeded injected faults): each case
runs safeconvert in its own process on part of the calibration photos, then checks the result on photos held
out from repair, and the results are tabulated (markdown, JSON, a plot). `benchmarks/evaluate.py` is the
command; the fast subset runs in the test suite.
"""

from .cases import Case, evaluation_cases
from .results import CaseResult, Totals, totals

__all__ = ["Case", "CaseResult", "Totals", "evaluation_cases", "totals"]
