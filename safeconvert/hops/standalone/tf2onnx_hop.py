"""tf2onnx as a standalone hop script: `OTHER_PYTHON tf2onnx_hop.py request.json response.json`.

Used when `--converter-env tf2onnx=PYTHON` runs tf2onnx in an interpreter of its own (another TensorFlow or
tf2onnx version). It follows docs/converter-protocol.md and imports nothing from safeconvert: only the
standard library, numpy, TensorFlow, Keras, onnx and tf2onnx, which that interpreter must have.

It converts as safeconvert's in-process wrapper does (Keras with a dynamic batch through `from_keras`,
SavedModel through the CLI's `tf_loader.from_saved_model` + `_convert_common`, TFLite through `from_tflite`),
then checks the model with onnx.checker. Two differences: generated tensor names are tf2onnx's own (the
wrapper renumbers them for byte-reproducible output), and tf2onnx's command-line flags (`safeconvert
tf2onnx --inputs-as-nchw ...`) are refused: they need safeconvert's CLI emulation.
"""

import contextlib
import io
import json
import logging
import os
import signal
import sys
import traceback
import warnings

PROTOCOL = 1
LOG_TAIL_LINES = 40
SOURCES = ("keras", "savedmodel", "tflite")


class BadInput(ValueError):
    """The source or an option cannot be used, whatever the converter (error_kind "bad_input")."""


def convert(request: dict) -> str:
    """Write request["output"]; return tf2onnx's version."""
    source, fmt, out = request["source"], request["source_format"], request["output"]
    options = request.get("options") or {}
    if fmt not in SOURCES:
        raise BadInput(f"tf2onnx converts {', '.join(SOURCES)}, not {fmt}")
    if options.get("tf2onnx_cli"):
        raise BadInput("tf2onnx's command-line flags need safeconvert's own tf2onnx; run it without --converter-env")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    opset = options.get("opset")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        proto = {"keras": _from_keras, "savedmodel": _from_saved_model, "tflite": _from_tflite}[fmt](source, opset)
    import onnx

    onnx.checker.check_model(proto)
    with open(out, "wb") as handle:
        handle.write(proto.SerializeToString())
    return tf2onnx.__version__


def _from_keras(source: str, opset):
    import keras
    import tensorflow as tf
    import tf2onnx

    try:
        model = keras.saving.load_model(source, compile=False, safe_mode=True)
    except Exception as exc:
        raise BadInput(f"not a loadable Keras model ({exc})") from None
    signature = tuple(
        tf.TensorSpec((None, *tuple(t.shape)[1:]), t.dtype, name=(t.name or f"input_{i}").split(":")[0])
        for i, t in enumerate(model.inputs)
    )
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    return proto


def _from_saved_model(source: str, opset):
    import tensorflow as tf
    import tf2onnx
    import tf2onnx.tf_loader

    graph_def, inputs, outputs, tables, renames = tf2onnx.tf_loader.from_saved_model(
        source, None, None, None, None, None, False,
        return_initialized_tables=True, return_tensors_to_rename=True, use_graph_names=False,
    )
    with tf.device("/cpu:0"):
        proto, _ = tf2onnx.convert._convert_common(
            graph_def, name=source, continue_on_error=False, opset=opset, input_names=inputs,
            output_names=outputs, tensors_to_rename=renames, initialized_tables=tables,
        )
    return proto


def _from_tflite(source: str, opset):
    import tf2onnx

    proto, _ = tf2onnx.convert.from_tflite(source, opset=opset)
    return proto


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:297] + "..." if len(text) > 300 else text


def answer(request_path: str) -> dict:
    """The response for one request; every failure is an answer, not an exception."""
    response = {"protocol": PROTOCOL, "ok": False, "error": None, "error_kind": None, "log_tail": [],
                "tool_version": None}
    try:
        with open(request_path) as handle:
            request = json.load(handle)
        if int(request.get("protocol", 1)) > PROTOCOL:
            raise BadInput(f"request protocol {request['protocol']} is newer than this script's ({PROTOCOL})")
        response["tool_version"] = convert(request)
        response["ok"] = True
    except Exception as exc:
        kind = "bad_input" if isinstance(exc, BadInput) else "converter"
        response.update(error=_one_line(exc), error_kind=kind,
                        log_tail=traceback.format_exc().rstrip().splitlines()[-LOG_TAIL_LINES:])
    return response


def main(argv) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it kills this process group
    request_path, response_path = argv
    response = answer(request_path)
    with open(response_path + ".tmp", "w") as handle:
        json.dump(response, handle)
    os.replace(response_path + ".tmp", response_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
