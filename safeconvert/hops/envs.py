"""Which interpreter runs a converter, and with which command.

By default every converter runs in safeconvert's own interpreter (`-m safeconvert.hops.child`). A converter
can be pointed at another interpreter (`--converter-env NAME=PYTHON`, or `[converter-env]` in
safeconvert.toml) when it needs library versions that cannot live beside safeconvert's (onnx-tf needs
TensorFlow 2.15 and onnx < 1.19). Such an interpreter usually has no safeconvert: the converter's standalone
script (a self-contained file in the package) runs there instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError

CONFIG_FILE = "safeconvert.toml"
CONFIG_TABLE = "converter-env"
STANDALONE_DIR = Path(__file__).parent / "standalone"
PROBE_SCRIPT = Path(__file__).parent / "standalone" / "probe_interpreter.py"
PROBE_TIMEOUT = 60.0


@dataclass
class ChildCommand:
    """How to start one hop's child: argv before the two protocol paths, and its environment."""

    argv: list[str]
    env: dict[str, str]
    interpreter: str
    standalone: bool


@dataclass
class ConverterEnvs:
    """Converter name -> interpreter path, for the converters that do not run in safeconvert's own."""

    pythons: dict[str, str] = field(default_factory=dict)

    def interpreter_for(self, converter_name: str) -> str | None:
        return self.pythons.get(converter_name)


def parse_converter_env(items: list[str] | None) -> dict[str, str]:
    """`NAME=/path/to/python` pairs from the command line."""
    pythons = {}
    for item in items or []:
        name, sep, python = item.partition("=")
        if not sep or not name.strip() or not python.strip():
            raise BadInputError(f"--converter-env takes NAME=/path/to/python, got {item!r}")
        pythons[name.strip()] = python.strip()
    return pythons


def load_config(path: Path | None) -> dict[str, str]:
    """The `[converter-env]` table of --config FILE, or of ./safeconvert.toml when it exists."""
    import tomllib

    explicit = path is not None
    path = Path(path) if explicit else Path.cwd() / CONFIG_FILE
    if not path.is_file():
        if explicit:
            raise BadInputError(f"--config {path}: no such file")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable TOML file ({' '.join(str(exc).split())})") from None
    table = data.get(CONFIG_TABLE, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise BadInputError(f"{path}: [{CONFIG_TABLE}] must map converter names to interpreter paths (strings)")
    base = path.parent
    return {name: str((base / python).expanduser()) if not os.path.isabs(python) and "/" in python else python
            for name, python in table.items()}


def converter_envs(cli_items: list[str] | None, config: Path | None) -> ConverterEnvs:
    """The config file's table, overridden by the command line."""
    return ConverterEnvs({**load_config(config), **parse_converter_env(cli_items)})


def standalone_script(converter) -> Path | None:
    """The converter's self-contained child script: its `standalone_script`, else the one named after it."""
    declared = getattr(converter, "standalone_script", None)
    if declared:
        return Path(declared)
    conventional = STANDALONE_DIR / f"{re.sub(r'[^A-Za-z0-9]', '_', converter.name)}_hop.py"
    return conventional if conventional.is_file() else None


def child_command(converter, envs: ConverterEnvs) -> ChildCommand:
    """safeconvert's own child, or the converter's standalone script in its own interpreter."""
    other = envs.interpreter_for(converter.name)
    if other is None:
        return ChildCommand([sys.executable, "-P", "-m", "safeconvert.hops.child"], own_environment(),
                            sys.executable, standalone=False)
    python = _check_interpreter(converter.name, other)
    script = standalone_script(converter)
    if script is not None:
        return ChildCommand([python, str(script)], foreign_environment(), python, standalone=True)
    if _imports_safeconvert(python):
        return ChildCommand([python, "-P", "-m", "safeconvert.hops.child"], foreign_environment(), python,
                            standalone=False)
    raise BadInputError(f"{converter.name}: {python} cannot import safeconvert and {converter.name} has no "
                        "standalone script to run there")


def _check_interpreter(name: str, python: str) -> str:
    path = Path(python).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BadInputError(f"--converter-env {name}={python}: not an executable file")
    return str(path.absolute())


_IMPORTABLE: dict[str, bool] = {}


def _imports_safeconvert(python: str) -> bool:
    """Whether `python` can import safeconvert (asked once per interpreter and run)."""
    if python not in _IMPORTABLE:
        try:
            result = subprocess.run([python, str(PROBE_SCRIPT)], capture_output=True, text=True,
                                    timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL, env=foreign_environment())
            _IMPORTABLE[python] = result.returncode == 0 and "safeconvert=" in result.stdout
        except (OSError, subprocess.TimeoutExpired):
            _IMPORTABLE[python] = False
    return _IMPORTABLE[python]


def own_environment() -> dict[str, str]:
    """The parent's environment, with this very safeconvert first on the path (not one in the cwd)."""
    env = _quiet_environment()
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def foreign_environment() -> dict[str, str]:
    """For another interpreter: no PYTHONPATH or PYTHONHOME of ours, which would mix two sets of libraries."""
    env = _quiet_environment()
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def _quiet_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONUNBUFFERED"] = "1"  # the log tail must hold the last lines before a crash
    return env
