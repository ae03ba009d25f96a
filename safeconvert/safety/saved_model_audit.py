"""Static audit of a TF SavedModel: would loading it or calling its signatures touch files or call Python?

A SavedModel stores no Python (tf.py_function bodies are not saved), but its graphs are TensorFlow programs,
and TensorFlow has operations that read and write any file (`ReadFile`, `WriteFile`, `SaveV2`, dataset and
summary writers, `PrintV2` to a file, memory-mapped constants). The audit parses saved_model.pb and follows
what `tf.saved_model.load` really runs, reading TensorFlow 2.21's loaders:

* a TF2 SavedModel (one meta graph with an object graph) runs only functions: the concrete functions of
  its objects (signatures, resource initializers) and every function they call. Its checkpoint is restored
  by TensorFlow's own Python code, never by the file's saver graph, so the saver's nodes do not run;
* a TF1 SavedModel runs graph nodes: the saver's restore op (`saver_def.restore_op_name`), the init ops
  (the init-op signature, the main_op / legacy_init_op / table_initializer collections, local variables'
  initializers), each signature's subgraph, and every node and function those depend on.

A function is called through a function-valued attribute (StatefulPartitionedCall's `f`, While's `body`) or
by a node whose op is the function's name: both are followed, in functions and in TF1 graphs.

Everything that runs is refused if it uses one of DENIED_OPS, with one exception: a TF1 restore op may read
the checkpoint (`RestoreV2`, `Restore`, `RestoreSlice`) from the saver's filename tensor, which TensorFlow
feeds with the model's own variables path. A `SaveV2` in the restore path, or a read from any other path,
is refused. The list names TF 2.21's operations that touch files, the network or Python, and those that
run a graph serialized in a tensor (`DatasetFromGraph`): what such a graph does is invisible here, so they
are refused outright. A dataset cache is allowed in memory only (its filename a constant empty string). It
is a deny-list, so a future TensorFlow with new operations of these kinds would need it extended.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import BadInputError, one_line

# What the audit refuses, in one place, by the reason it gives. A deny-list of TensorFlow 2.21's operations
# (read from its registered op list): a future TensorFlow with new operations of these kinds extends it.
FILE_OPS = frozenset({  # read or write files, or change how paths are resolved
    "SaveV2", "Save", "SaveSlices", "MergeV2Checkpoints", "RestoreV2", "Restore", "RestoreSlice",
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "PrintV2", "FileSystemSetConfiguration",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2", "WholeFileReader", "WholeFileReaderV2",
    "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "TFRecordReader",
    "TFRecordReaderV2", "LMDBReader", "IdentityReader", "IdentityReaderV2", "RecordInput",
    "GenerateVocabRemapping", "LoadAndRemapMatrix", "DecodeProtoV2", "EncodeProto", "CalibrationStatisticsSaver",
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteRawProtoSummary",
    "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
    "ImportEvent", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNumericSummary",
    "DebugNumericSummaryV2", "DebugNanCount",
})
FILE_DATASET_OPS = frozenset({  # tf.data sources and sinks backed by files
    "TextLineDataset", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "SqlDataset",
    "ExperimentalSqlDataset", "LMDBDataset", "ExperimentalLMDBDataset", "MatchingFilesDataset",
    "ExperimentalMatchingFilesDataset", "SaveDataset", "SaveDatasetV2", "LoadDataset", "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord", "SnapshotDataset", "SnapshotDatasetV2", "SnapshotDatasetReader",
    "SnapshotChunkDataset", "SnapshotNestedDatasetReader", "ListSnapshotChunksDataset", "DistributedSave",
})
NETWORK_OPS = frozenset({  # tf.data service and RPC: talk to addresses of the model's choice
    "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
    "RegisterDataset", "RegisterDatasetV2", "RpcServer", "RpcClient", "RpcServerRegister", "RpcServerStart",
    "RpcCall", "RpcCheckStatus", "RpcGetValue", "DeleteRpcFutureResource",
})
OPAQUE_GRAPH_OPS = frozenset({  # build and run a graph or iterator from serialized bytes the audit cannot follow
    "DatasetFromGraph", "DeserializeIterator",
})
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
# Dataset caches: in memory when the filename is a constant empty string, on files (at a path of the model's
# choice) otherwise. Operation -> index of its filename input.
CACHE_OPS = {"CacheDataset": 1, "CacheDatasetV2": 1}

DENIED_OPS: dict[str, str] = {
    **{op: "reads or writes files" for op in FILE_OPS | FILE_DATASET_OPS},
    **{op: "connects to network addresses" for op in NETWORK_OPS},
    **{op: "runs a graph serialized in a tensor, which cannot be audited" for op in OPAQUE_GRAPH_OPS},
    **{op: "calls Python" for op in PYTHON_OPS},
}


class NeedsTrust(Exception):
    """The SavedModel's graph can touch files or call Python; the message names the operation."""


CHECKPOINT_READS = frozenset({"RestoreV2", "Restore", "RestoreSlice"})
# Collections of VariableDefs: TF1 loading runs their initializers (Scaffold.default_local_init_op). The
# node lists of every collection (main_op, legacy_init_op, table_initializer...) are audited as well.
VARIABLE_COLLECTIONS = ("variables", "local_variables", "trainable_variables", "model_variables")


def audit_saved_model(directory: Path) -> None:
    """Raise NeedsTrust if loading the SavedModel runs a denied operation, BadInputError if it is corrupt."""
    proto = parse_saved_model(Path(directory))
    if len(proto.meta_graphs) == 1 and proto.meta_graphs[0].HasField("object_graph_def"):
        _audit_functions(proto.meta_graphs[0])  # TensorFlow's TF2 loader: objects and their functions
        return
    for meta_graph in proto.meta_graphs:  # TensorFlow's TF1 loader: graph nodes (every meta graph audited)
        _audit_tf1_graph(meta_graph)


def parse_saved_model(directory: Path):
    """The SavedModel proto TensorFlow's loader reads: saved_model.pb (a text-format one is refused)."""
    from ..runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    pb = directory / "saved_model.pb"
    if not pb.is_file():
        raise BadInputError(text_format_refusal(directory))
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BadInputError(f"{directory.name}: not a loadable SavedModel ({one_line(exc)})") from None
    return proto


def text_format_refusal(directory: Path) -> str:
    """Why a text-format SavedModel is refused (TensorFlow reads it, but only binary ones are audited here)."""
    return (f"{Path(directory).name}: a text-format SavedModel (saved_model.pbtxt) is not read by safeconvert; "
            "save it in binary form (saved_model.pb, as tf.saved_model.save writes it)")


def _audit_functions(meta_graph) -> None:
    library = {function.signature.name: function for function in meta_graph.graph_def.library.function}
    for name in sorted(_reachable(meta_graph.object_graph_def.concrete_functions, library)):
        _check_nodes(library[name].node_def, where=f"function {name}")


def _audit_tf1_graph(meta_graph) -> None:
    library = {function.signature.name: function for function in meta_graph.graph_def.library.function}
    nodes = {node.name: node for node in meta_graph.graph_def.node}
    filename = _node_name(meta_graph.saver_def.filename_tensor_name)
    running = _upstream(_tf1_load_roots(meta_graph), nodes)
    calls: set[str] = set()
    for name in sorted(running):
        node = nodes[name]
        calls |= _called(node, library)
        if node.op in CHECKPOINT_READS and node.input and _node_name(node.input[0]) == filename:
            continue  # reads the checkpoint at the path TensorFlow feeds: the model's own variables
        _check(node, nodes, where=f"the graph (node {name!r}, run when the model loads or is called)")
    for name in sorted(_reachable(calls, library)):
        _check_nodes(library[name].node_def, where=f"function {name}")


def _tf1_load_roots(meta_graph) -> set[str]:
    """Graph nodes TF1 loading and calling run: the restore op, init ops, signatures, collections."""
    from tensorflow.core.framework import variable_pb2

    roots = {meta_graph.saver_def.restore_op_name, meta_graph.saver_def.filename_tensor_name}
    for signature in meta_graph.signature_def.values():  # the init-op signature (__saved_model_init_op) among them
        roots |= {t.name for t in signature.outputs.values()} | {t.name for t in signature.inputs.values()}
    for key, collection in meta_graph.collection_def.items():
        roots |= set(collection.node_list.value)
        if key in VARIABLE_COLLECTIONS:
            for data in collection.bytes_list.value:
                variable = variable_pb2.VariableDef()
                try:
                    variable.ParseFromString(data)
                except Exception as exc:  # protobuf's DecodeError
                    raise BadInputError(f"not a loadable SavedModel (collection {key}: {one_line(exc)})") from None
                roots |= {variable.initializer_name, variable.snapshot_name, variable.variable_name}
    return {_node_name(name) for name in roots if name}


def _check_nodes(node_defs, where: str) -> None:
    scope = {node.name: node for node in node_defs}
    for node in node_defs:
        _check(node, scope, where)


def _check(node, scope: dict, where: str) -> None:
    """Refuse a denied operation; a dataset cache only when it may write files. `scope`: the nodes by name
    of the graph or function `node` is in, where its inputs are found."""
    reason = DENIED_OPS.get(node.op)
    if reason is None and node.op in CACHE_OPS and not _is_empty_string(node, CACHE_OPS[node.op], scope):
        reason = "reads or writes files (a dataset cache whose filename is not a constant empty string)"
    if reason is not None:
        raise NeedsTrust(f"{where} uses the TensorFlow operation {node.op}, which {reason}")


def _is_empty_string(node, index: int, scope: dict) -> bool:
    """Whether input `index` of `node` is a Const holding the empty string (an in-memory dataset cache)."""
    from tensorflow.core.framework import types_pb2

    if len(node.input) <= index:
        return False
    source = scope.get(_node_name(node.input[index]))
    if source is None or source.op != "Const":
        return False
    tensor = source.attr["value"].tensor
    if tensor.dtype != types_pb2.DT_STRING or any(d.size != 1 for d in tensor.tensor_shape.dim):
        return False
    return list(tensor.string_val) in ([b""], [])


def _upstream(roots: Iterable[str], nodes: dict) -> set[str]:
    """Names of `roots` and every node they read from, data or control inputs."""
    seen: set[str] = set()
    stack = [name for name in roots if name in nodes]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(i for i in map(_node_name, nodes[name].input) if i in nodes and i not in seen)
    return seen


def _called(node, library: dict) -> set[str]:
    """Functions a node calls: through its attributes (StatefulPartitionedCall's f, While's body...) and,
    when its op is the name of a library function, that function (TensorFlow runs it like an operation)."""
    names: set[str] = {node.op} if node.op in library else set()
    for value in node.attr.values():
        if value.HasField("func"):
            names.add(value.func.name)
        names |= {f.name for f in value.list.func}
    return names


def _reachable(roots: Iterable[str], library: dict) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        for node in library[name].node_def:
            stack.extend(_called(node, library))
    return seen


def _node_name(tensor: str) -> str:
    """'^node', 'node:0' and 'node:output:0' all name the node 'node'."""
    return tensor.lstrip("^").split(":", 1)[0]
