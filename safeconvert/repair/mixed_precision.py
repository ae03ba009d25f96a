"""Keep the fewest layers in float when a quantisation the user wants breaks the verdict.

Quantisation that was asked for is not undone. Instead each quantised conv/dense layer is ranked by
measured sensitivity — how much closer the target gets to the source when that layer alone runs in float
(weights from a float conversion of the same source) — and the smallest prefix of that ranking that
verifies is kept in float. Each choice tried is reported with its size cost.

Keeping every quantised layer in float is not a way to keep the quantisation: when only that passes the
verdict's numbers, the search ends as "quantisation undone", with no model, and the run is not verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..validators.validate import Validation
from . import tflite_edit


@dataclass
class FloatChoice:
    """One set of layers kept in float, what it costs and how it validates."""

    layers: int
    added_bytes: int
    mismatches: int
    max_abs_diff: float
    verified: bool


@dataclass
class MixedPrecision:
    path: Path | None
    kept_float: list[str] = field(default_factory=list)
    added_bytes: int = 0
    model_bytes: int = 0
    ranking: list[tuple[str, float]] = field(default_factory=list)  # (layer, output gap with it alone in float)
    tried: list[FloatChoice] = field(default_factory=list)
    quantised_layers: int = 0
    quantisation_undone: bool = False  # only every quantised layer in float passes: no quantised model verifies

    @property
    def hopeless(self) -> bool:
        """Even every quantised layer in float did not pass the numbers: no subset can."""
        ceiling = next((t for t in self.tried if t.layers == self.quantised_layers), None)
        return self.path is None and not self.quantisation_undone and ceiling is not None and not ceiling.verified

    def describe(self) -> str:
        if self.quantisation_undone:
            return (f"quantisation undone: only with all {self.quantised_layers} quantised conv/dense layers in float "
                    "does the model pass the verdict, and that is no longer the quantised model --keep-quantisation "
                    "asks for; nothing written as verified")
        if self.hopeless:
            ceiling = next(t for t in self.tried if t.layers == self.quantised_layers)
            return (f"no set of float layers can verify: even with all {ceiling.layers} quantised conv/dense layers "
                    f"in float, {ceiling.mismatches} labels change (max |diff| {ceiling.max_abs_diff:.3g}); the "
                    "quantisation of the activations alone breaks the verdict")
        if self.path is None:
            return "no set of float layers verifies"
        share = 100.0 * self.added_bytes / self.model_bytes if self.model_bytes else 0.0
        return (f"kept {len(self.kept_float)} of {len(self.ranking)} quantised layers in float "
                f"(+{self.added_bytes / 1024:.0f} KiB, +{share:.1f}% of the model): {', '.join(self.kept_float[:6])}"
                + (" ..." if len(self.kept_float) > 6 else ""))


@dataclass
class _Models:
    """The target and the float reference, each read once (parsing a flatbuffer into objects is slow);
    every candidate is a deep copy of the target with some layers' float parameters written in."""

    target: object
    layers: list  # tflite_edit.WeightOp of the target, in order
    float_parameters: list  # (weight, bias) of the float reference, same order

    @classmethod
    def read(cls, target: Path, float_reference: Path) -> "_Models | None":
        model, reference = tflite_edit.load_model(target), tflite_edit.load_model(float_reference)
        layers, reference_layers = tflite_edit.weight_ops(model), tflite_edit.weight_ops(reference)
        if len(layers) != len(reference_layers):
            return None
        parameters = [tflite_edit.layer_parameters(reference, w.op_index) for w in reference_layers]
        return cls(model, layers, parameters)

    def with_float(self, positions: list[int], out: Path) -> Path:
        import copy

        model = copy.deepcopy(self.target)
        for position in positions:
            layer = self.layers[position]
            weight, bias = self.float_parameters[position]
            op_index = tflite_edit.find_op(model, layer.output)
            if layer.activation_type == "FLOAT32":
                tflite_edit.set_layer_parameters(model, op_index, weight, bias)
            else:
                tflite_edit.keep_op_float(model, op_index, weight, bias)
        tflite_edit.remove_dead_ops(model)
        out.write_bytes(tflite_edit.model_bytes(model))
        return out


def keep_fewest_float(target: Path, float_reference: Path, work: Path, validate: Callable[[Path], Validation],
                      quick_gap: Callable[[Path], float],
                      requantise: Callable[[list[str], Path], Path] | None = None) -> MixedPrecision:
    """Search the smallest sensitivity-ranked set of float layers that verifies.

    Full-integer models quantise activations too: a layer kept float between int8 neighbours still sees
    int8 inputs, so when `requantise` is given (re-run the converter keeping the named layers float, with
    float activations around them) candidates are made that way; the cheap per-layer probes only rank."""
    result = MixedPrecision(None, model_bytes=target.stat().st_size)
    models = _Models.read(target, float_reference)
    if models is None:
        return result
    quantised = [i for i, w in enumerate(models.layers) if w.quantised]
    result.quantised_layers = len(quantised)
    if not quantised or not _verifies(models, quantised, work, validate, requantise, result):
        return result  # the upper bound first: when all layers in float do not verify, no subset will
    gaps = sorted(((i, quick_gap(models.with_float([i], work / "mixed-probe.tflite"))) for i in quantised), key=lambda g: g[1])
    result.ranking = [(short_name(models.layers[i].output), gap) for i, gap in gaps]
    order = [i for i, _ in gaps]
    low, high = 1, len(order) - 1
    best = None  # every layer in float (the upper bound) is not a quantised model: it is never the answer
    while low <= high:  # smallest verifying prefix (sensitivity makes it close to monotone; validation decides)
        middle = (low + high) // 2
        chosen = order[:middle]
        path = _candidate(models, chosen, work / f"mixed-k{middle}.tflite", requantise)
        validation = validate(path)
        added = _added(models, chosen)
        result.tried.append(FloatChoice(middle, added, validation.metrics.top1_mismatches, validation.metrics.max_abs_diff,
                                        validation.verdict.verified))
        if validation.verdict.verified:
            best, high = (path, chosen, added), middle - 1
        else:
            low = middle + 1
    if best is not None:
        result.path, chosen, result.added_bytes = best
        result.kept_float = [short_name(models.layers[i].output) for i in chosen]
    else:
        result.quantisation_undone = True
    return result


def _verifies(models: _Models, chosen: list[int], work: Path, validate: Callable[[Path], Validation],
              requantise, result: MixedPrecision) -> bool:
    """Whether one set of float layers passes the verdict's numbers (recorded in `result.tried`); with every
    layer in float the verdict may also say the quantisation is undone, which this upper bound ignores."""
    path = _candidate(models, chosen, work / f"mixed-k{len(chosen)}.tflite", requantise)
    validation = validate(path)
    result.tried.append(FloatChoice(len(chosen), _added(models, chosen), validation.metrics.top1_mismatches,
                                    validation.metrics.max_abs_diff, validation.verdict.verified))
    verdict = validation.verdict
    return verdict.verified or (verdict.quantisation_undone and len(verdict.reasons) == 1)


def _added(models: _Models, chosen: list[int]) -> int:
    """Bytes the chosen layers add when their weights are stored in float32."""
    return sum(models.layers[i].float32_bytes - models.layers[i].weight_bytes for i in chosen)


def _candidate(models: _Models, chosen: list[int], out: Path, requantise) -> Path:
    full_integer = any(models.layers[i].activation_type != "FLOAT32" for i in chosen)
    if full_integer and requantise is not None:
        return requantise([models.layers[i].output for i in chosen], out)
    return models.with_float(chosen, out)


def restore_all_float(target: Path, float_reference: Path, work: Path) -> Path | None:
    """Every quantised layer back in float (quantisation nobody asked for), or None when none is quantised."""
    models = _Models.read(target, float_reference)
    if models is None:
        return None
    chosen = [i for i, w in enumerate(models.layers) if w.quantised]
    return models.with_float(chosen, work / "mixed-all.tflite") if chosen else None


def short_name(tensor_name: str) -> str:
    """TFLite joins fused ops' names with ';': keep the part naming the conv/dense itself."""
    parts = tensor_name.split(";")
    keys = ("conv", "depthwise", "matmul", "dense", "gemm")
    return next((p for p in parts if any(k in p.lower() for k in keys)), parts[0])
