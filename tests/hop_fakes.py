"""Stand-in interpreters for converters that misbehave, and a CLI runner (a plain module the hop tests import).

Each stand-in is a real executable that --converter-env can name: it crashes, hangs, allocates memory until it
is killed, or is this very Python with safeconvert made unimportable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PYTHON = sys.executable
# The hanging converter's helper sleeps this long: found by it in the process table. Unique to this test
# process, so that a concurrent test run elsewhere on the machine is not mistaken for a leftover of ours.
HANG_MARKER = f"987.{os.getpid()}{int.from_bytes(os.urandom(2), 'big')}"


def fake_python(folder: Path, name: str, body: str, probe_passes: bool = True) -> Path:
    """An executable that stands in for a converter's interpreter; probes of it answer as the real one's
    (it has safeconvert) unless `probe_passes` is False."""
    path = folder / name
    probe = f'case "$1" in *probe_interpreter.py) exec {PYTHON} "$@";; esac\n' if probe_passes else ""
    path.write_text(f'#!/bin/sh\n{probe}{body}\n')
    path.chmod(0o755)
    return path


CRASH = 'echo "converter: reading the model" >&2\necho "Fatal Python error: Segmentation fault" >&2\nkill -SEGV $$'
HANG = f'echo "converter: stuck in a loop" >&2\nsleep {HANG_MARKER} &\nwait'
HOG = f'''exec {PYTHON} -c "
import sys, time
print('converter: allocating', file=sys.stderr, flush=True)
blocks = []
while len(blocks) < 60:  # 3 GB at most, should the limit fail
    blocks.append(b'x' * (50 << 20))
time.sleep(600)
"'''
# This interpreter, with safeconvert made unimportable: a real Python where only standalone scripts can run.
WITHOUT_SAFECONVERT = (f'exec {PYTHON} -I -c "import runpy, sys; sys.modules[\'safeconvert\'] = None; '
                       f'sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name=\'__main__\')" "$@"')


def run_cli(args: list[str], tmp: Path, timeout: float = 280) -> subprocess.CompletedProcess:
    """`safeconvert ARGS` as a separate process whose temporary directory is `tmp` (checked for leftovers)."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run([PYTHON, "-m", "safeconvert", *args], capture_output=True, text=True, timeout=timeout, env=env)


def leftovers(tmp: Path) -> list[str]:
    return [p.name for p in tmp.iterdir() if p.name.startswith("safeconvert-hop-")]


def hanging_processes() -> list:
    """Processes of this test session's hanging converters still alive anywhere (psutil.Process objects)."""
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if HANG_MARKER in " ".join(p.info["cmdline"] or [])]
