"""Calibration data, preprocessing presets, comparison metrics and the verdict."""
