"""Model formats: detect a model path's format and describe a model's input.

Detection looks at the content (magic bytes, archive members), not only the extension,
so a renamed or corrupted file gets a clear error instead of a framework traceback.
"""

from __future__ import annotations

import enum
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import BadInputError, one_line


class Format(str, enum.Enum):
    """A model format safeconvert can read or write."""

    KERAS = "keras"  # .keras (zip) or legacy .h5
    SAVEDMODEL = "savedmodel"  # TF SavedModel directory
    ONNX = "onnx"
    TFLITE = "tflite"
    TORCH_EXPORT = "pt2"  # torch.export.save archive
    TORCHSCRIPT = "torchscript"  # torch.jit.save archive (.pt)

    @property
    def framework(self) -> str:
        """The framework family, used to choose default preprocessing."""
        return {
            Format.KERAS: "tensorflow",
            Format.SAVEDMODEL: "tensorflow",
            Format.TFLITE: "tensorflow",
            Format.ONNX: "onnx",
            Format.TORCH_EXPORT: "torch",
            Format.TORCHSCRIPT: "torch",
        }[self]

    @property
    def suffix(self) -> str:
        """The file suffix this format is written with ('' for directories)."""
        return {
            Format.KERAS: ".keras",
            Format.SAVEDMODEL: "",
            Format.TFLITE: ".tflite",
            Format.ONNX: ".onnx",
            Format.TORCH_EXPORT: ".pt2",
            Format.TORCHSCRIPT: ".pt",
        }[self]


# Names accepted by --to, mapped to formats.
FORMAT_ALIASES: dict[str, Format] = {
    "keras": Format.KERAS,
    "savedmodel": Format.SAVEDMODEL,
    "saved_model": Format.SAVEDMODEL,
    "tf": Format.SAVEDMODEL,
    "onnx": Format.ONNX,
    "tflite": Format.TFLITE,
    "pt2": Format.TORCH_EXPORT,
    "torch": Format.TORCHSCRIPT,
    "pytorch": Format.TORCHSCRIPT,
    "pt": Format.TORCHSCRIPT,
    "torchscript": Format.TORCHSCRIPT,
}


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as its (single, image) input, read from the model itself.

    shape uses None for a dynamic dimension; layout is "NHWC" or "NCHW".
    """

    name: str
    shape: tuple[int | None, ...]
    layout: str
    dtype: str

    @property
    def height(self) -> int | None:
        return self.shape[1] if self.layout == "NHWC" else self.shape[2]

    @property
    def width(self) -> int | None:
        return self.shape[2] if self.layout == "NHWC" else self.shape[3]

    @property
    def channels(self) -> int | None:
        return self.shape[3] if self.layout == "NHWC" else self.shape[1]

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model insists on, or None when any batch works."""
        return self.shape[0]

    def to_dict(self) -> dict:
        return asdict(self)


def guess_layout(shape: tuple[int | None, ...]) -> str:
    """Tell NHWC from NCHW for a 4-D image input by where the small channel axis sits."""
    if len(shape) != 4:
        raise BadInputError(f"expected a 4-D image input, the model's input has shape {list(shape)}")
    channel_like = (1, 3, 4)
    if shape[3] in channel_like and shape[1] not in channel_like:
        return "NHWC"
    if shape[1] in channel_like:
        return "NCHW"
    if shape[3] in channel_like:
        return "NHWC"
    raise BadInputError(f"cannot tell the channel axis of input shape {list(shape)}")


def parse_format(name: str) -> Format:
    """Parse a --to value into a Format, with a clear error for unknown names."""
    fmt = FORMAT_ALIASES.get(name.strip().lower())
    if fmt is None:
        known = ", ".join(sorted(FORMAT_ALIASES))
        raise BadInputError(f"unknown format '{name}' (known: {known})")
    return fmt


def format_for_output(path: Path, requested: str | None) -> Format:
    """Decide the target format from --to, or else from the output path's suffix."""
    if requested:
        return parse_format(requested)
    by_suffix = {
        ".onnx": Format.ONNX,
        ".tflite": Format.TFLITE,
        ".keras": Format.KERAS,
        ".pt2": Format.TORCH_EXPORT,
        ".pt": Format.TORCHSCRIPT,
        ".pth": Format.TORCHSCRIPT,
    }
    fmt = by_suffix.get(path.suffix.lower())
    if fmt is None:
        if path.suffix == "":
            return Format.SAVEDMODEL
        raise BadInputError(f"cannot tell the target format from '{path.name}': pass --to")
    return fmt


def detect_format(path: Path) -> Format:
    """Detect a model's format from its content; raise BadInputError when it is not a model, or when its files
    reach outside its folder (external data or links: model_files.py)."""
    from .model_files import model_files

    try:
        fmt = _detect(path)
        if fmt in (Format.ONNX, Format.SAVEDMODEL):
            model_files(path)
        return fmt
    except OSError as exc:  # unreadable, name too long, vanished while reading...
        raise BadInputError(f"cannot read {path}: {exc.strerror or one_line(exc)}") from None


def _detect(path: Path) -> Format:
    if not path.exists():
        raise BadInputError(f"no such file or directory: {path}")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return Format.SAVEDMODEL
        if (path / "saved_model.pbtxt").is_file():  # TensorFlow would read it; safeconvert's audit reads binary only
            from .safety.saved_model_audit import text_format_refusal

            raise BadInputError(text_format_refusal(path))
        raise BadInputError(f"{path} is a directory but not a TF SavedModel (no saved_model.pb)")
    if not path.is_file():  # a FIFO or device would block or never end when read
        raise BadInputError(f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path} is empty")
    with path.open("rb") as handle:
        head = handle.read(16)
    if head[4:8] == b"TFL3":
        return Format.TFLITE
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return Format.KERAS
    if head[:4] == b"PK\x03\x04":
        return _detect_zip_format(path)
    if path.suffix.lower() == ".onnx" or _looks_like_onnx(head):
        return Format.ONNX
    raise BadInputError(f"{path.name}: not a recognised model file (Keras, SavedModel, ONNX, TFLite, PyTorch)")


def _detect_zip_format(path: Path) -> Format:
    """Keras v3, torch.export and TorchScript files are all zip archives: tell them by members."""
    from .safety.zip_members import check_member_names

    try:
        with zipfile.ZipFile(path) as archive:
            check_member_names(archive, path)  # names readers resolve differently, before any framework reads them
            names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise BadInputError(f"{path.name}: corrupt archive ({one_line(exc)})") from None
    inner = {name.split("/", 1)[-1] for name in names}  # members without the archive's top folder
    if "config.json" in names and "model.weights.h5" in names:
        return Format.KERAS
    if "archive_format" in inner or "models/model.json" in inner:
        return Format.TORCH_EXPORT
    if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
        return Format.TORCHSCRIPT
    if "data.pkl" in inner:
        raise BadInputError(
            f"{path.name}: a pickled PyTorch checkpoint (state_dict or whole module), not a model safeconvert can "
            "run; save it with torch.export.save (.pt2) or torch.jit.save (.pt)"
        )
    raise BadInputError(f"{path.name}: a zip archive that is not a Keras, torch.export or TorchScript model")


def _looks_like_onnx(head: bytes) -> bool:
    """ONNX ModelProto starts with field 1 (ir_version, varint: tag 0x08)."""
    return len(head) > 1 and head[0] == 0x08 and head[1] < 0x20
