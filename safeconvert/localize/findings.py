"""What localization reports: findings, each with a category, the layers involved, evidence and a repair.

The categories follow the literature on converter faults (see the README): PP preprocessing, ID input
dimensions, TSS tensor shape & structure, WB weights & biases, LH layer hyperparameters, CG computational
graph, plus TOOL for the conversion tool itself (crash, or options that change numerics).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Category(str, enum.Enum):
    TOOL = "TOOL"
    PP = "PP"
    ID = "ID"
    TSS = "TSS"
    WB = "WB"
    LH = "LH"
    CG = "CG"

    @property
    def title(self) -> str:
        return CATEGORY_TITLES[self]


CATEGORY_TITLES = {
    Category.TOOL: "conversion tool",
    Category.PP: "preprocessing",
    Category.ID: "input dimensions",
    Category.TSS: "tensor shape & structure",
    Category.WB: "weights & biases",
    Category.LH: "layer hyperparameters",
    Category.CG: "computational graph",
}


@dataclass
class RepairProposal:
    """How to fix a finding, independent of the target format; repair/ turns it into edits.

    action: e.g. "restore_parameters", "set_attributes", "insert_op", "remove_op", "replace_op",
        "transpose_input", "fold_preprocessing", "rerun_converter", "keep_float".
    arguments: what the action needs (attribute values, the op to insert, converter options...).
    """

    action: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Finding:
    """One localized fault.

    source_layer / target_layer: names from each original model (node or layer names), None when the
        fault has no counterpart on that side (an op missing from or extra in the target).
    evidence: numbers that support the finding (errors, attribute values before/after, shares...).
    score: rank; higher comes first (set from where activations start to diverge, when measured).
    """

    category: Category
    summary: str
    source_layer: str | None = None
    target_layer: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    repair: RepairProposal | None = None
    score: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready: arrays in the evidence or repair arguments are summarised by their shape."""
        return {
            "category": self.category.value,
            "title": self.category.title,
            "summary": self.summary,
            "source_layer": self.source_layer,
            "target_layer": self.target_layer,
            "evidence": _summarise(self.evidence),
            "repair": {"action": self.repair.action, "arguments": _summarise(self.repair.arguments)} if self.repair else None,
            "score": round(float(self.score), 4),
        }


def _summarise(value: Any) -> Any:
    import dataclasses

    import numpy as np

    if isinstance(value, np.ndarray):
        return {"array_shape": list(value.shape)} if value.size > 16 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _summarise(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _summarise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_summarise(v) for v in value]
    return value
