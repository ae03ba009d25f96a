"""The robustness suite: hostile and broken inputs, untrusted model files, and faults during a run."""
