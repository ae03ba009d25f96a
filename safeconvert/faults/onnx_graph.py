"""Small ONNX graph-editing toolkit for fault injection: lookups, constants, attributes, inserting and removing
nodes while the graph stays topologically sorted and valid.

Faults are planted the way a converter would have produced them: an edited attribute or initializer keeps
its name, and an inserted op takes over the name of the tensor it follows, so the faulty graph looks like
converter output rather than like an edited copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .fault import FaultNotApplicableError

# An inserted chain of nodes: given the tensor it reads and the tensor it must write, the nodes in order.
Builder = Callable[[str, str], list]


class OnnxGraph:
    """An ONNX model being edited, with producer/consumer lookups computed on demand."""

    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self._taken = {n.name for n in self.graph.node} | {o for n in self.graph.node for o in n.output}
        self._taken |= {t.name for t in self.graph.initializer} | {i.name for i in self.graph.input}

    @classmethod
    def load(cls, path: Path) -> "OnnxGraph":
        import onnx

        return cls(onnx.load(str(path)))

    def copy(self) -> "OnnxGraph":
        import onnx

        clone = onnx.ModelProto()
        clone.CopyFrom(self.model)
        return OnnxGraph(clone)

    # --- lookups -------------------------------------------------------------------------------------

    @staticmethod
    def node_id(node) -> str:
        """A node's name, or its first output when the exporter left it unnamed."""
        return node.name or node.output[0]

    def find(self, ident: str):
        for node in self.graph.node:
            if ident in (node.name, node.output[0] if node.output else None):
                return node
        raise FaultNotApplicableError(f"no node named {ident!r} in the ONNX graph")

    def nodes(self, *op_types: str) -> list:
        return [n for n in self.graph.node if n.op_type in op_types]

    def consumers(self, tensor: str) -> list:
        return [n for n in self.graph.node if tensor in n.input]

    def producer(self, tensor: str):
        return next((n for n in self.graph.node if tensor in n.output), None)

    def input_names(self) -> list[str]:
        """Real graph inputs (old exporters also list initializers as inputs)."""
        initializers = {t.name for t in self.graph.initializer}
        return [i.name for i in self.graph.input if i.name not in initializers]

    def input_shape(self, name: str) -> tuple[int | None, ...]:
        value = next(i for i in self.graph.input if i.name == name)
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)

    def opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 1)

    def is_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.graph.output)

    # --- constants -----------------------------------------------------------------------------------

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of an initializer or Constant-node output, None for computed tensors."""
        from onnx import numpy_helper

        for init in self.graph.initializer:
            if init.name == tensor:
                return numpy_helper.to_array(init)
        node = self.producer(tensor)
        if node is not None and node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            return None if value is None else numpy_helper.to_array(value.t)
        return None

    def initializer(self, tensor: str):
        return next((t for t in self.graph.initializer if t.name == tensor), None)

    def set_input_constant(self, node, index: int, array: np.ndarray) -> str:
        """Give `node` a new value for its constant input `index`.

        The initializer is rewritten in place (name kept) when only this node reads it; otherwise the node gets
        a private copy, so the fault stays in one layer.
        """
        from onnx import numpy_helper

        name = node.input[index]
        existing = self.initializer(name)
        if existing is not None and len(self.consumers(name)) == 1:
            existing.CopyFrom(numpy_helper.from_array(array, name))
            return name
        new_name = self.unique(name)
        self.graph.initializer.append(numpy_helper.from_array(array, new_name))
        node.input[index] = new_name
        return new_name

    def add_constant(self, base: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.unique(base)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def unique(self, base: str) -> str:
        name, index = base, 1
        while name in self._taken:
            name, index = f"{base}_{index}", index + 1
        self._taken.add(name)
        return name

    # --- attributes ----------------------------------------------------------------------------------

    @staticmethod
    def attr(node, name: str, default: Any = None) -> Any:
        import onnx

        found = next((a for a in node.attribute if a.name == name), None)
        if found is None:
            return default
        value = onnx.helper.get_attribute_value(found)
        return value.decode() if isinstance(value, bytes) else value

    @staticmethod
    def set_attr(node, name: str, value: Any) -> None:
        import onnx

        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept + [onnx.helper.make_attribute(name, value)])

    # --- structure edits -----------------------------------------------------------------------------

    def insert_after(self, tensor: str, build: Builder) -> list:
        """Insert a chain of nodes on every use of `tensor` (a graph input or a node output).

        After a node output the producer's output is renamed and the chain writes the old name, so consumers
        and graph outputs need no rewiring; after a graph input (whose name is the model's interface) the
        consumers are rewired to the chain's output instead.
        """
        producer = self.producer(tensor)
        if producer is None:
            target = self.unique(f"{tensor}_in")
            for node in self.consumers(tensor):
                _replace_input(node, tensor, target)
            chain = build(tensor, target)
            self._place(chain, 0)
        else:
            source = self.unique(f"{tensor}_pre")
            producer.output[list(producer.output).index(tensor)] = source
            chain = build(source, tensor)
            self._place(chain, list(self.graph.node).index(producer) + 1)
        self.drop_value_info([tensor])
        return chain

    def insert_before(self, node, index: int, build: Builder) -> list:
        """Insert a chain on one edge only: the `index`-th input of `node`."""
        source = node.input[index]
        target = self.unique(f"{source}_{node.op_type.lower()}_in")
        chain = build(source, target)
        node.input[index] = target
        self._place(chain, list(self.graph.node).index(node))
        return chain

    def remove(self, node) -> None:
        """Remove a single-input op, its consumers reading its input instead (an Identity if it feeds a graph output)."""
        out, source = node.output[0], node.input[0]
        if self.is_output(out):
            node.op_type = "Identity"
            del node.input[1:]
            del node.attribute[:]
            return
        for consumer in self.consumers(out):
            _replace_input(consumer, out, source)
        self.graph.node.remove(node)
        self.drop_value_info([out])

    def drop_value_info(self, names: list[str] | None = None) -> None:
        """Forget recorded intermediate shapes (all when names is None) that an edit made stale."""
        kept = [v for v in self.graph.value_info if names is not None and v.name not in names]
        del self.graph.value_info[:]
        self.graph.value_info.extend(kept)

    def make_node(self, op_type: str, inputs: list[str], output: str, anchor: str, **attrs: Any):
        """A node named like exporter output: after the layer it sits next to."""
        import onnx

        return onnx.helper.make_node(op_type, inputs, [output], name=self.unique(f"{anchor}/{op_type}"), **attrs)

    def _place(self, chain: list, position: int) -> None:
        nodes = list(self.graph.node)
        nodes[position:position] = chain
        del self.graph.node[:]
        self.graph.node.extend(nodes)

    # --- shapes --------------------------------------------------------------------------------------

    def static_shapes(self) -> dict[str, tuple[int | None, ...]]:
        """Shapes ONNX shape inference finds for every tensor (None for symbolic dimensions)."""
        import onnx

        probe = self.copy()
        probe.drop_value_info()
        inferred = onnx.shape_inference.infer_shapes(probe.model)
        values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
        return {v.name: _dims(v) for v in values if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}

    def serialize(self) -> bytes:
        return self.model.SerializeToString()


def _dims(value) -> tuple[int | None, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)


def _replace_input(node, old: str, new: str) -> None:
    for index, name in enumerate(node.input):
        if name == old:
            node.input[index] = new


def site_node(graph: OnnxGraph, site: str, sites: Callable[[OnnxGraph], list[str]]):
    """The node at `site`, refusing a layer that is not a site of the fault (with the valid ones listed)."""
    valid = sites(graph)
    if site not in valid:
        raise FaultNotApplicableError(f"{site} is not a site for this fault (sites: {', '.join(valid) or 'none'})")
    return graph.find(site)
