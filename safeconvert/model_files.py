"""Every file whose bytes define a model, and one digest over them.

A model is not always one file: an ONNX model may keep its weights in external data files beside it, and a
SavedModel is a directory whose `variables/` may be a symbolic link. The caches (user_cache.py), the
up-to-date rule (uptodate.py) and output placement (atomic.py) must all see the same set of files, or a
change to weights alone would go unnoticed. So that set is decided here, once:

- an ONNX file: itself, plus each external data file its tensors name (read with the weights left unloaded);
  a location that is absolute or leaves the model's folder is refused, as is a missing data file;
- a directory (SavedModel): every file under it, symbolic links followed; a link that leaves the directory,
  or that loops back into a folder above it, is refused;
- any other file: itself.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInputError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its name relative to the model (what the digest records) and where its bytes are."""

    name: str
    path: Path


def model_files(path: Path) -> list[ModelFile]:
    """All files that define the model at `path`, in a stable order (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return _directory_files(path)
    files = [ModelFile("", path)]
    if is_onnx_file(path):
        files += [ModelFile(location, path.parent / location) for location in onnx_external_locations(path)]
    return files


def model_digest(path: Path) -> str:
    """sha256 over every file of the model with its relative name and size (a renamed file is a change).

    Remembered per identity of each file (path, size, times, inode), so a run that asks twice reads a large
    model once."""
    files = model_files(Path(path))
    identity = model_identity(files)
    if identity not in _DIGESTS:
        hasher = hashlib.sha256()
        for file in files:
            hasher.update(f"{file.name}\0{file.path.stat().st_size}\0".encode())
            _hash_file_into(hasher, file.path)
        _DIGESTS[identity] = hasher.hexdigest()
    return _DIGESTS[identity]


def model_identity(files: list[ModelFile]) -> tuple:
    """What changes whenever any of a model's files may have changed (see _identity): the key of anything
    remembered about the model within a run."""
    return tuple((f.name, *_identity(f.path)) for f in files)


def file_digest(path: Path) -> str:
    """sha256 of one file's bytes, remembered per file identity (path, size, times, inode) like model_digest."""
    identity = ("file", *_identity(Path(path)))
    if identity not in _DIGESTS:
        hasher = hashlib.sha256()
        _hash_file_into(hasher, Path(path))
        _DIGESTS[identity] = hasher.hexdigest()
    return _DIGESTS[identity]


def newest_mtime_ns(path: Path) -> int:
    """The latest modification time among a model's files (its external data included)."""
    return max(_size_and_mtime(f.path)[1] for f in model_files(path))


_DIGESTS: dict[tuple, str] = {}
_ONNX_LOCATIONS: dict[tuple, list[str]] = {}


def is_onnx_file(path: Path) -> bool:
    """An ONNX file by name, or by its first bytes (field 1, ir_version, as a varint)."""
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x08 and head[1] < 0x20 and path.suffix.lower() not in _NOT_ONNX


_NOT_ONNX = {".tflite", ".keras", ".h5", ".pt", ".pt2", ".pth", ".npy", ".jpg", ".jpeg", ".png", ".json",
             ".data", ".bin"}


def onnx_external_locations(path: Path) -> list[str]:
    """The external data files an ONNX model names, in first-use order, each checked to stay in its folder.

    Initializers, Constant and other attribute tensors (subgraphs included) are read without their weights."""
    key = (str(Path(path).resolve()), *_size_and_mtime(path))
    if key not in _ONNX_LOCATIONS:
        _ONNX_LOCATIONS[key] = [_checked_location(path, loc) for loc in _read_locations(path)]
    return list(_ONNX_LOCATIONS[key])


def external_tensors(model) -> list:
    """Every TensorProto of a ModelProto (graph, functions, subgraphs) that keeps its data in an external file."""
    import onnx

    tensors = []
    graphs = [model.graph] + [g for f in model.functions for g in _node_graphs(f.node)]
    for graph in _all_graphs(graphs):
        tensors += list(graph.initializer) + [s.values for s in graph.sparse_initializer]
        for node in list(graph.node) + [n for f in model.functions for n in f.node]:
            for attr in node.attribute:
                tensors += [attr.t] if attr.HasField("t") else []
                tensors += list(attr.tensors) + [s.values for s in attr.sparse_tensors]
                tensors += [attr.sparse_tensor.values] if attr.HasField("sparse_tensor") else []
    return [t for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]


def _all_graphs(graphs: list) -> list:
    """The graphs and every subgraph (If/Loop/Scan bodies) inside them."""
    found, pending = [], list(graphs)
    while pending:
        graph = pending.pop()
        found.append(graph)
        pending += _node_graphs(graph.node)
    return found


def _node_graphs(nodes) -> list:
    return [g for node in nodes for attr in node.attribute for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)]


def _read_locations(path: Path) -> list[str]:
    import onnx

    if not _mentions_location(path):  # no tensor can name a data file: skip parsing a large model
        return []
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a readable ONNX model: its own bytes are all there is; loading it reports why
        return []
    locations: list[str] = []
    for tensor in external_tensors(model):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if location not in locations:
            locations.append(location)
    return locations


def _mentions_location(path: Path) -> bool:
    """Whether the file holds the key every external data entry carries (a fast scan, no parsing)."""
    import mmap

    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return False
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return mapped.find(b"location") >= 0


def _checked_location(model: Path, location: str) -> str:
    """Refuse a data file outside the model's folder (an absolute path, `..`, or a link leading out)."""
    folder = Path(model).parent.resolve()  # where the ONNX loader looks for it
    if not location or os.path.isabs(location):
        raise BadInputError(f"{Path(model).name}: external data location {location!r} is not a path beside the model")
    target = (Path(model).parent / location)
    if not target.resolve().is_relative_to(folder):
        raise BadInputError(f"{Path(model).name}: external data {location!r} lies outside the model's folder; refused")
    if not target.is_file():
        raise BadInputError(f"{Path(model).name}: its external data file {location!r} is missing")
    return location


def _directory_files(root: Path) -> list[ModelFile]:
    """Every file under `root`, links followed while they stay inside it; loops and escapes are refused."""
    real_root = root.resolve()
    files: list[ModelFile] = []

    def walk(folder: Path, relative: str, ancestors: tuple[Path, ...]) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            name = f"{relative}{entry.name}"
            target = Path(entry.path)
            if entry.is_symlink():
                try:
                    target = target.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise BadInputError(f"{root.name}: the link {name} is broken or loops; refused") from None
                if not target.is_relative_to(real_root):
                    raise BadInputError(f"{root.name}: the link {name} leads outside the model's folder; refused")
            if target.is_dir():
                real = target.resolve()
                if real in ancestors:
                    raise BadInputError(f"{root.name}: the link {name} loops back into a folder above it; refused")
                walk(target, f"{name}/", ancestors + (real,))
            elif target.is_file():
                files.append(ModelFile(name, target))

    walk(root, "", (real_root,))
    return files


def _identity(path: Path) -> tuple:
    """What changes whenever a file's bytes may have: its real path, size, modification and change times
    (the change time cannot be set back, unlike the modification time), device and inode (a file renamed
    over it)."""
    found = Path(path).stat()
    return (str(Path(path).resolve()), found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_dev, found.st_ino)


def _size_and_mtime(path: Path) -> tuple[int, int]:
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns


def _hash_file_into(hasher, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
