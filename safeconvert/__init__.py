"""safeconvert: convert image models between frameworks, verify them on real photos, write only verified models."""

__version__ = "0.1.0"

_API = ("convert", "check")


def __getattr__(name: str):
    """`safeconvert.convert` / `safeconvert.check`, imported on first use so `import safeconvert` stays light."""
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'safeconvert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
