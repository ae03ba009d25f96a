"""The models a case starts from, built once per model into the work directory, and the photo split.

Sources come from safeconvert itself (the clean Keras -> ONNX and Keras -> TFLite conversions, verified) so an
injected fault is the only thing wrong with a faulty target. The photos are split into a repair set and a
hold-out set that repair never sees.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

HOLDOUT_EVERY = 4  # every 4th photo (sorted by name) is held out: 10 of the 42 packaged photos


@dataclass
class Prepared:
    """What the cases of one model share."""

    model: str
    preset: str | None  # preprocessing preset for the source (None: by framework)
    repair_photos: Path
    holdout_photos: Path
    sources: dict[str, str] = field(default_factory=dict)  # source key -> path
    problems: dict[str, str] = field(default_factory=dict)  # source key -> why it could not be made

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Prepared":
        return cls(data["model"], data["preset"], Path(data["repair_photos"]), Path(data["holdout_photos"]),
                   dict(data["sources"]), dict(data["problems"]))


def split_photos(work: Path) -> tuple[Path, Path]:
    """Two directories of links to the packaged photos: the repair set and the hold-out set."""
    from ..validators.calibration import IMAGE_SUFFIXES, default_calibration_dir

    photos = sorted(p for p in default_calibration_dir().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    repair, holdout = work / "photos-repair", work / "photos-holdout"
    for index, photo in enumerate(photos):
        folder = holdout if index % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else repair
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / photo.name
        if not link.exists():
            link.symlink_to(photo)
    return repair, holdout


def prepare(model: str, work: Path) -> Prepared:
    """Build the model's Keras source (and .pt2 for MobileNetV2), then its ONNX, TFLite and int8 TFLite."""
    repair, holdout = split_photos(work)
    folder = work / model
    folder.mkdir(parents=True, exist_ok=True)
    prepared = Prepared(model, _preset(model), repair, holdout)
    prepared.sources.update({k: str(v) for k, v in _framework_sources(model, folder).items()})
    for key, (origin, suffix, options) in _derived_sources(model).items():
        _derive(prepared, key, origin, folder / f"{model}-{key}{suffix}", options)
    return prepared


def _preset(model: str) -> str | None:
    return {"mobilenet_v2": "torch", "resnet101": "tf", "inception_v3": "tf"}.get(model)


def _framework_sources(model: str, folder: Path) -> dict[str, Path]:
    if model == "mobilenet_v2":
        from ..models.files import mobilenet_v2_files

        return mobilenet_v2_files(folder)
    path = folder / f"{model}.keras"
    if not path.exists():
        _keras_model(model).save(path)
    return {"keras": path}


def _keras_model(model: str):
    if model == "small":
        from ..models.small import keras_small_cnn

        return keras_small_cnn()
    from ..models.seeded import keras_seeded_model

    return keras_seeded_model(model)


def _derived_sources(model: str) -> dict[str, tuple[str, str, dict]]:
    """key -> (the source it is converted from, suffix, conversion options). "onnx" is tf2onnx's NHWC graph of
    the Keras model; MobileNetV2 also gets "onnx-torch", the NCHW graph torch.onnx's TorchScript-based
    exporter writes, the kind of ONNX most users hold."""
    derived = {"onnx": ("keras", ".onnx", {}), "tflite": ("keras", ".tflite", {}),
               "tflite-int8": ("keras", ".tflite", {"tflite_optimizations": ["DEFAULT"], "tflite_int8": True})}
    if model == "mobilenet_v2":
        derived["onnx-torch"] = ("pt2", ".onnx", {"torch_dynamo": False})
    return derived


def _derive(prepared: Prepared, key: str, origin: str, out: Path, options: dict) -> None:
    """Convert the `origin` source with safeconvert; the int8 model is kept unrepaired (it is a case's source)."""
    from ..errors import SafeConvertError, one_line
    from ..pipeline import ConvertRequest, run_convert
    from ..wrappers.base import ConversionOptions

    if not out.exists():
        quantised = bool(options.get("tflite_optimizations"))
        request = ConvertRequest(Path(prepared.sources[origin]), out, calib=prepared.repair_photos,
                                 preprocess=prepared.preset, options=ConversionOptions(**options),
                                 allow_unverified=quantised, repair=not quantised)
        try:
            run_convert(request)
        except SafeConvertError as exc:
            prepared.problems[key] = one_line(exc)
            return
    if out.exists():
        prepared.sources[key] = str(out)
    else:
        prepared.problems[key] = "the clean conversion was not verified"


def main(argv: list[str]) -> int:
    """`python -m safeconvert.evaluation.prepare MODEL WORK OUT.json`: prepare in a process of its own.

    The runner measures each case's peak memory from its child's rusage, and a child starts with the peak of
    the process it was forked from: preparing (TensorFlow, conversions) in the runner itself would put a floor
    of several GB under every case's figure."""
    model, work, out = argv
    Path(out).write_text(json.dumps(prepare(model, Path(work)).to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
