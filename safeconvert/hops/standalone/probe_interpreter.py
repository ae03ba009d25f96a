"""Run by safeconvert as `OTHER_PYTHON probe_interpreter.py`: can that interpreter import safeconvert?

Prints `python=X.Y.Z safeconvert=VERSION` and exits 0 when it can; exits 1 (printing why) when it cannot.
Self-contained on purpose: the interpreter probed may have nothing but the standard library.
"""

import platform
import sys


def main() -> int:
    try:
        import safeconvert
    except Exception as exc:  # ImportError, or a broken install that raises anything else
        print(f"python={platform.python_version()} no safeconvert ({type(exc).__name__}: {exc})")
        return 1
    print(f"python={platform.python_version()} safeconvert={getattr(safeconvert, '__version__', '?')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
