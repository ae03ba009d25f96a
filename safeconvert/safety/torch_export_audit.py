"""Static audit of a torch.export archive (.pt2): would `torch.export.load` run code from this file?

torch.export.load (torch 2.13) documents "Never load data from an untrusted source", and reading
torch/export/pt2_archive/_package.py and torch/_export/serde/serialize.py shows why:

* every symbolic-shape expression (`expr_str`, e.g. "Symbol('s31', positive=True, integer=True)") goes
  through `sympy.sympify`, which calls Python's `eval`: an expression such as `__import__('os').system(..)`
  runs on load (measured: it writes a file, with no pickle involved);
* weights and constants marked `use_pickle` are read with `torch.load(weights_only=False)`, "opaque"
  constants with `pickle.loads`, and sample inputs fall back to `weights_only=False` when the safe
  unpickler refuses them;
* `guards_code` strings are compiled into a Python guard function by `ExportedProgram.module()`;
* `data/aotinductor/` holds compiled shared libraries that are loaded and executed;
* graph node targets are resolved by `getattr` from `torch`, so a target may name any function
  reachable from the torch module, and ATen itself has file operators (`aten::from_file`, `aten::save`).

The audit first refuses member names that zip readers resolve differently (zip_members), then reads
every member through torch's own zip reader, so it judges the bytes torch.export.load will load. It
accepts exactly the layout torch.export.save writes for plain ATen programs: raw tensor payloads, ATen/prims
and arithmetic operators, shape expressions made of symbols, integers and arithmetic, no guard code, no
compiled kernels. Anything else is refused
unless the user passes --trust-model-code. The sample inputs pickle is checked with torch's own safe
unpickler (`weights_only=True`), the loader torch tries first.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Iterator

from ..errors import BadInputError, one_line
from .zip_members import OddArchiveError, check_member_names

# Archive members (relative to the archive's top folder) that torch.export.save writes for a plain program.
ALLOWED_MEMBERS = [re.compile(p) for p in (
    r"archive_format", r"archive_version", r"byteorder", r"\.data/version", r"\.data/serialization_id",
    r"models/[\w.-]+\.json", r"data/weights/weight_\d+", r"data/weights/[\w.-]+_weights_config\.json",
    r"data/constants/tensor_\d+", r"data/constants/[\w.-]+_constants_config\.json",
    r"data/sample_inputs/[\w.-]+\.pt", r"extra/[^/]+",
)]
PAYLOAD_NAME = re.compile(r"(weight|tensor)_\d+")

# Operators a graph node may call: ATen/prims operators (minus the ones that touch files), Python arithmetic
# and comparison, math functions, and torch's symbolic-int helpers.
ATEN_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.([A-Za-z]\w*|_[A-Za-z]\w*)(\.[A-Za-z]\w*)?")
FILE_OPERATORS = {"from_file", "save", "load"}
OPERATOR_FUNCTIONS = {"add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne",
                      "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "getitem", "lshift", "rshift"}
OTHER_TARGETS = re.compile(r"math\.[a-z][a-z0-9_]*|torch\.(sym_(float|int|max|min|not|ite|sqrt|sum)|_sym_sqrt)")

# Shape expressions: Symbol('name', flag=True...) calls, numbers, arithmetic, and these sympy/torch functions.
SYMBOL_CALL = re.compile(r"Symbol\('[A-Za-z_]\w*'(\s*,\s*[a-z_]+\s*=\s*(True|False))*\s*\)")
EXPR_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?(?:e[-+]?\d+)?)|([A-Za-z_]\w*)|(//|==|!=|<=|>=|[-+*/%(),<>=&|~]))")
SAFE_NAMES = {"FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
              "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "TruncToFloat", "TruncToInt", "RoundToInt", "Max", "Min",
              "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan",
              "GreaterThan", "Unequality", "Equality", "And", "Or", "Not", "floor", "ceiling", "Integer",
              "Rational", "Float", "True", "False", "oo", "evaluate", "IsNonOverlappingAndDenseIndicator",
              "Add", "Mul"}  # sympy's own constructors for + and *, which torch writes for unbacked sizes
SYMBOL_NAME = re.compile(r"[a-z]{1,3}\d{1,6}")  # free symbols torch creates: s0, u3, ps1 ...
MAX_NUMBER_DIGITS = 30


class NeedsTrust(Exception):
    """Loading the archive would run code from it; the message says where."""


def audit_torch_export(path: Path) -> None:
    """Raise NeedsTrust if torch.export.load could run code from `path`, BadInputError if it is corrupt."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_member_names(archive, Path(path))
            names = archive.namelist()
        _audit_archive(names, TorchRecords(Path(path), _root_folder(names)))
    except (NeedsTrust, OddArchiveError):
        raise
    except BadInputError as exc:
        raise BadInputError(f"{Path(path).name}: not a loadable torch.export archive ({exc})") from None
    except Exception as exc:  # zipfile, json, unicode and torch reader errors of a corrupt archive
        raise BadInputError(f"{Path(path).name}: not a loadable torch.export archive ({one_line(exc)})") from None


class TorchRecords:
    """The archive's members as torch.export.load reads them: through torch's own zip reader (miniz).

    Python's zipfile and miniz can resolve one name to different bytes (see zip_members); reading with
    torch's reader makes the audit see exactly what the loader will load.
    """

    def __init__(self, path: Path, root: str):
        import torch

        self.root = root
        self.reader = torch._C.PyTorchFileReader(str(path))

    def names(self) -> set[str]:
        return set(self.reader.get_all_records())

    def read(self, member: str) -> bytes:
        return self.reader.get_record(member)

    def size(self, member: str) -> int:
        return int(self.reader.get_record_size(member))


def _audit_archive(names: list[str], records: TorchRecords) -> None:
    root = records.root
    members = {name[len(root):] for name in names if not name.endswith("/")}
    if records.names() != members:  # both readers must list the same members before either is trusted
        raise BadInputError("torch's zip reader and Python's list different members")
    for member in members:
        if not any(p.fullmatch(member) for p in ALLOWED_MEMBERS):
            raise NeedsTrust(f"it holds '{member}', which torch.export.load would unpickle or execute")
    if "archive_format" not in members or records.read("archive_format").strip() != b"pt2":
        raise NeedsTrust("it is not in the current .pt2 layout (older layouts are read with the unsafe unpickler)")
    for member in sorted(members):
        if member.endswith("_config.json"):
            _audit_payloads(json.loads(records.read(member)), records, member.rsplit("/", 1)[0] + "/")
        elif member.startswith("models/"):
            _audit_program(json.loads(records.read(member)))
        elif member.startswith("data/sample_inputs/"):
            _audit_sample_inputs(records.read(member))


def _root_folder(names: list[str]) -> str:
    """torch writes every member under one top folder; anything outside it is a different kind of archive."""
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or not all("/" in name for name in names):
        raise NeedsTrust("its members are not under a single top folder as torch.export.save writes them")
    return roots.pop() + "/"


def _audit_payloads(config: dict, records: TorchRecords, folder: str) -> None:
    """Weights and constants must be raw tensor bytes, never pickles or custom objects."""
    for fqn, meta in config.get("config", {}).items():
        if meta.get("use_pickle") or not PAYLOAD_NAME.fullmatch(str(meta.get("path_name", ""))):
            raise NeedsTrust(f"its tensor '{fqn}' is stored as a pickle or custom object")
        sizes = [entry.get("as_int") for entry in (meta.get("tensor_meta") or {}).get("sizes", [])]
        if any(not isinstance(size, int) or size < 0 for size in sizes):
            raise BadInputError(f"the tensor '{fqn}' has an invalid shape {sizes}")
        if records.size(folder + meta["path_name"]) == 0 and math.prod(sizes) > 0:
            raise BadInputError(f"the tensor '{fqn}' declares shape {sizes} but stores no data")


def _audit_program(program: dict) -> None:
    if program.get("guards_code"):
        raise NeedsTrust("it carries guard code (Python source) that ExportedProgram.module() compiles")
    for name in program.get("range_constraints") or {}:
        if not SYMBOL_NAME.fullmatch(str(name)):  # torch counts up to an unbacked symbol's number on load
            raise NeedsTrust(f"its shape constraint names symbol {str(name)[:40]!r}")
    for key, value in _walk(program):
        if key == "target" and isinstance(value, str):
            _check_target(value)
        elif key == "expr_str":
            _check_expression(str(value))


def _walk(node) -> Iterator[tuple[str, object]]:
    """Every (key, value) pair in a JSON document, iteratively (hostile nesting cannot exhaust the stack)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                yield key, value
                stack.append(value)
        elif isinstance(current, list):
            stack.extend(current)


def _check_target(target: str) -> None:
    aten = ATEN_TARGET.fullmatch(target)
    if aten:
        if aten.group(2) in FILE_OPERATORS or aten.group(2).startswith("__"):
            raise NeedsTrust(f"its graph calls {target}, which reads or writes files")
        return
    if target.startswith("_operator.") and target.split(".", 1)[1] in OPERATOR_FUNCTIONS:
        return
    if OTHER_TARGETS.fullmatch(target):
        return
    raise NeedsTrust(f"its graph calls {target!r}, outside the ATen/prims operators safeconvert loads untrusted")


def _check_expression(text: str) -> None:
    """Shape expressions are eval'd by sympy: allow only symbols, numbers, arithmetic and known functions."""
    rest = SYMBOL_CALL.sub("s0", text)
    if "**" in rest:  # a power tower of literals would make sympy compute for ever
        raise NeedsTrust(f"its shape expression {text[:80]!r} raises to a power (sympy would eval it)")
    position = 0
    while position < len(rest):
        match = EXPR_TOKEN.match(rest, position)
        if not match or match.end() == position:
            if rest[position:].strip() == "":
                return
            raise NeedsTrust(f"its shape expression {text[:80]!r} is not plain arithmetic (sympy would eval it)")
        number, name = match.group(1), match.group(2)
        if number and len(number) > MAX_NUMBER_DIGITS:
            raise NeedsTrust(f"its shape expression {text[:80]!r} holds an absurd number")
        if name and name not in SAFE_NAMES and not SYMBOL_NAME.fullmatch(name):
            raise NeedsTrust(f"its shape expression {text[:80]!r} names {name!r} (sympy would eval it)")
        position = match.end()


def _audit_sample_inputs(data: bytes) -> None:
    """torch reads sample inputs with weights_only=True first and falls back to unsafe unpickling on failure."""
    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise NeedsTrust(f"its sample inputs need the unsafe unpickler ({one_line(exc, 120)})") from None
