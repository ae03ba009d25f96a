"""Small TFLite flatbuffer-editing toolkit for fault injection (first subgraph, object API).

LiteRT's flatbuffer_utils (the same module TensorFlow ships as tensorflow.lite.tools.flatbuffer_utils) reads
the model into mutable Python objects and writes it back without starting TensorFlow. Operators have no
names in TFLite, so an operator is named by its first output tensor, the name TFLite tools show for a layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fault import FaultNotApplicableError

FLOAT32, INT32, INT64 = 0, 2, 4  # TensorType values
NUMPY_TYPES = {FLOAT32: np.float32, INT32: np.int32, INT64: np.int64}


def flatbuffer_modules():
    """(flatbuffer_utils, schema): LiteRT's when installed, else TensorFlow's copies of the same modules."""
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
        from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils, schema


@dataclass
class OpSpec:
    """One operator to insert: builtin name, its options object, constant inputs after the data input, output shape."""

    code: str
    out_shape: tuple[int, ...]
    constants: list[np.ndarray] = field(default_factory=list)
    options: object | None = None
    options_type: str | None = None


class TfliteGraph:
    """A TFLite model being edited: the first subgraph's operators, tensors and buffers."""

    def __init__(self, model):
        self.model = model
        self.subgraph = model.subgraphs[0]
        self.utils, self.schema = flatbuffer_modules()
        self._codes = {v: k for k, v in vars(self.schema.BuiltinOperator).items() if not k.startswith("_")}

    @classmethod
    def load(cls, path: Path) -> "TfliteGraph":
        utils, _ = flatbuffer_modules()
        return cls(utils.read_model(str(path)))

    def copy(self) -> "TfliteGraph":
        return TfliteGraph(copy.deepcopy(self.model))

    def serialize(self) -> bytes:
        return bytes(self.utils.convert_object_to_bytearray(self.model))

    # --- lookups -------------------------------------------------------------------------------------

    @property
    def tensors(self) -> list:
        return self.subgraph.tensors

    @property
    def operators(self) -> list:
        return self.subgraph.operators

    def tensor_name(self, index: int) -> str:
        name = self.tensors[index].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def op_type(self, op) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        return self._codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    def op_name(self, op) -> str:
        return self.tensor_name(op.outputs[0])

    def ops(self, *types: str) -> list:
        return [op for op in self.operators if self.op_type(op) in types]

    def find_op(self, name: str):
        op = next((o for o in self.operators if self.op_name(o) == name), None)
        if op is None:
            raise FaultNotApplicableError(f"no TFLite operator writes a tensor named {name!r}")
        return op

    def tensor_index(self, name: str) -> int:
        index = next((i for i in range(len(self.tensors)) if self.tensor_name(i) == name), None)
        if index is None:
            raise FaultNotApplicableError(f"no TFLite tensor named {name!r}")
        return index

    def producer(self, tensor: int):
        return next((op for op in self.operators if tensor in list(op.outputs)), None)

    def consumers(self, tensor: int) -> list:
        return [op for op in self.operators if tensor in list(op.inputs)]

    def shape(self, tensor: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[tensor].shape)

    # --- constants -----------------------------------------------------------------------------------

    def constant(self, tensor: int) -> np.ndarray | None:
        """A constant tensor's value (float32/int32/int64 only), None for activations."""
        spec = self.tensors[tensor]
        data = self.model.buffers[spec.buffer].data
        if data is None or len(data) == 0 or spec.type not in NUMPY_TYPES:
            return None
        return np.frombuffer(bytes(data), dtype=NUMPY_TYPES[spec.type]).reshape(self.shape(tensor))

    def set_constant(self, tensor: int, array: np.ndarray) -> None:
        """Replace a constant's value; a buffer other tensors share is copied first, so only this tensor changes."""
        spec = self.tensors[tensor]
        data = np.frombuffer(np.ascontiguousarray(array, dtype=NUMPY_TYPES[spec.type]).tobytes(), dtype=np.uint8).copy()
        sharers = [t for t in self.tensors if t.buffer == spec.buffer]
        if len(sharers) > 1:
            spec.buffer = self._new_buffer(data)
        else:
            self.model.buffers[spec.buffer].data = data

    def _new_buffer(self, data: np.ndarray | None) -> int:
        buffer = self.schema.BufferT()
        buffer.data = data
        self.model.buffers.append(buffer)
        return len(self.model.buffers) - 1

    # --- structure edits -----------------------------------------------------------------------------

    def opcode(self, name: str) -> int:
        """Index of a builtin operator code, added to the model's table when missing."""
        value = getattr(self.schema.BuiltinOperator, name)
        for index, code in enumerate(self.model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == value:
                return index
        code = self.schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = value, min(value, 127), 1
        self.model.operatorCodes.append(code)
        return len(self.model.operatorCodes) - 1

    def add_tensor(self, name: str, shape: tuple[int, ...], dtype: int, data: np.ndarray | None = None, dynamic_batch: bool = False) -> int:
        tensor = self.schema.TensorT()
        tensor.name = name.encode()
        tensor.shape = [int(d) for d in shape]
        if dynamic_batch:
            tensor.shapeSignature = [-1, *tensor.shape[1:]]
        tensor.type = dtype
        raw = None if data is None else np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8).copy()
        tensor.buffer = 0 if raw is None else self._new_buffer(raw)
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def insert_chain(self, tensor: int, chain: list[OpSpec], only: object | None = None, anchor: str = "") -> list[int]:
        """Insert operators reading `tensor`; its readers (or only the operator `only`) read the chain's output.

        The chain is placed right after the tensor's producer (first, for a model input) so the operator list
        stays in execution order. Returns the new output tensors.
        """
        dynamic = self._dynamic_batch(tensor)
        readers = [only] if only is not None else self.consumers(tensor)
        position = 0 if self.producer(tensor) is None else self.operators.index(self.producer(tensor)) + 1
        source, outputs = tensor, []
        for step, spec in enumerate(chain):
            op, source = self._make_op(spec, source, f"{anchor or self.tensor_name(tensor)}/{spec.code.lower()}", dynamic)
            self.operators.insert(position + step, op)
            outputs.append(source)
        for reader in readers:
            reader.inputs = [source if i == tensor else i for i in reader.inputs]
        return outputs

    def _make_op(self, spec: OpSpec, source: int, base: str, dynamic: bool) -> tuple[object, int]:
        op = self.schema.OperatorT()
        op.opcodeIndex = self.opcode(spec.code)
        extra = [self.add_tensor(f"{base}/const{i}", c.shape, _tflite_type(c), c) for i, c in enumerate(spec.constants)]
        output = self.add_tensor(base, spec.out_shape, self.tensors[source].type, dynamic_batch=dynamic)
        op.inputs, op.outputs = [source, *extra], [output]
        if spec.options is not None:
            op.builtinOptionsType = getattr(self.schema.BuiltinOptions, spec.options_type)
            op.builtinOptions = spec.options
        return op, output

    def _dynamic_batch(self, tensor: int) -> bool:
        signature = self.tensors[tensor].shapeSignature
        return signature is not None and len(signature) > 0 and int(signature[0]) == -1


def _tflite_type(array: np.ndarray) -> int:
    return {np.dtype(np.float32): FLOAT32, np.dtype(np.int32): INT32, np.dtype(np.int64): INT64}[array.dtype]


def site_op(graph: TfliteGraph, site: str, sites) -> object:
    """The operator at `site`, refusing a layer that is not a site of the fault (with the valid ones listed)."""
    valid = sites(graph)
    if site not in valid:
        raise FaultNotApplicableError(f"{site} is not a site for this fault (sites: {', '.join(valid) or 'none'})")
    return graph.find_op(site)
