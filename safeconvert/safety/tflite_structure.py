"""Walk a .tflite flatbuffer in pure Python before LiteRT sees it.

LiteRT's interpreter is C++: a flatbuffer with an out-of-range index or an absurd tensor shape can make
`allocate_tensors` crash the process or try to allocate gigabytes (a fuzzed MobileNet-like file with four
bytes set to 0xff segfaulted it here). The `tflite` package reads the same schema in Python, where a bad
offset raises an exception instead. This walk checks what the interpreter trusts: every index points at
something that exists, vectors fit in the file, and no tensor is absurdly large. It proves structure only;
`probe.probe_in_child` catches the crashes a well-formed but hostile model can still cause.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError, one_line
from .limits import MAX_TENSOR_ELEMENTS, check_input_shape

SCHEMA_VERSION = 3


def check_tflite_structure(path: Path) -> None:
    """Raise BadInputError unless `path` is a structurally sound TFLite flatbuffer of sane size."""
    data = Path(path).read_bytes()
    try:
        _check_model(data, Path(path).name)
    except BadInputError:
        raise
    except Exception as exc:  # the generated readers raise struct.error, IndexError, ValueError...
        raise BadInputError(f"{Path(path).name}: not a loadable TFLite model (corrupt flatbuffer: {one_line(exc)})") from None


def _check_model(data: bytes, name: str) -> None:
    import tflite

    if len(data) < 16:
        raise BadInputError(f"{name}: not a loadable TFLite model (only {len(data)} bytes)")
    model = tflite.Model.GetRootAs(data, 0)
    if model.Version() != SCHEMA_VERSION:
        raise BadInputError(f"{name}: not a loadable TFLite model (schema version {model.Version()}, expected 3)")
    limit = len(data) // 4  # no vector can have more entries than the file has 4-byte words
    buffers = _bounded(model.BuffersLength(), limit, "buffers", name)
    opcodes = _bounded(model.OperatorCodesLength(), limit, "operator codes", name)
    for index in range(buffers):
        _check_buffer(model.Buffers(index), len(data), name)
    if _bounded(model.SubgraphsLength(), limit, "subgraphs", name) == 0:
        raise BadInputError(f"{name}: not a loadable TFLite model (no subgraph)")
    for index in range(model.SubgraphsLength()):
        _check_subgraph(model.Subgraphs(index), buffers, opcodes, limit, name, main=index == 0)


def _bounded(count: int, limit: int, what: str, name: str) -> int:
    if not 0 <= count <= limit:
        raise BadInputError(f"{name}: not a loadable TFLite model (declares {count} {what})")
    return count


def _check_buffer(buffer, file_size: int, name: str) -> None:
    """Inline data must fit in the file; so must data stored after the flatbuffer (offset/size)."""
    if buffer is None:
        return
    _bounded(buffer.DataLength(), file_size, "bytes in a buffer", name)
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1 and (offset + size > file_size):
        raise BadInputError(f"{name}: not a loadable TFLite model (a buffer points past the end of the file)")


def _check_subgraph(subgraph, buffers: int, opcodes: int, limit: int, name: str, main: bool) -> None:
    tensors = _bounded(subgraph.TensorsLength(), limit, "tensors", name)
    _check_indices(subgraph.InputsAsNumpy(), tensors, name, "subgraph input", optional=False)
    _check_indices(subgraph.OutputsAsNumpy(), tensors, name, "subgraph output", optional=False)
    if main and subgraph.InputsLength():  # the input first: its limit is the one users can act on
        first = subgraph.Tensors(int(subgraph.InputsAsNumpy()[0]))
        check_input_shape([int(d) if d > 0 else None for d in _shape(first)], name)
    for index in range(tensors):
        _check_tensor(subgraph.Tensors(index), buffers, name)
    for index in range(_bounded(subgraph.OperatorsLength(), limit, "operators", name)):
        operator = subgraph.Operators(index)
        if not 0 <= operator.OpcodeIndex() < opcodes:
            raise BadInputError(f"{name}: not a loadable TFLite model (operator {index} has no operator code)")
        _check_indices(operator.InputsAsNumpy(), tensors, name, f"operator {index} input", optional=True)
        _check_indices(operator.OutputsAsNumpy(), tensors, name, f"operator {index} output", optional=False)


def _check_tensor(tensor, buffers: int, name: str) -> None:
    if not 0 <= tensor.Buffer() < max(buffers, 1):
        raise BadInputError(f"{name}: not a loadable TFLite model (a tensor points at buffer {tensor.Buffer()} of {buffers})")
    shape = _shape(tensor)
    if any(d < -1 for d in shape):
        raise BadInputError(f"{name}: not a loadable TFLite model (negative dimension in {list(shape)})")
    elements = int(np.prod([max(int(d), 1) for d in shape], dtype=object)) if len(shape) else 1
    if elements > MAX_TENSOR_ELEMENTS:
        raise BadInputError(f"{name}: tensor shape {[int(d) for d in shape]} has {elements:,} elements; safeconvert "
                            f"refuses more than {MAX_TENSOR_ELEMENTS:,} (the file is corrupt)")


def _shape(tensor) -> np.ndarray:
    shape = tensor.ShapeAsNumpy()
    return shape if isinstance(shape, np.ndarray) else np.zeros(0, dtype=np.int32)


def _check_indices(indices, tensors: int, name: str, what: str, optional: bool) -> None:
    """Tensor indices must exist; -1 marks an omitted optional operator input."""
    if not isinstance(indices, np.ndarray) or indices.size == 0:
        return
    low = -1 if optional else 0
    if indices.min() < low or indices.max() >= tensors:
        raise BadInputError(f"{name}: not a loadable TFLite model ({what} refers to a tensor that does not exist)")
