"""What an injection returns: the planted fault, described so that a localizer's findings can be scored."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BadInputError
from ..localize.findings import Category


@dataclass
class InjectedFault:
    """One planted fault.

    target_node: the ONNX node name (or, for input-level faults, the graph input name), or the TFLite tensor
        name (a weight tensor for WB faults, the operator's first output tensor otherwise) that was changed
        or next to which an op was inserted or removed; it is also the site name `list_sites` returns.
    kind: the fault kind (see kinds.KINDS), e.g. "fp16_weights".
    details: numbers that describe the change (old/new attribute values, size of a weight change...), so a
        benchmark can relate how visible a fault is to how well it was localized.
    """

    category: Category
    target_node: str
    kind: str
    description: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["category"] = self.category.value
        return data


class FaultNotApplicableError(BadInputError):
    """The model has no site for this fault kind, or the requested layer is not one of its sites."""


@dataclass
class Change:
    """What one format-specific edit did; the dispatcher adds the category, kind and site to make the fault."""

    description: str
    details: dict[str, Any] = field(default_factory=dict)
