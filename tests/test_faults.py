"""Fault injection on real conversions of the small seeded models (and, marked slow, the real MobileNetV2).

Every fault kind must plant a model that loads and runs and whose outputs move away from the clean
conversion, while the clean conversion itself matches its source. Kinds that should change predictions
(wrong kernels, strides, layouts, input handling...) must change the top-1 label on a share of seeded
inputs; mild ones (float16 weights, an epsilon) only need to move outputs beyond float round-off.
The same seed must give byte-identical ONNX and TFLite files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_factories import assert_outputs_match, in_layout, random_images
from safeconvert.faults import KINDS, FaultNotApplicableError, choose_site, inject, inject_torch, kinds_for, list_sites
from safeconvert.formats import Format
from safeconvert.runners import load_runner
from safeconvert.wrappers.base import ConversionOptions

BATCH = 32
NOISE = 1e-5  # a planted fault moves outputs by more than this share of the clean output range
LABEL_SHARE = 0.1  # faults that should flip labels flip at least this share of the seeded inputs
# The seeded models' activations stay below 6 on unit-variance inputs; ReLU6 faults only show where the cap
# binds, so those kinds are checked on brighter inputs.
INPUT_SCALE = {"clip_bounds": 10.0, "relu6_to_relu": 10.0}


@pytest.fixture(scope="session")
def fault_models(tmp_path_factory, small_keras_file: Path, small_pt2_file: Path) -> dict[str, Path]:
    """Sources and their clean conversions made with the real wrappers.

    torch.onnx runs its TorchScript exporter (torch_dynamo=False) because that one keeps BatchNormalization
    nodes (the dynamo exporter folds them into the convs); the pool model is exported at opset 17, which
    onnx2torch converts, so PyTorch targets can be made from it.
    """
    from safeconvert.models.files import save_torch_export
    from safeconvert.models.small import INPUT_SIZE, keras_small_flatten_cnn, torch_small_pool_cnn
    from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter
    from safeconvert.wrappers.tflite_wrapper import TfliteConverter
    from safeconvert.wrappers.torch_onnx_wrapper import TorchOnnxConverter

    root = tmp_path_factory.mktemp("faults")
    flatten_keras = root / "flatten_cnn.keras"
    keras_small_flatten_cnn().save(flatten_keras)
    pool_pt2 = save_torch_export(torch_small_pool_cnn(), root / "pool_cnn.pt2", (1, 3, INPUT_SIZE, INPUT_SIZE))
    paths = {"keras": small_keras_file, "flatten_keras": flatten_keras, "torch_pt2": small_pt2_file, "pool_pt2": pool_pt2}
    jobs = [
        ("keras_onnx", Tf2OnnxConverter(), "keras", Format.KERAS, ConversionOptions()),
        ("keras_tflite", TfliteConverter(), "keras", Format.KERAS, ConversionOptions()),
        ("flatten_onnx", Tf2OnnxConverter(), "flatten_keras", Format.KERAS, ConversionOptions()),
        ("flatten_tflite", TfliteConverter(), "flatten_keras", Format.KERAS, ConversionOptions()),
        ("torch_onnx", TorchOnnxConverter(), "torch_pt2", Format.TORCH_EXPORT, ConversionOptions(torch_dynamo=False)),
        ("pool_onnx", TorchOnnxConverter(), "pool_pt2", Format.TORCH_EXPORT, ConversionOptions(torch_dynamo=False, opset=17)),
    ]
    for name, converter, source, fmt, options in jobs:
        paths[name] = root / f"{name}.{'tflite' if 'tflite' in name else 'onnx'}"
        converter.convert(paths[source], fmt, paths[name], options)
    return paths


def outputs(path: Path, scale: float = 1.0) -> np.ndarray:
    """The model's outputs on the seeded NHWC images, fed in its own layout."""
    runner = load_runner(path)
    images = random_images(BATCH, 32, 32, seed=0) * np.float32(scale)
    return runner.run(in_layout(images, runner.spec.layout))


def check_planted(clean: Path, faulty: Path, kind: str, flips_labels: bool) -> None:
    scale = INPUT_SCALE.get(kind, 1.0)
    expected, got = outputs(clean, scale), outputs(faulty, scale)
    assert got.shape == expected.shape
    spread = float(np.ptp(expected))
    assert float(np.abs(got - expected).max()) > NOISE * spread, f"{kind} left the outputs unchanged"
    if flips_labels:
        flipped = float(np.mean(got.argmax(1) != expected.argmax(1)))
        assert flipped >= LABEL_SHARE, f"{kind} changed only {flipped:.0%} of the labels"


# --- clean conversions --------------------------------------------------------------------------------

@pytest.mark.parametrize("source, converted", [
    ("keras", "keras_onnx"), ("keras", "keras_tflite"), ("flatten_keras", "flatten_onnx"),
    ("flatten_keras", "flatten_tflite"), ("torch_pt2", "torch_onnx"), ("pool_pt2", "pool_onnx"),
])
def test_clean_conversion_matches_source(fault_models, source: str, converted: str):
    assert_outputs_match(fault_models[source], fault_models[converted])


# --- every kind, in each format ------------------------------------------------------------------------

# (model, kind, should flip labels): every ONNX kind at least once, on a model that has a site for it.
ONNX_CASES = [
    ("keras_onnx", "fp16_weights", False),
    ("keras_onnx", "int8_weights", False),
    ("torch_onnx", "transposed_kernel", True),
    ("torch_onnx", "pads_dropped", True),
    ("torch_onnx", "pads_shifted", True),
    ("torch_onnx", "stride", True),
    ("torch_onnx", "dilation", True),
    ("torch_onnx", "bn_epsilon", False),
    ("pool_onnx", "ceil_mode", False),
    ("pool_onnx", "count_include_pad", False),
    ("flatten_onnx", "count_include_pad", False),
    ("keras_onnx", "clip_bounds", False),
    ("torch_onnx", "removed_activation", True),
    ("keras_onnx", "extra_op", False),
    ("keras_onnx", "relu6_to_relu", False),
    ("flatten_onnx", "flatten_order", True),
    ("torch_onnx", "layout_reinterpret", True),
    ("keras_onnx", "nchw_reinterpret", False),
    ("torch_onnx", "nchw_reinterpret", True),
    ("torch_onnx", "hw_swap", True),
    ("flatten_onnx", "hw_swap", True),
    ("torch_onnx", "input_scale", True),
    ("torch_onnx", "channel_order", True),
    ("flatten_onnx", "channel_order", True),
]

TFLITE_CASES = [
    ("keras_tflite", "fp16_weights", False),
    ("keras_tflite", "int8_weights", False),
    ("flatten_tflite", "transposed_kernel", True),
    ("flatten_tflite", "pads_dropped", True),
    ("keras_tflite", "pads_shifted", False),
    ("keras_tflite", "stride", False),
    ("flatten_tflite", "dilation", True),
    ("flatten_tflite", "clip_bounds", True),
    ("flatten_tflite", "removed_activation", True),
    ("keras_tflite", "extra_op", False),
    ("keras_tflite", "relu6_to_relu", False),
    ("flatten_tflite", "flatten_order", True),
    ("flatten_tflite", "layout_reinterpret", True),
    ("flatten_tflite", "nchw_reinterpret", True),
    ("flatten_tflite", "hw_swap", True),
    ("flatten_tflite", "input_scale", True),
    ("flatten_tflite", "channel_order", True),
]


def test_cases_cover_every_kind():
    assert {kind for _, kind, _ in ONNX_CASES} == set(kinds_for("onnx"))
    assert {kind for _, kind, _ in TFLITE_CASES} == set(kinds_for("tflite"))


@pytest.mark.parametrize("model, kind, flips_labels", ONNX_CASES + TFLITE_CASES, ids=lambda v: str(v))
def test_planted_fault_runs_and_changes_outputs(fault_models, tmp_path: Path, model: str, kind: str, flips_labels: bool):
    clean = fault_models[model]
    suffix = clean.suffix
    fault = inject(clean, tmp_path / f"a{suffix}", kind, seed=0)
    again = inject(clean, tmp_path / f"b{suffix}", kind, seed=0)

    assert fault.category is KINDS[kind].category and fault.kind == kind
    assert fault.target_node in list_sites(clean, kind) and fault.description
    assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes(), "same seed, different file"
    assert again == fault
    if suffix == ".onnx":
        import onnx

        onnx.checker.check_model(onnx.load(str(tmp_path / "a.onnx")))
    check_planted(clean, tmp_path / f"a{suffix}", kind, flips_labels)


# --- sites and seeds -----------------------------------------------------------------------------------

def test_seeds_sweep_several_layers_deterministically(fault_models, tmp_path: Path):
    sites = list_sites(fault_models["torch_onnx"], "fp16_weights")
    assert len(sites) == 5 and sites == list_sites(fault_models["torch_onnx"], "fp16_weights")
    chosen = [inject(fault_models["torch_onnx"], tmp_path / f"{seed}.onnx", "fp16_weights", seed=seed).target_node for seed in range(8)]
    assert len(set(chosen)) > 1
    assert chosen == [choose_site(sites, seed) for seed in range(8)]


def test_resizing_faults_only_where_the_model_still_runs(fault_models, tmp_path: Path):
    """A stride change fits a global-pooling head but not a Flatten into a fixed Dense layer."""
    assert list_sites(fault_models["keras_onnx"], "stride")
    assert list_sites(fault_models["flatten_onnx"], "stride") == []
    with pytest.raises(FaultNotApplicableError):
        inject(fault_models["flatten_onnx"], tmp_path / "x.onnx", "stride", layer=list_sites(fault_models["flatten_onnx"], "dilation")[0])
    assert not (tmp_path / "x.onnx").exists()


def test_tflite_shapes_are_rewritten_after_a_size_change(fault_models, tmp_path: Path):
    from safeconvert.faults.tflite_model import TfliteGraph

    fault = inject(fault_models["flatten_tflite"], tmp_path / "x.tflite", "pads_dropped", layer="small_flatten_cnn_1/smooth_1/AvgPool")
    graph = TfliteGraph.load(tmp_path / "x.tflite")
    pooled = graph.find_op(fault.target_node).outputs[0]
    assert graph.shape(pooled) == (1, 14, 14, 16)


@pytest.mark.parametrize("model, kind, layer", [
    ("keras_onnx", "no_such_kind", None),
    ("keras_tflite", "bn_epsilon", None),  # TFLite folds BatchNorm: no epsilon to change
    ("keras_onnx", "flatten_order", None),  # a global-pooling head has nothing to flatten in the wrong order
    ("keras_onnx", "bn_epsilon", None),  # tf2onnx folds BatchNorm as well
    ("keras_onnx", "dilation", "no/such/layer"),
    ("keras", "fp16_weights", None),  # faults go into converted models, not Keras sources
])
def test_refused_requests(fault_models, tmp_path: Path, model: str, kind: str, layer: str | None):
    with pytest.raises(FaultNotApplicableError):
        inject(fault_models[model], tmp_path / "out.bin", kind, layer=layer)


# --- PyTorch targets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model, kind", [
    ("keras_onnx", "transposed_kernel"),
    ("pool_onnx", "bn_epsilon"),
    ("pool_onnx", "ceil_mode"),
    ("keras_onnx", "removed_activation"),
    ("flatten_onnx", "flatten_order"),
    ("keras_onnx", "hw_swap"),
    ("flatten_onnx", "channel_order"),
])
def test_pytorch_target_carries_the_onnx_fault(fault_models, tmp_path: Path, model: str, kind: str):
    clean = fault_models[model]
    planted = inject(clean, tmp_path / "faulty.onnx", kind, seed=1)
    fault = inject_torch(clean, tmp_path / "faulty.pt", kind, seed=1)
    assert fault == planted
    torch_out, onnx_out = outputs(tmp_path / "faulty.pt"), outputs(tmp_path / "faulty.onnx")
    assert np.abs(torch_out - onnx_out).max() <= 1e-4 * np.ptp(onnx_out)
    check_planted(clean, tmp_path / "faulty.pt", kind, flips_labels=False)


# --- the real MobileNetV2 ------------------------------------------------------------------------------

@pytest.mark.slow
def test_mobilenet_v2_one_fault_per_category_changes_labels(mobilenet_files: dict[str, Path], tmp_path_factory):
    """One fault of each category, planted in MobileNetV2 converted from Keras by tf2onnx (and BatchNorm
    epsilon in the torch.onnx export, the only conversion that keeps BatchNorm nodes), changes the top-1
    label of at least one of the packaged photos."""
    from safeconvert.localize.findings import Category
    from safeconvert.wrappers.tf2onnx_wrapper import Tf2OnnxConverter
    from safeconvert.wrappers.torch_onnx_wrapper import TorchOnnxConverter

    root = tmp_path_factory.mktemp("mobilenet_faults")
    keras_onnx, torch_onnx = root / "keras.onnx", root / "torch.onnx"
    Tf2OnnxConverter().convert(mobilenet_files["keras"], Format.KERAS, keras_onnx, ConversionOptions())
    TorchOnnxConverter().convert(mobilenet_files["pt2"], Format.TORCH_EXPORT, torch_onnx, ConversionOptions(torch_dynamo=False))
    cases = [
        (keras_onnx, "transposed_kernel", None),
        (keras_onnx, "dilation", None),
        # block 3's depthwise BatchNorm (8th in graph order), whose channel variances go down to 1.7e-4: one
        # layer's epsilon going 1e-5 -> 1e-3 shows there; in most layers it changes no label.
        (torch_onnx, "bn_epsilon", list_sites(torch_onnx, "bn_epsilon")[7]),
        (keras_onnx, "removed_activation", None),
        (keras_onnx, "layout_reinterpret", None),
        (keras_onnx, "hw_swap", None),
        (keras_onnx, "channel_order", None),
    ]
    categories = set()
    for clean, kind, layer in cases:
        faulty = root / f"{kind}.onnx"
        fault = inject(clean, faulty, kind, layer=layer, seed=0)
        changed = int(np.sum(photo_labels(faulty) != photo_labels(clean)))
        assert changed >= 1, f"{kind} at {fault.target_node} changed no label"
        categories.add(fault.category)
    assert categories == {Category.WB, Category.LH, Category.CG, Category.TSS, Category.ID, Category.PP}


def photo_labels(path: Path) -> np.ndarray:
    """Top-1 labels on the 42 packaged photos, with the torch preprocessing preset."""
    from safeconvert.validators.calibration import load_calibration
    from safeconvert.validators.validate import preprocessing_for, run_model

    runner = load_runner(path)
    return run_model(runner, load_calibration(None), preprocessing_for(runner, "torch")).argmax(1)
