"""The corpus of hostile and broken inputs: case specs (fixed at collection time) and how to build each one.

A case is a family (which kind of input is damaged), a mutation kind, a seed and a mode (which command sees
it). `prepare` materialises the inputs in the case's own directory from the intact base files and returns
the argv to run. Everything is seeded: a case id reproduces its files exactly.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .mutations import BYTE_KINDS, ZIP_KINDS, garbage, mutate_bytes, mutate_zip


@dataclass(frozen=True)
class Case:
    family: str
    kind: str
    seed: int = 0
    mode: str = "check"  # check: mutant as target; check_source: mutant as source; convert: mutant converted;
    # repair: mutant as the conversion to repair

    @property
    def id(self) -> str:
        return f"{self.family}-{self.kind}-{self.seed}-{self.mode}"


@dataclass
class Prepared:
    argv: list[str]
    out: Path | None  # OUT of a convert run
    report: Path | None
    expect: set[int] | None = None  # exit codes this particular case must end with (None: any in the contract)
    fragment: str | None = None  # words its error message must contain


# family -> (intact file of the same model to compare with, suffix to convert to or None for check-only)
MODEL_FAMILIES = {
    "keras": ("tflite", ".tflite"),
    "onnx": ("tflite", ".pt"),
    "tflite": ("onnx", ".onnx"),
    "pt2": ("torch_onnx", None),
}
ZIPPED = ("keras", "pt2", "pt")
REPAIRED_FAMILIES = ("onnx", "tflite")  # the formats `repair` edits
IMAGE_BASES = ("jpg", "png")
SPECIAL_IMAGES = ("gray", "gray_alpha", "rgba", "palette_alpha", "gray16", "bilevel", "cmyk", "one_pixel",
                  "extreme_aspect", "webp", "bmp", "png_named_jpg")
BROKEN_IMAGES = ("bomb_header", "empty", "text", "html_named_png")
NPY_CASES = ("uint8_nhwc", "uint8_nchw", "uint8_gray", "uint8_rgba", "uint8_seven_channels", "float_nan", "float_inf",
             "float_big_endian", "float16", "int64_wide", "bool", "complex", "object_pickle", "ndim3", "zero_images",
             "zero_height", "huge_header", "truncated", "text", "empty")
MISC_CASES = ("source_dir_without_pb", "source_fifo", "source_devnull", "source_symlink_loop", "calib_fifo",
              "calib_empty_dir", "output_parent_is_file", "output_is_nonempty_dir", "report_is_dir",
              "name_too_long", "keras_named_onnx", "onnx_named_tflite", "pickle_checkpoint_zip", "zip_of_text",
              "savedmodel_garbage_pb", "h5_magic_garbage", "absurd_onnx", "absurd_tflite", "absurd_input_shape",
              "pt_untrusted", "onnx_external_data_escape")


def build_cases() -> list[Case]:
    cases: list[Case] = []
    for family, (_, convert_suffix) in MODEL_FAMILIES.items():
        modes = ("check", "check_source", "convert" if convert_suffix else "check")
        kinds = BYTE_KINDS + (ZIP_KINDS if family in ZIPPED else ())
        cases += [Case(family, kind, seed, modes[seed]) for kind in kinds for seed in range(3)]
    cases += [Case(family, kind, 3, "repair") for family in REPAIRED_FAMILIES for kind in BYTE_KINDS]
    cases += [Case("pt", kind, 0, "check_source") for kind in BYTE_KINDS[:6] + ZIP_KINDS]
    cases += [Case("image", f"{base}_{kind}", seed) for base in IMAGE_BASES for kind in BYTE_KINDS for seed in range(2)]
    cases += [Case("image", kind) for kind in SPECIAL_IMAGES + BROKEN_IMAGES]
    cases += [Case("npy", kind) for kind in NPY_CASES]
    cases += [Case("misc", kind) for kind in MISC_CASES]
    return cases


def prepare(case: Case, work: Path, models: dict[str, Path], absurd: dict[str, Path], calib: Path) -> Prepared:
    work.mkdir(parents=True, exist_ok=True)
    builder = {"image": _image_case, "npy": _npy_case, "misc": _misc_case}.get(case.family, _model_case)
    return builder(case, work, models, absurd, calib)


def _model_case(case: Case, work: Path, models: dict[str, Path], absurd: dict[str, Path], calib: Path) -> Prepared:
    base = models[case.family]
    data = base.read_bytes()
    mutant = work / f"mutant{base.suffix}"
    mutant.write_bytes(mutate_zip(data, case.kind, case.seed) if case.kind in ZIP_KINDS else mutate_bytes(data, case.kind, case.seed))
    report = work / "out" / "report.json"
    report.parent.mkdir()
    if case.family == "pt":  # TorchScript runs code when loaded: refused without --trust-model-code, damaged or not
        return Prepared(["check", str(mutant), str(models["torch_onnx"]), "--calib", str(calib)], None, None, {2})
    reference, suffix = MODEL_FAMILIES[case.family]
    common = ["--calib", str(calib), "--report", str(report)]
    if case.mode == "convert":
        out = work / "out" / f"converted{suffix}"
        return Prepared(["convert", str(mutant), "-o", str(out), *common], out, report)
    if case.mode == "repair":
        out = work / "out" / f"repaired{base.suffix}"
        return Prepared(["repair", str(models[reference]), str(mutant), "-o", str(out), *common], out, report)
    pair = [str(models[reference]), str(mutant)] if case.mode == "check" else [str(mutant), str(models[reference])]
    return Prepared(["check", *pair, *common], None, report)


def _image_case(case: Case, work: Path, models: dict[str, Path], absurd: dict[str, Path], calib: Path) -> Prepared:
    """Two intact photos plus one damaged or unusual image, validated with the two cheapest runtimes."""
    directory = work / "calib"
    directory.mkdir()
    photos = sorted(calib.iterdir())
    for photo in photos[:2]:
        (directory / photo.name).write_bytes(photo.read_bytes())
    expect = None
    if case.kind in SPECIAL_IMAGES:
        name, content = _special_image(case.kind, photos[2])
        expect = {0}  # handled, not rejected
    elif case.kind in BROKEN_IMAGES:
        name, content = _broken_image(case.kind, photos[2])
        expect = {2}
    else:
        base, kind = case.kind.split("_", 1)
        name, content = f"zz_mutant.{base}", mutate_bytes(_encoded(photos[2], base), kind, case.seed)
    (directory / name).write_bytes(content)
    argv = ["check", str(models["tflite"]), str(models["onnx"]), "--calib", str(directory)]
    return Prepared(argv, None, None, expect)


def _encoded(photo: Path, fmt: str, mode: str = "RGB", size: tuple[int, int] | None = None) -> bytes:
    from PIL import Image

    with Image.open(photo) as image:
        image = image.convert("RGB")
        if size is not None:
            image = image.resize(size)
        if mode != "RGB":
            image = image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}[fmt])
    return buffer.getvalue()


def _special_image(kind: str, photo: Path) -> tuple[str, bytes]:
    """Unusual but valid images: each must be converted to RGB and validated, not rejected."""
    from PIL import Image

    if kind == "gray16":
        with Image.open(photo) as image:
            pixels = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")  # mode I;16
        return "zz_gray16.png", buffer.getvalue()
    if kind == "palette_alpha":
        with Image.open(photo) as image:
            palette = image.convert("RGB").resize((64, 48)).convert("P", palette=Image.Palette.ADAPTIVE)
        buffer = io.BytesIO()
        palette.save(buffer, format="PNG", transparency=0)
        return "zz_palette.png", buffer.getvalue()
    simple = {
        "gray": ("png", "L", None), "gray_alpha": ("png", "LA", None), "rgba": ("png", "RGBA", None),
        "bilevel": ("png", "1", None), "cmyk": ("jpg", "CMYK", None), "one_pixel": ("png", "RGB", (1, 1)),
        "extreme_aspect": ("png", "RGB", (20000, 1)), "webp": ("webp", "RGB", None), "bmp": ("bmp", "RGB", None),
        "png_named_jpg": ("png", "RGB", None),
    }
    fmt, mode, size = simple[kind]
    suffix = "jpg" if kind == "png_named_jpg" else fmt
    return f"zz_{kind}.{suffix}", _encoded(photo, fmt, mode, size)


def _broken_image(kind: str, photo: Path) -> tuple[str, bytes]:
    if kind == "bomb_header":  # a PNG header declaring 60000 x 60000 pixels over a few bytes of data
        png = _encoded(photo, "png", size=(8, 8))
        ihdr = png.index(b"IHDR") + 4
        import struct
        import zlib

        header = struct.pack(">II", 60000, 60000) + png[ihdr + 8 : ihdr + 13]
        crc = struct.pack(">I", zlib.crc32(b"IHDR" + header) & 0xFFFFFFFF)
        return "zz_bomb.png", png[:ihdr] + header + crc + png[ihdr + 17 :]
    if kind == "empty":
        return "zz_empty.jpg", b""
    if kind == "text":
        return "zz_text.jpg", b"this is not an image\n" * 20
    return "zz_page.png", b"<html><body>404 Not Found</body></html>"


def _npy_case(case: Case, work: Path, models: dict[str, Path], absurd: dict[str, Path], calib: Path) -> Prepared:
    path = work / "calib.npy"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    floats = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
    arrays = {
        "uint8_nhwc": images, "uint8_nchw": images.transpose(0, 3, 1, 2), "uint8_gray": images[..., :1],
        "uint8_rgba": np.concatenate([images, images[..., :1]], axis=3), "uint8_seven_channels": np.tile(images, (1, 1, 1, 3))[..., :7],
        "float_nan": np.where(floats > 2.5, np.nan, floats), "float_inf": np.where(floats > 2.5, np.inf, floats),
        "float_big_endian": floats.astype(">f4"), "float16": floats.astype(np.float16),
        "int64_wide": images.astype(np.int64) * 1000 - 500, "bool": images > 128, "complex": floats.astype(np.complex64),
        "object_pickle": np.array([None, 1, "x"], dtype=object), "ndim3": images[0], "zero_images": images[:0],
        "zero_height": images[:, :0],
    }
    expect = None
    if case.kind in arrays:
        np.save(path, arrays[case.kind], allow_pickle=True)
        expect = {0} if case.kind in ("uint8_nhwc", "uint8_nchw", "uint8_gray", "uint8_rgba", "float_big_endian",
                                      "float16", "int64_wide") else {2}
    elif case.kind == "huge_header":  # a valid header declaring 1e12 elements over a few bytes
        np.save(path, images)
        data = path.read_bytes()
        path.write_bytes(data.replace(b"(3, 40, 48, 3)", b"(1000000, 40000, 48, 3)"))
        expect = {2}
    elif case.kind == "truncated":
        np.save(path, images)
        path.write_bytes(path.read_bytes()[:200])
        expect = {2}
    else:
        path.write_bytes({"text": b"not numpy at all\n", "empty": b""}[case.kind])
        expect = {2}
    return Prepared(["check", str(models["tflite"]), str(models["onnx"]), "--calib", str(path)], None, None, expect)


def _misc_case(case: Case, work: Path, models: dict[str, Path], absurd: dict[str, Path], calib: Path) -> Prepared:
    """Wrong kinds of paths, wrong extensions, special files and absurd models; all must end in exit code 2."""
    out_dir = work / "out"
    out_dir.mkdir()
    out = out_dir / "converted.onnx"
    source = work / "source"
    extra: list[str] = []
    kind = case.kind
    if kind == "source_dir_without_pb":
        source.mkdir()
        (source / "variables").mkdir()
    elif kind == "source_fifo":
        source = work / "model.onnx"
        os.mkfifo(source)
    elif kind == "source_devnull":
        source = Path(os.devnull)
    elif kind == "source_symlink_loop":
        source = work / "loop.onnx"
        source.symlink_to(source)
    elif kind == "calib_fifo":
        source = models["tflite"]
        fifo = work / "calib.npy"
        os.mkfifo(fifo)
        extra = ["--calib", str(fifo)]
    elif kind == "calib_empty_dir":
        source = models["tflite"]
        (work / "empty").mkdir()
        extra = ["--calib", str(work / "empty")]
    elif kind == "output_parent_is_file":
        source = models["tflite"]
        (out_dir / "file").write_text("a file, not a directory")
        out = out_dir / "file" / "converted.onnx"
    elif kind == "output_is_nonempty_dir":
        source = models["keras"]
        out = out_dir / "saved"
        out.mkdir()
        (out / "precious.txt").write_text("keep me")
        extra = ["--force"]
    elif kind == "report_is_dir":
        source = models["tflite"]
        (work / "report.json").mkdir()
        extra = ["--report", str(work / "report.json"), "--calib", str(work / "missing")]
    elif kind == "name_too_long":
        source = work / ("m" * 300 + ".onnx")
    elif kind == "keras_named_onnx":  # detected as Keras by content, but Keras reads only .keras/.h5 names
        source = work / "model.onnx"
        source.write_bytes(models["keras"].read_bytes())
        out = out_dir / "converted.tflite"
    elif kind == "onnx_named_tflite":
        source = work / "model.tflite"
        source.write_bytes(models["onnx"].read_bytes())
        out = out_dir / "converted.pt"
        return Prepared(["convert", str(source), "-o", str(out), "--calib", str(calib)], out, None, {0})
    elif kind == "pickle_checkpoint_zip":
        source = work / "weights.pt"
        with zipfile.ZipFile(source, "w") as archive:
            archive.writestr("weights/data.pkl", b"\x80\x02}q\x00.")
    elif kind == "zip_of_text":
        source = work / "model.keras"
        with zipfile.ZipFile(source, "w") as archive:
            archive.writestr("readme.txt", "hello")
    elif kind == "savedmodel_garbage_pb":
        source.mkdir()
        (source / "saved_model.pb").write_bytes(garbage(1))
    elif kind == "h5_magic_garbage":
        source = work / "model.h5"
        source.write_bytes(b"\x89HDF\r\n\x1a\n" + garbage(2))
    elif kind == "absurd_onnx":
        source = absurd["onnx"]
        out = out_dir / "converted.pt"
    elif kind == "absurd_tflite":
        source = absurd["tflite"]
    elif kind == "absurd_input_shape":
        source = models["onnx"]
        out = out_dir / "converted.pt"
        extra = ["--input-shape", "1,3,100000,100000"]
    elif kind == "pt_untrusted":
        source = models["pt"]
    elif kind == "onnx_external_data_escape":
        source = _external_data_model(work)
        out = out_dir / "converted.pt"
    return Prepared(["convert", str(source), "-o", str(out), *extra], out, None, {2}, MISC_FRAGMENTS.get(kind))


# What the one-line error must say, where the reason is specific enough to pin down.
MISC_FRAGMENTS = {
    "source_dir_without_pb": "not a TF SavedModel", "source_fifo": "not a regular file",
    "source_devnull": "not a regular file", "source_symlink_loop": "no such file", "calib_fifo": "neither a directory",
    "calib_empty_dir": "no images", "output_parent_is_file": "not a directory", "output_is_nonempty_dir": "refusing",
    "report_is_dir": "is a directory", "name_too_long": "cannot read", "keras_named_onnx": "rename it",
    "pickle_checkpoint_zip": "pickled PyTorch checkpoint", "zip_of_text": "not a Keras, torch.export",
    "savedmodel_garbage_pb": "not a loadable SavedModel", "h5_magic_garbage": "not a loadable Keras model",
    "absurd_onnx": "values per image", "absurd_tflite": "values per image", "absurd_input_shape": "values per image",
    "pt_untrusted": "--trust-model-code", "onnx_external_data_escape": "outside the model's folder",
}


def _external_data_model(work: Path) -> Path:
    """An ONNX model whose weights live in '../../etc/hostname': external data outside the model's folder."""
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../../../../../etc/hostname"), ("offset", "0"), ("length", "4")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Mul", ["flat", "w"], ["logits"])],
        "escape", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], [weight])
    path = work / "escape.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())
    return path
