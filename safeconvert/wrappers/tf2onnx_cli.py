"""tf2onnx exactly as `python -m tf2onnx.convert` runs it, for `safeconvert tf2onnx`.

The plain tf2onnx wrapper converts Keras models with the Python API (`from_keras`), which names the ONNX
input after the Keras tensor (`input`). The command line loads Keras files with `tf_loader.from_keras`
instead, which freezes a traced function and names tensors the TensorFlow way (`input:0`). Flags such as
`--inputs-as-nchw input:0` name those tensors, so a drop-in for the command line has to take the same
path. This module repeats what tf2onnx 1.17's `convert.main()` does for SavedModel, Keras and TFLite
sources, with the flags safeconvert can honour; `cli_dropins` rejects the others before any work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BadInputError
from ..formats import Format


@dataclass
class Tf2OnnxCliFlags:
    """The tf2onnx command-line flags `safeconvert tf2onnx` honours, as the user spelled them."""

    inputs: str | None = None  # --inputs: names, each optionally with a shape override: x:0[1,224,224,3]
    outputs: str | None = None  # --outputs
    inputs_as_nchw: list[str] = field(default_factory=list)  # --inputs-as-nchw
    rename_inputs: list[str] = field(default_factory=list)  # --rename-inputs
    rename_outputs: list[str] = field(default_factory=list)  # --rename-outputs
    use_graph_names: bool = False  # --use-graph-names (SavedModel only)
    dequantize: bool = False  # --dequantize (TFLite only)
    target: list[str] = field(default_factory=list)  # --target workarounds; empty = tf2onnx's default

    def describe(self) -> dict:
        """The flags that were set, for the report."""
        return {key: value for key, value in asdict(self).items() if value not in (None, False, [])}


def check_flags(flags: Tf2OnnxCliFlags, src_format: Format) -> None:
    """The checks tf2onnx's own argument parser makes, as one-line errors (cheap: run before any loading)."""
    if flags.dequantize and src_format is not Format.TFLITE:
        raise BadInputError("tf2onnx: --dequantize is only supported for --tflite models")
    if flags.use_graph_names and src_format is not Format.SAVEDMODEL:
        raise BadInputError("tf2onnx: --use-graph-names applies to --saved-model only")


def _check_targets(flags: Tf2OnnxCliFlags) -> None:
    from tf2onnx import constants

    unknown = [t for t in flags.target if t not in constants.POSSIBLE_TARGETS]
    if unknown:
        raise BadInputError(f"tf2onnx: unknown --target {unknown[0]!r} (choose from {', '.join(constants.POSSIBLE_TARGETS)})")


def convert_like_cli(src: Path, src_format: Format, opset: int | None, flags: Tf2OnnxCliFlags):
    """Load the source as tf2onnx.convert.main() does and run its `_convert_common` with the same arguments."""
    import tensorflow as tf
    import tf2onnx
    from tf2onnx import constants, tf_loader, utils

    check_flags(flags, src_format)
    _check_targets(flags)
    inputs, shape_override = utils.split_nodename_and_shape(flags.inputs) if flags.inputs else (None, None)
    outputs = flags.outputs.split(",") if flags.outputs else None
    graph_def, tables, renames, tflite_path = None, None, {}, None
    if src_format is Format.SAVEDMODEL:
        graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
            str(src), inputs, outputs, None, None, None, False,
            return_initialized_tables=True, return_tensors_to_rename=True, use_graph_names=flags.use_graph_names)
    elif src_format is Format.KERAS:
        graph_def, inputs, outputs = tf_loader.from_keras(str(src), inputs, outputs)
    else:
        tflite_path = str(src)
    renames.update(zip(inputs or [], flags.rename_inputs))
    renames.update(zip(outputs or [], flags.rename_outputs))
    with tf.device("/cpu:0"):
        proto, _ = tf2onnx.convert._convert_common(
            graph_def, name=str(src), continue_on_error=False, target=flags.target or constants.DEFAULT_TARGET,
            opset=opset, custom_op_handlers={}, extra_opset=[], shape_override=shape_override, input_names=inputs,
            output_names=outputs, inputs_as_nchw=flags.inputs_as_nchw or None, outputs_as_nchw=None,
            large_model=False, tensors_to_rename=renames, ignore_default=None, use_default=None,
            tflite_path=tflite_path, dequantize=flags.dequantize, tfjs_path=None, initialized_tables=tables,
            output_frozen_graph=None, output_path=None)
    return proto
