"""`from safeconvert.tf2onnx import from_keras`: tf2onnx.convert.from_keras, verified before it returns or writes.

Same signature and return value, `(model_proto, external_tensor_storage)`; tf2onnx's exceptions
propagate unchanged. The ModelProto runs in ONNX Runtime beside the Keras model on the calibration
photos. When verified it is returned, and written to `output_path` (atomically) if one was given; when
not, Tf2OnnxNotVerifiedError (a NotVerifiedError with `.report`) is raised and nothing is written.
Keyword-only extras: calibration, preprocess, max_mismatch, rtol, allow_unverified, report_path (see
dropin_verify). `large_model=True` is refused: its external tensors cannot be run from memory here.

The returned ModelProto is tf2onnx's own, names included: unlike the files `safeconvert convert` and
`safeconvert tf2onnx` write (see wrappers/onnx_names.py), it may differ in generated names between runs.

Inside this module `tf2onnx` means the real package (absolute imports), as it does for callers.
"""

from __future__ import annotations

import time
from pathlib import Path

from .dropin_verify import ConversionNotVerifiedError, VerifySettings, accepted, conclude, model_file, verify
from .errors import BadInputError
from .report import Hop


class Tf2OnnxNotVerifiedError(ConversionNotVerifiedError):
    """The ONNX model disagrees with the Keras model; `.report` holds the metrics and images."""


def from_keras(model, input_signature=None, opset=None, custom_ops=None, custom_op_handlers=None,
               custom_rewriter=None, inputs_as_nchw=None, outputs_as_nchw=None, extra_opset=None, shape_override=None,
               target=None, large_model=False, output_path=None, optimizers=None, *,
               calibration=None, preprocess: str | None = None, max_mismatch: int = 0, rtol: float = 1e-3,
               allow_unverified: bool = False, report_path=None):
    """tf2onnx.convert.from_keras(...), verified; `output_path` is written only for a verified model."""
    if large_model:
        raise BadInputError("large_model=True is not supported: the external tensors cannot be validated in memory")
    if output_path is not None:
        from .atomic import check_output_path

        check_output_path(Path(output_path), force=True)  # fail before converting; overwriting is from_keras's way
    settings = VerifySettings(calibration, preprocess, max_mismatch, rtol, allow_unverified, report_path)
    tf2onnx = _tf2onnx()
    started = time.perf_counter()
    proto, storage = tf2onnx.convert.from_keras(
        model, input_signature=input_signature, opset=opset, custom_ops=custom_ops, custom_op_handlers=custom_op_handlers,
        custom_rewriter=custom_rewriter, inputs_as_nchw=inputs_as_nchw, outputs_as_nchw=outputs_as_nchw,
        extra_opset=extra_opset, shape_override=shape_override, target=target, large_model=False, output_path=None,
        optimizers=optimizers)
    hop = Hop(converter="tf2onnx", tool_version=tf2onnx.__version__, source_format="keras", target_format="onnx",
              seconds=round(time.perf_counter() - started, 3),
              options={"opset": opset, "inputs_as_nchw": inputs_as_nchw, "outputs_as_nchw": outputs_as_nchw})
    payload = proto.SerializeToString()
    report = _verify(model, payload, hop, settings, output_path)
    if output_path is not None and accepted(report, settings):
        _write(Path(output_path), payload)
        report.output = str(output_path)
    conclude(report, settings, Tf2OnnxNotVerifiedError)
    return proto, storage


def _verify(model, payload: bytes, hop: Hop, settings: VerifySettings, output_path):
    from .runners.memory import KerasModelRunner
    from .runners.onnx_runner import OnnxRunner

    label = str(output_path) if output_path is not None else "<ModelProto returned by from_keras>"
    with model_file(payload, ".onnx") as path:
        return verify(KerasModelRunner(model), OnnxRunner(path), hop, settings, target_label=label)


def _write(path: Path, payload: bytes) -> None:
    """Atomically, as safeconvert writes every output: a reader never sees half a model."""
    from .atomic import write_bytes_atomically

    write_bytes_atomically(path, payload)


def _tf2onnx():
    """The real tf2onnx, imported after TensorFlow has been told to keep quiet."""
    from .runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import tf2onnx
    import tf2onnx.convert

    return tf2onnx
