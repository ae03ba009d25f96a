"""The child side of a hop in safeconvert's own environment: `python -P -m safeconvert.hops.child REQ RESP`.

It runs one wrapped converter exactly as the parent would have in-process, and answers with response.json
(docs/converter-protocol.md). Exit status 0 means "response written"; a crash of the converter shows up in
the parent as a non-zero status or a signal, with the log the parent captured.
"""

from __future__ import annotations

import importlib
import signal
import sys
import traceback
from pathlib import Path

from .protocol import ERROR_BAD_INPUT, ERROR_CONVERTER, LOG_TAIL_LINES, PROTOCOL_VERSION, HopRequest, HopResponse


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it kills this process group
    request_path, response_path = Path(argv[0]), Path(argv[1])
    run(HopRequest.read(request_path)).write(response_path)
    return 0


def run(request: HopRequest) -> HopResponse:
    """Convert as the request says; every failure becomes a response, never an exception."""
    from ..errors import BadInputError, ConverterFailedError, SafeConvertError, one_line

    try:
        if request.protocol > PROTOCOL_VERSION:
            raise BadInputError(f"request protocol {request.protocol} is newer than this child's ({PROTOCOL_VERSION})")
        converter = find_converter(request)
        _convert(converter, request)
        return HopResponse(ok=True, tool_version=converter.version())
    except ConverterFailedError as exc:
        return _failure(exc.detail, ERROR_CONVERTER)
    except BadInputError as exc:
        return _failure(one_line(exc), ERROR_BAD_INPUT)
    except SafeConvertError as exc:
        return _failure(one_line(exc), ERROR_CONVERTER)
    except Exception as exc:  # a converter bug of any type: still this converter's failure
        return _failure(f"{type(exc).__name__}: {one_line(exc)}", ERROR_CONVERTER)


def _convert(converter, request: HopRequest) -> None:
    from ..formats import Format
    from .protocol import options_from_json

    options = options_from_json(request.options, request.representative_data)
    converter.convert(Path(request.source), Format(request.source_format), Path(request.output), options)
    if not Path(request.output).exists():
        from ..errors import ConverterFailedError

        raise ConverterFailedError(converter.name, "finished without writing a model")


def find_converter(request: HopRequest):
    """The converter by class path when the parent gave one (it may not be registered), else by name."""
    if request.converter_class:
        module_name, _, class_name = request.converter_class.partition(":")
        return getattr(importlib.import_module(module_name), class_name)(**request.converter_arguments)
    from ..errors import BadInputError
    from ..routes import registered_converters

    for converter in registered_converters():
        if converter.name == request.converter:
            return converter
    raise BadInputError(f"no converter named {request.converter!r} in this safeconvert")


def _failure(message: str, kind: str) -> HopResponse:
    tail = traceback.format_exc().rstrip().splitlines()[-LOG_TAIL_LINES:]
    return HopResponse(ok=False, error=message, error_kind=kind, log_tail=tail)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
