"""Wrappers around real third-party model converters, one module per converter.

Each module defines one `Converter` subclass (see `base.py`) for the hops that converter makes.
Nothing heavy is imported here or at the top of the wrapper modules: TensorFlow, torch, tf2onnx and
onnx2torch are imported inside `convert`, so listing routes or converting ONNX to TorchScript never
pays for starting TensorFlow.
"""
