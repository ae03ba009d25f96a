"""The files a hop's parent and child exchange (docs/converter-protocol.md): request.json and response.json.

Plain JSON rather than pickles, because the child may be another interpreter, with other library versions
and without safeconvert: a standalone script must be able to read the request with the standard library.
The only array, the representative data for post-training quantisation, goes in an .npy file beside it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..wrappers.base import ConversionOptions

PROTOCOL_VERSION = 1
LOG_TAIL_LINES = 40
REPRESENTATIVE_FILE = "representative.npy"
ERROR_CONVERTER = "converter"  # the converter failed: another converter for the hop may do better
ERROR_BAD_INPUT = "bad_input"  # the source or an option is unusable whatever the converter


@dataclass
class HopRequest:
    """What one child is asked to convert (request.json)."""

    converter: str
    source: str
    source_format: str
    target_format: str
    output: str
    options: dict[str, Any] = field(default_factory=dict)
    representative_data: str | None = None
    converter_class: str | None = None  # "module:Class", for the in-package child; standalone scripts ignore it
    converter_arguments: dict[str, Any] = field(default_factory=dict)  # JSON keyword arguments for that class
    protocol: int = PROTOCOL_VERSION

    def write(self, path: Path) -> None:
        _write_json(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> "HopRequest":
        data = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class HopResponse:
    """What the child answers (response.json); a missing or unreadable one means the child crashed."""

    ok: bool
    error: str | None = None
    error_kind: str | None = None
    log_tail: list[str] = field(default_factory=list)
    tool_version: str | None = None
    protocol: int = PROTOCOL_VERSION

    def write(self, path: Path) -> None:
        _write_json(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> "HopResponse | None":
        """The response, or None when the file is missing or not a response (the child died first)."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(ok=bool(data["ok"]), error=data.get("error"), error_kind=data.get("error_kind"),
                       log_tail=[str(line) for line in data.get("log_tail") or [] if str(line).strip()][-LOG_TAIL_LINES:],
                       tool_version=data.get("tool_version"), protocol=int(data.get("protocol", PROTOCOL_VERSION)))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _write_json(path: Path, data: dict) -> None:
    """Write then rename, so a reader never sees half a file."""
    staging = Path(f"{path}.tmp")
    staging.write_text(json.dumps(data, indent=1))
    os.replace(staging, path)


def options_to_json(options: ConversionOptions, folder: Path) -> tuple[dict[str, Any], str | None]:
    """Every option as JSON, and the representative data saved as an .npy in `folder` (its path, or None)."""
    encoded = {f.name: _encode(getattr(options, f.name)) for f in dataclasses.fields(options)
               if f.name != "representative_data"}
    data = options.representative_data
    if data is None:
        return encoded, None
    path = Path(folder) / REPRESENTATIVE_FILE
    np.save(path, np.asarray(data, dtype=np.float32))
    return encoded, str(path)


def options_from_json(encoded: dict[str, Any], representative_data: str | None) -> ConversionOptions:
    """The inverse of options_to_json; keys this version does not know are ignored."""
    kinds = {f.name: f for f in dataclasses.fields(ConversionOptions)}
    values = {name: _decode(name, value) for name, value in encoded.items() if name in kinds}
    if representative_data is not None:
        values["representative_data"] = np.load(representative_data, allow_pickle=False)
    return ConversionOptions(**values)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(name: str, value: Any) -> Any:
    """Restore the few option types JSON cannot spell: tuples and the tf2onnx command-line flags."""
    if value is None:
        return None
    if name == "tf2onnx_cli":
        from ..wrappers.tf2onnx_cli import Tf2OnnxCliFlags

        known = {f.name for f in dataclasses.fields(Tf2OnnxCliFlags)}
        return Tf2OnnxCliFlags(**{k: v for k, v in value.items() if k in known})
    if name == "input_shape":
        return tuple(int(d) for d in value)
    return value
