"""Which cases the evaluation runs: model x route x scenario, seeded so every run plants the same faults."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Models: the real MobileNetV2; ResNet101 and InceptionV3 with seeded weights (no ImageNet weights ship
# offline) and BatchNorm statistics from the photos; a small seeded CNN for the fast subset.
MODELS = ("mobilenet_v2", "resnet101", "inception_v3")
MODEL_NOTES = {
    "mobilenet_v2": "real ImageNet weights (torchvision IMAGENET1K_V1)",
    "resnet101": "seeded weights, BatchNorm statistics from the photos (no ImageNet weights offline)",
    "inception_v3": "seeded weights, BatchNorm statistics from the photos (no ImageNet weights offline)",
    "small": "small seeded CNN (32x32 input, 10 classes)",
}

# Clean conversions: (source, target). Sources: "keras", "pt2" (MobileNetV2 only), "onnx" and "tflite"
# (made from the Keras source by safeconvert itself before the cases run), "onnx-torch" (from the .pt2).
CLEAN_ROUTES = (("keras", "onnx"), ("keras", "tflite"), ("keras", "torchscript"), ("keras", "savedmodel"),
                ("pt2", "onnx"), ("onnx", "torchscript"), ("onnx", "pt2"), ("onnx", "tflite"), ("onnx", "savedmodel"),
                ("tflite", "onnx"), ("onnx-torch", "tflite"), ("onnx-torch", "savedmodel"))
TORCH_SOURCES = ("pt2", "onnx-torch")  # MobileNetV2 only: the seeded models exist in Keras alone

# The real converter faults: TFLite's numerics-changing options (undone by default, kept with
# --keep-quantisation), and an int8 TFLite model converted on to ONNX.
QUANTISATION_SCENARIOS = ("tflite-dynamic-range", "tflite-float16", "tflite-int8")

# Injected faults: kind -> seeds (each seed picks another layer where the kind has several sites).
ONNX_INJECTED = {
    "fp16_weights": (0,), "int8_weights": (0, 1), "transposed_kernel": (0, 1),
    "pads_dropped": (0, 1), "pads_shifted": (0, 1), "stride": (0,), "dilation": (0, 1), "clip_bounds": (0,),
    "removed_activation": (0, 1), "extra_op": (0,), "relu6_to_relu": (0,),
    "layout_reinterpret": (0, 1), "flatten_order": (0,),
    "nchw_reinterpret": (0,), "hw_swap": (0,), "input_scale": (0,), "channel_order": (0,),
}
TFLITE_INJECTED = {"int8_weights": (0,), "transposed_kernel": (0,), "pads_dropped": (0,), "dilation": (0,),
                   "removed_activation": (0,), "layout_reinterpret": (0,), "hw_swap": (0,), "channel_order": (0,)}
TORCH_INJECTED = {"transposed_kernel": (0,), "removed_activation": (0,), "channel_order": (0,)}

# Converter options a clean route can be run with (a user's own choice, nothing planted by the evaluation);
# none of the standard cases uses them. TFLite's Optimize.DEFAULT is set for speed and quantises weights: safeconvert
# undoes it, so such a clean case gets an edit, which the figure "edits on clean conversions" counts.
CLEAN_ROUTE_OPTIONS = {"tflite-optimize-default": {"tflite_optimizations": ["DEFAULT"]}}

QUICK_ONNX_INJECTED = {"transposed_kernel": (0,), "pads_shifted": (0,), "removed_activation": (0,),
                       "layout_reinterpret": (0,), "hw_swap": (0,), "channel_order": (0,)}


@dataclass(frozen=True)
class Case:
    """One run of safeconvert: a conversion (or an injected fault) to validate, localize and repair."""

    model: str
    source: str  # "keras", "pt2", "onnx", "tflite", "tflite-int8"
    target: str  # "onnx", "tflite", "torchscript", "savedmodel"
    scenario: str  # "clean", one of QUANTISATION_SCENARIOS, "int8-tflite-to-onnx", "injected"
    fault_kind: str | None = None
    seed: int = 0
    keep_quantisation: bool = False
    options: str | None = None  # a key of CLEAN_ROUTE_OPTIONS

    @property
    def case_id(self) -> str:
        parts = [self.model, f"{self.source}-to-{self.target}", self.scenario]
        if self.fault_kind:
            parts += [self.fault_kind, f"seed{self.seed}"]
        if self.options:
            parts.append(f"options-{self.options}")
        if self.keep_quantisation:
            parts.append("keep-quantisation")
        return "__".join(parts)

    @property
    def expected_category(self) -> str | None:
        """The category a correct localization names first (None for clean conversions)."""
        if self.fault_kind:
            from ..faults import KINDS

            return KINDS[self.fault_kind].category.value
        return None if self.scenario == "clean" else "TOOL"

    def to_dict(self) -> dict:
        return {**asdict(self), "case_id": self.case_id}


def evaluation_cases(models: list[str], quick: bool = False) -> list[Case]:
    """Every case for these models; `quick` is the fast subset (clean, one real fault, one fault per category)."""
    if quick:
        return [case for model in models for case in _quick_cases(model)]
    return [case for model in models for case in _full_cases(model)]


def _quick_cases(model: str) -> list[Case]:
    return [
        Case(model, "keras", "onnx", "clean"),
        Case(model, "keras", "tflite", "clean"),
        Case(model, "keras", "tflite", "tflite-dynamic-range"),
        *_injected(model, "onnx", QUICK_ONNX_INJECTED),
    ]


def _full_cases(model: str) -> list[Case]:
    cases = [Case(model, src, dst, "clean") for src, dst in CLEAN_ROUTES
             if src not in TORCH_SOURCES or model == "mobilenet_v2"]
    for scenario in QUANTISATION_SCENARIOS:
        cases.append(Case(model, "keras", "tflite", scenario))
        cases.append(Case(model, "keras", "tflite", scenario, keep_quantisation=True))
    cases.append(Case(model, "tflite-int8", "onnx", "int8-tflite-to-onnx"))
    cases += _injected(model, "onnx", ONNX_INJECTED)
    cases += _injected(model, "tflite", TFLITE_INJECTED)
    if model == "mobilenet_v2":
        cases += _injected(model, "torchscript", TORCH_INJECTED)
    return cases


def _injected(model: str, target: str, kinds: dict[str, tuple[int, ...]]) -> list[Case]:
    return [Case(model, "keras", target, "injected", kind, seed) for kind, seeds in kinds.items() for seed in seeds]
