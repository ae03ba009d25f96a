"""Seeded fault injection: plant realistic converter faults into converted models.

Localization and repair are tested, and the evaluation benchmark is run, on models with known faults: each
injection changes one layer (or the input) the way a converter gets it wrong, in one of the categories
localization reports (WB, LH, CG, TSS, ID, PP), and returns an InjectedFault naming what changed. ONNX and
TFLite models are edited directly; PyTorch targets are made from an edited ONNX through onnx2torch.

    sites = list_sites("model.onnx", "stride")
    fault = inject("model.onnx", "faulty.onnx", "stride", seed=3)
"""

from .api import choose_site, inject, list_sites
from .fault import FaultNotApplicableError, InjectedFault
from .kinds import KINDS, FaultKind, kinds_for
from .torch_target import inject_torch

__all__ = [
    "KINDS",
    "FaultKind",
    "FaultNotApplicableError",
    "InjectedFault",
    "choose_site",
    "inject",
    "inject_torch",
    "kinds_for",
    "list_sites",
]
