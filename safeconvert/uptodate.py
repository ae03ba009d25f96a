"""Idempotent `convert`: a second run on the same source and settings is a no-op that exits 0.

Build systems and CI steps call `safeconvert convert` whenever they are unsure. After a verified write,
a small sidecar file beside OUT (`OUT.safeconvert.json`) records the SHA-256 of the source bytes, of the
settings that shape the result (target format, converter options and versions, calibration set,
preprocessing, thresholds, safeconvert's version, the environment switches that change numerics) and of
the model safeconvert placed at OUT, taken before placing it, plus the report. "Source" and "OUT" mean all
files of each model (model_files.py): an ONNX model's external data, every file of a SavedModel. When OUT is
newer than the source and all three hashes still match (OUT is hashed again), the conversion would only
repeat itself, so it is skipped. Anything else runs as usual, including the refusal to replace an existing
OUT without --force; --force always converts again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from . import __version__
from .errors import SafeConvertError
from .model_files import file_digest, model_digest, newest_mtime_ns
from .pipeline import ConvertRequest, Outcome, check_report_paths_of, run_convert
from .report import Hop, Report

SIDECAR_SUFFIX = ".safeconvert.json"
SIDECAR_VERSION = 2  # 2: hashes over all files of a model, written hash taken before placing


def sidecar_path(output: Path) -> Path:
    return Path(output).with_name(Path(output).name + SIDECAR_SUFFIX)


def convert_if_needed(request: ConvertRequest) -> Outcome:
    """`run_convert`, unless OUT is already the verified conversion of these source bytes with these settings
    (never with --force: that asks to convert again)."""
    check_report_paths_of(request, **{"OUT's record": sidecar_path(request.output)})  # the report goes first
    previous = None if request.force else previous_report(request)
    if previous is not None:
        if request.report_path is not None:
            previous.write(Path(request.report_path))
        return Outcome(previous, up_to_date=True)
    fingerprint = _fingerprint_or_none(request)
    outcome = run_convert(request)
    _record(request, outcome, fingerprint)
    return outcome


def previous_report(request: ConvertRequest) -> Report | None:
    """The stored report when OUT is up to date, else None. Cheap checks first; hashing last."""
    source, output = Path(request.source), Path(request.output)
    sidecar = sidecar_path(output)
    if not (output.exists() and source.exists() and sidecar.is_file()):
        return None
    try:
        if newest_mtime_ns(output) <= newest_mtime_ns(source):
            return None
        stored = _read_sidecar(sidecar)
        if stored is None or stored.get("output_sha256") != model_digest(output):
            return None
    except (SafeConvertError, OSError):  # a model whose files cannot be listed: the real run says why
        return None
    if stored.get("fingerprint") != _fingerprint_or_none(request):
        return None
    return report_from_dict(stored["report"])


def fingerprint(request: ConvertRequest) -> dict[str, str]:
    """Hashes of the source bytes and of every setting that shapes the written model or its verdict."""
    from .formats import detect_format, format_for_output
    from .routes import plan_route
    from .user_cache import numerics_environment

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
        "numerics_environment": numerics_environment(),
    }
    encoded = json.dumps(settings, sort_keys=True, default=str).encode()
    return {"source_sha256": model_digest(Path(request.source)), "settings_sha256": hashlib.sha256(encoded).hexdigest()}


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


def _record(request: ConvertRequest, outcome: Outcome, fingerprint: dict[str, str] | None) -> None:
    """After a write: a sidecar for a verified OUT, vouching for the bytes this run placed (whatever may be at
    OUT by now); none for an unverified one (--allow-unverified)."""
    report = outcome.report
    if report.output is None:
        return  # OUT untouched: an existing sidecar still describes it
    sidecar = sidecar_path(Path(request.output))
    if not report.verified or fingerprint is None or outcome.written_sha256 is None:
        sidecar.unlink(missing_ok=True)
        return
    from .atomic import write_bytes_atomically

    record = {
        "sidecar_version": SIDECAR_VERSION,
        "fingerprint": fingerprint,
        "output_sha256": outcome.written_sha256,
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


def _calibration_identity(calib: Path | None) -> object:
    """Which calibration items: names and bytes (the packaged set: by version). Sizes and times would miss
    new pixels written with the old size and time; the digests are remembered per file identity
    (model_files.file_digest), so asking twice in a run reads the images once."""
    if calib is None:
        return "packaged"
    path = Path(calib).resolve()
    if not path.exists():
        return str(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if not all(f.is_file() for f in files):
        return str(path)  # a FIFO or device would block a read; the run itself refuses it in one line
    return [str(path)] + [[f.name, file_digest(f)] for f in files]
