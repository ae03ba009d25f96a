"""A memory limit for the whole run: running out of it is a clear error (exit 2), not a swapping machine.

Validation and localization run models in safeconvert's own process (converters run in children with
their own `--hop-memory` limit). A model that computes a huge tensor from its input, or a calibration set of
huge images, could otherwise grow the process until the machine swaps or the kernel's OOM killer ends it
without a message. The run's private writable memory (the kernel's RLIMIT_DATA: heap and anonymous maps,
what tensors are made of) is limited instead, to SAFECONVERT_MAX_MEMORY_MB (default 80% of RAM); an
allocation past it fails inside the framework, and the error it raises becomes one line with exit code 2.
Converter children inherit the limit, so a converter that exceeds it fails as a converter (exit 3).
Memory-mapped calibration files are shared mappings and do not count.
"""

from __future__ import annotations

import os
import re
import resource
from contextlib import contextmanager
from typing import Iterator

from ..errors import BadInputError, SafeConvertError, one_line

MEMORY_VARIABLE = "SAFECONVERT_MAX_MEMORY_MB"
DEFAULT_SHARE_OF_RAM = 0.8
# What frameworks say when an allocation fails: numpy's MemoryError, std::bad_alloc from ONNX Runtime or
# LiteRT, torch's DefaultCPUAllocator, TensorFlow's ResourceExhaustedError.
OUT_OF_MEMORY = re.compile(r"bad_alloc|out of memory|not enough memory|failed to allocate|unable to allocate|"
                           r"OOM when allocating|ResourceExhausted|cannot allocate memory", re.IGNORECASE)


class MemoryLimitError(BadInputError):
    """The run needed more memory than the limit allows."""


def memory_limit_bytes() -> int:
    """The limit from SAFECONVERT_MAX_MEMORY_MB, else DEFAULT_SHARE_OF_RAM of physical memory."""
    text = os.environ.get(MEMORY_VARIABLE, "").strip()
    if text:
        try:
            megabytes = float(text)
        except ValueError:
            megabytes = 0
        if megabytes <= 0:
            raise BadInputError(f"{MEMORY_VARIABLE}={text!r}: expected a positive number of megabytes")
        return int(megabytes * (1 << 20))
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * DEFAULT_SHARE_OF_RAM)


@contextmanager
def memory_limited() -> Iterator[None]:
    """Run the block under the memory limit; running out of memory inside it raises MemoryLimitError."""
    limit = memory_limit_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    applied = min(limit, hard) if hard != resource.RLIM_INFINITY else limit
    lowered = soft == resource.RLIM_INFINITY or applied < soft
    if lowered:
        resource.setrlimit(resource.RLIMIT_DATA, (applied, hard))
    try:
        yield
    except BaseException as exc:
        if is_out_of_memory(exc):
            raise MemoryLimitError(
                f"the run needed more than {applied >> 20:,} MB of memory ({one_line(exc, 120)}); the model or its "
                f"calibration images are too large for the limit (set {MEMORY_VARIABLE} to raise it)") from None
        raise
    finally:
        if lowered:
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a failed allocation, whichever framework raised it."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, Exception) and not isinstance(exc, SafeConvertError):  # ours already say what failed
        return bool(OUT_OF_MEMORY.search(f"{type(exc).__name__}: {exc}"))
    return False
