"""Idempotent `convert`: a second run on the same source and settings is a no-op that exits 0.

Build systems and CI steps call `safeconvert convert` whenever they are unsure. After a verified write,
a small sidecar file beside OUT (`OUT.safeconvert.json`) records the SHA-256 of the source bytes, of the
settings that shape the result (target format, converter options and versions, calibration set,
preprocessing, thresholds) and of OUT itself, plus the report. When OUT is newer than the source and all
three hashes still match, the conversion would only repeat itself, so it is skipped. Anything else runs
as usual, including the refusal to replace an existing OUT without --force.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from . import __version__
from .errors import SafeConvertError
from .pipeline import ConvertRequest, Outcome, run_convert
from .report import Hop, Report

SIDECAR_SUFFIX = ".safeconvert.json"
SIDECAR_VERSION = 1


def sidecar_path(output: Path) -> Path:
    return Path(output).with_name(Path(output).name + SIDECAR_SUFFIX)


def convert_if_needed(request: ConvertRequest) -> Outcome:
    """`run_convert`, unless OUT is already the verified conversion of these source bytes with these settings."""
    previous = previous_report(request)
    if previous is not None:
        if request.report_path is not None:
            previous.write(Path(request.report_path))
        return Outcome(previous, up_to_date=True)
    fingerprint = _fingerprint_or_none(request)
    outcome = run_convert(request)
    _record(request, outcome.report, fingerprint)
    return outcome


def previous_report(request: ConvertRequest) -> Report | None:
    """The stored report when OUT is up to date, else None. Cheap checks first; hashing last."""
    source, output = Path(request.source), Path(request.output)
    sidecar = sidecar_path(output)
    if not (output.exists() and source.exists() and sidecar.is_file()):
        return None
    if _newest_mtime(output) <= _newest_mtime(source):
        return None
    stored = _read_sidecar(sidecar)
    if stored is None or stored.get("output_sha256") != content_hash(output):
        return None
    if stored.get("fingerprint") != _fingerprint_or_none(request):
        return None
    return report_from_dict(stored["report"])


def content_hash(path: Path) -> str:
    """SHA-256 of a file, or of a directory's relative file names and contents (SavedModel)."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fingerprint(request: ConvertRequest) -> dict[str, str]:
    """Hashes of the source bytes and of every setting that shapes the written model or its verdict."""
    from .formats import detect_format, format_for_output
    from .routes import plan_route

    src_format = detect_format(Path(request.source))
    dst_format = format_for_output(Path(request.output), request.target_format)
    route = plan_route(src_format, dst_format)
    settings = {
        "target_format": dst_format.value,
        "converters": [[c.name, c.version()] for c in route],
        "options": request.options.describe(),
        "input_shape": request.options.input_shape,
        "calibration": _calibration_identity(request.calib),
        "preprocess": request.preprocess,
        "thresholds": dataclasses.asdict(request.thresholds),
        "repair": getattr(request, "repair", None),
        "safeconvert_version": __version__,
    }
    encoded = json.dumps(settings, sort_keys=True, default=str).encode()
    return {"source_sha256": content_hash(Path(request.source)), "settings_sha256": hashlib.sha256(encoded).hexdigest()}


def report_from_dict(data: dict) -> Report:
    """Rebuild a Report from its JSON form (fields this version does not know are dropped)."""
    known = {f.name for f in dataclasses.fields(Report)} - {"safeconvert_version", "schema_version", "python"}
    hop_fields = {f.name for f in dataclasses.fields(Hop)}
    values = {key: value for key, value in data.items() if key in known}
    values["route"] = [Hop(**{k: v for k, v in hop.items() if k in hop_fields}) for hop in data.get("route", [])]
    return Report(**values)


def _fingerprint_or_none(request: ConvertRequest) -> dict[str, str] | None:
    """None when the request is unusable: the real run reports why."""
    try:
        return fingerprint(request)
    except (SafeConvertError, OSError):
        return None


def _record(request: ConvertRequest, report: Report, fingerprint: dict[str, str] | None) -> None:
    """After a write: a sidecar for a verified OUT; none for an unverified one (--allow-unverified)."""
    if report.output is None:
        return  # OUT untouched: an existing sidecar still describes it
    sidecar = sidecar_path(Path(request.output))
    if not report.verified or fingerprint is None:
        sidecar.unlink(missing_ok=True)
        return
    from .atomic import write_bytes_atomically

    record = {
        "sidecar_version": SIDECAR_VERSION,
        "fingerprint": fingerprint,
        "output_sha256": content_hash(Path(request.output)),
        "report": report.to_dict(),
    }
    write_bytes_atomically(sidecar, (json.dumps(record, indent=2) + "\n").encode())


def _read_sidecar(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("sidecar_version") != SIDECAR_VERSION or "report" not in data:
        return None
    return data


def _newest_mtime(path: Path) -> int:
    if path.is_dir():
        return max((p.stat().st_mtime_ns for p in path.rglob("*")), default=path.stat().st_mtime_ns)
    return path.stat().st_mtime_ns


def _calibration_identity(calib: Path | None) -> object:
    """Which calibration items, cheaply: names, sizes and modification times (the packaged set: by version)."""
    if calib is None:
        return "packaged"
    path = Path(calib).resolve()
    if not path.exists():
        return str(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [str(path)] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
