"""onnx-tf hop: ONNX -> TF SavedModel, run in onnx-tf's own interpreter (docs/converter-protocol.md).

onnx-tf 1.10.0 (its last release) cannot be imported beside safeconvert's frameworks: it imports
`onnx.mapping` (removed after onnx 1.18) and needs tensorflow-addons, which breaks from TensorFlow 2.16 on.
It runs in a separate environment (requirements/onnx-tf-env.txt, `make onnx-tf-env`), so this script imports
nothing from safeconvert: only the standard library, onnx, onnx_tf and tensorflow.

    OTHER_PYTHON onnx_tf_hop.py REQUEST.json RESPONSE.json

The SavedModel keeps the ONNX model's NCHW input under the ONNX input's name (onnx-tf transposes around
each convolution inside the graph), with a `serving_default` signature.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

PROTOCOL = 1
CONVERTER = "onnx-tf"
LOG_LINES = 40


def convert(request: dict) -> str | None:
    """Run onnx-tf; return its version. ValueError means bad input, anything else a converter failure."""
    if request.get("source_format") != "onnx":
        raise ValueError(f"{CONVERTER} converts onnx, not {request.get('source_format')}")
    source, output = request["source"], request["output"]
    if os.path.exists(output):
        raise ValueError(f"the output path already exists: {output}")
    model = _load(source, (request.get("options") or {}).get("input_shape"))
    try:
        _export(model, output)
    except ValueError as exc:  # onnx-tf's own ValueErrors are its failures, not a bad request
        raise RuntimeError(_one_line(exc)) from exc
    if not os.path.isfile(os.path.join(output, "saved_model.pb")):
        raise RuntimeError("onnx-tf finished without writing saved_model.pb")
    return _version()


def _export(model, output: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from onnx_tf.backend import prepare

    prepare(model, device="CPU").export_graph(output)


def _load(source: str, input_shape: list | None):
    """Load the ONNX model, refusing what onnx itself rejects; fix the input shape when one is given."""
    import onnx

    try:
        model = onnx.load(source)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ValueError(f"{os.path.basename(source)}: not a loadable ONNX model ({_squashed(exc)})") from None
    if input_shape:
        _fix_input_shape(model, input_shape)
    return model


def _fix_input_shape(model, shape: list) -> None:
    """Write a fixed shape on the single graph input (None keeps a dimension dynamic)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"expected one image input, the model has {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ValueError(f"input_shape {shape} does not match the model's rank {len(dims)}")
    for dim, size in zip(dims, shape):
        if size is not None:
            dim.Clear()
            dim.dim_value = int(size)


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnx-tf")
    except PackageNotFoundError:
        return None


def _squashed(exc: BaseException) -> str:
    """onnx's checker names the problem first and its context after."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _one_line(exc: BaseException) -> str:
    """The line that names the error: TensorFlow's messages put the graph-building trace first and the
    error itself last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _respond(path: str, response: dict) -> None:
    """Write the response atomically (a half-written file would read as a crash)."""
    with open(path + ".tmp", "w") as handle:
        json.dump(response, handle)
    os.replace(path + ".tmp", path)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if len(argv) != 2:
        print("usage: onnx_tf_hop.py REQUEST.json RESPONSE.json", file=sys.stderr)
        return 2
    request_path, response_path = argv
    response = {"protocol": PROTOCOL, "ok": False, "error": None, "error_kind": None, "log_tail": [],
                "tool_version": None}
    try:
        with open(request_path) as handle:
            request = json.load(handle)
        if int(request.get("protocol", 1)) > PROTOCOL:
            raise ValueError(f"request protocol {request['protocol']} is newer than this script's ({PROTOCOL})")
        response["tool_version"] = convert(request)
        response["ok"] = True
    except ValueError as exc:
        response.update(error=_one_line(exc), error_kind="bad_input",
                        log_tail=traceback.format_exc().splitlines()[-LOG_LINES:])
    except Exception as exc:  # onnx-tf and TensorFlow raise many unrelated exception types
        response.update(error=_one_line(exc), error_kind="converter",
                        log_tail=traceback.format_exc().splitlines()[-LOG_LINES:])
    _respond(response_path, response)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
