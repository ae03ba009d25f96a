"""safeconvert: convert image models between frameworks, verify them on real photos, write only verified models."""

__version__ = "0.1.0"
