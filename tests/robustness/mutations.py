"""Seeded mutations of real files: what a bad download, a full disk mid-copy or a hostile upload produce.

A plain module imported by the robustness tests. Every mutation is a pure function of (bytes, seed), so a
failing case is reproduced exactly by its test id.
"""

from __future__ import annotations

import io
import random
import zipfile

BYTE_KINDS = ("truncate", "truncate_head", "flip_bits", "flip_header", "zero_header", "zero_tail", "chunk", "ff_run",
              "duplicate", "append_garbage")
ZIP_KINDS = ("member_flip", "member_truncate", "member_drop", "member_json")


def mutate_bytes(data: bytes, kind: str, seed: int) -> bytes:
    """One seeded mutation of a file's raw bytes."""
    rng = random.Random(f"{kind}-{seed}")
    buffer = bytearray(data)
    if len(buffer) < 2:  # nothing to cut or flip inside: damage it the only way possible
        return b"" if kind.startswith("truncate") else bytes(buffer) + b"\xff"
    if kind == "truncate":
        return bytes(buffer[: rng.randrange(1, len(buffer))])
    if kind == "truncate_head":
        return bytes(buffer[: rng.randrange(1, min(len(buffer), 256))])
    if kind == "flip_bits":
        for _ in range(rng.choice((1, 8, 64))):
            buffer[rng.randrange(len(buffer))] ^= 1 << rng.randrange(8)
        return bytes(buffer)
    if kind == "flip_header":
        for _ in range(rng.choice((1, 4))):
            buffer[rng.randrange(min(len(buffer), 64))] ^= 1 << rng.randrange(8)
        return bytes(buffer)
    if kind == "zero_header":
        size = rng.choice((4, 16, 64))
        return bytes(size) + bytes(buffer[size:])
    if kind == "zero_tail":
        size = rng.randrange(1, min(len(buffer), 4096))
        return bytes(buffer[:-size]) + bytes(size)
    if kind == "chunk":
        start, size = rng.randrange(len(buffer)), rng.randrange(1, 512)
        buffer[start : start + size] = bytes(rng.randrange(256) for _ in range(len(buffer[start : start + size])))
        return bytes(buffer)
    if kind == "ff_run":
        start, size = rng.randrange(len(buffer)), rng.randrange(1, 16)
        buffer[start : start + size] = b"\xff" * len(buffer[start : start + size])
        return bytes(buffer)
    if kind == "duplicate":
        start = rng.randrange(len(buffer))
        return bytes(buffer[:start] + buffer[start : start + 1024] + buffer[start:])
    if kind == "append_garbage":
        return bytes(buffer) + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))
    raise ValueError(f"unknown mutation {kind}")


def mutate_zip(data: bytes, kind: str, seed: int) -> bytes:
    """Mutate one member of a zip archive and re-zip it with valid CRCs, so the damage reaches the loader."""
    rng = random.Random(f"{kind}-{seed}")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [(info, archive.read(info.filename)) for info in archive.infolist()]
    files = [i for i, (info, _) in enumerate(members) if not info.filename.endswith("/")]
    jsons = [i for i in files if members[i][0].filename.endswith(".json")] or files
    target = rng.choice(jsons if kind == "member_json" else files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for index, (info, content) in enumerate(members):
            if index == target:
                if kind == "member_drop":
                    continue
                content = _mutate_member(content, kind, seed)
            archive.writestr(info, content)
    return out.getvalue()


def _mutate_member(content: bytes, kind: str, seed: int) -> bytes:
    if not content:
        return b"\x00"
    if kind == "member_truncate":
        return mutate_bytes(content, "truncate", seed)
    if kind == "member_json":
        return mutate_bytes(content, random.Random(seed).choice(("chunk", "flip_bits", "truncate")), seed)
    return mutate_bytes(content, "flip_bits", seed)


def garbage(seed: int, size: int = 2048) -> bytes:
    rng = random.Random(f"garbage-{seed}")
    return bytes(rng.randrange(256) for _ in range(size))
