"""Static audit of a TF SavedModel: does its graph hold operations that touch files or call Python?

A SavedModel stores no Python (tf.py_function bodies are not saved), but its graphs are TensorFlow programs,
and TensorFlow has operations that read and write any file (`ReadFile`, `WriteFile`, `SaveV2`, dataset and
summary writers, `PrintV2` to a file, memory-mapped constants). They run when a signature is called, or at
load time when they sit in a resource initializer. Every SavedModel legitimately carries `SaveV2`/`RestoreV2`
in the checkpoint functions its saver uses; those are allowed only in functions reachable from the saver
alone. The audit parses saved_model.pb and refuses the file if any of DENIED_OPS is reachable otherwise.
The list names the file-system and Python-callback operations of TF 2.21; it is a deny-list, so a future
TensorFlow with new file operations would need it extended.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import BadInputError, one_line

CHECKPOINT_OPS = frozenset({"SaveV2", "Save", "SaveSlices", "MergeV2Checkpoints", "RestoreV2", "Restore",
                            "RestoreSlice"})
DENIED_OPS = CHECKPOINT_OPS | frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "PrintV2", "PyFunc", "PyFuncStateless",
    "EagerPyFunc", "InitializeTableFromTextFile", "InitializeTableFromTextFileV2", "WholeFileReader",
    "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "LMDBReader", "IdentityReader",
    "IdentityReaderV2", "TextLineDataset", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "SqlDataset",
    "ExperimentalSqlDataset", "LMDBDataset", "ExperimentalLMDBDataset", "MatchingFilesDataset",
    "ExperimentalMatchingFilesDataset", "SaveDataset", "SaveDatasetV2", "LoadDataset", "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord", "SnapshotDataset", "SnapshotDatasetV2", "CacheDataset", "CacheDatasetV2",
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteRawProtoSummary",
    "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
    "ImportEvent", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNumericSummary",
    "DebugNumericSummaryV2", "DebugNanCount", "RecordInput", "GenerateVocabRemapping", "LoadAndRemapMatrix",
    "DecodeProtoV2", "EncodeProto",
})


class NeedsTrust(Exception):
    """The SavedModel's graph can touch files or call Python; the message names the operation."""


def audit_saved_model(directory: Path) -> None:
    """Raise NeedsTrust if the SavedModel reaches a denied operation, BadInputError if it is corrupt."""
    from ..runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    pb = Path(directory) / "saved_model.pb"
    if not pb.is_file():
        return  # a text-format saved_model.pbtxt: TensorFlow's own loader reports what it makes of it
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BadInputError(f"{Path(directory).name}: not a loadable SavedModel ({one_line(exc)})") from None
    for meta_graph in proto.meta_graphs:
        _audit_meta_graph(meta_graph)


def _audit_meta_graph(meta_graph) -> None:
    library = {function.signature.name: function for function in meta_graph.graph_def.library.function}
    saver = {_node_name(meta_graph.saver_def.save_tensor_name), meta_graph.saver_def.restore_op_name} - {""}
    nodes = {node.name: node for node in meta_graph.graph_def.node}
    saver_nodes = _upstream(saver, nodes) - _upstream(_other_roots(meta_graph, nodes, saver), nodes)
    saver_calls = {f for name in saver_nodes for f in _called(nodes[name])}
    other_calls = set(meta_graph.object_graph_def.concrete_functions)
    for name, node in nodes.items():
        if name not in saver_nodes:
            other_calls |= _called(node)
            _check(node.op, allowed=frozenset(), where="the graph")
        else:
            _check(node.op, allowed=CHECKPOINT_OPS, where="the saver")
    exempt = _reachable(saver_calls, library) - _reachable(other_calls, library)
    for name, function in library.items():
        allowed = CHECKPOINT_OPS if name in exempt else frozenset()
        for node in function.node_def:
            _check(node.op, allowed, where=f"function {name}")


def _check(op: str, allowed: frozenset, where: str) -> None:
    if op in DENIED_OPS and op not in allowed:
        raise NeedsTrust(f"{where} uses the TensorFlow operation {op}, which reads or writes files or calls Python")


def _other_roots(meta_graph, nodes: dict, saver: set[str]) -> set[str]:
    """Graph nodes that run outside saving: signature outputs, init ops and every other sink."""
    roots = {_node_name(t.name) for s in meta_graph.signature_def.values() for t in s.outputs.values()}
    for collection in meta_graph.collection_def.values():
        roots |= {_node_name(v) for v in collection.node_list.value}
    consumed = {_node_name(i) for node in nodes.values() for i in node.input}
    roots |= {name for name in nodes if name not in consumed and name not in saver}
    return roots & set(nodes)


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


def _called(node) -> set[str]:
    """Functions a node calls through its attributes (StatefulPartitionedCall's f, While's body...)."""
    names: set[str] = set()
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
            stack.extend(_called(node))
    return seen


def _node_name(tensor: str) -> str:
    """'^node', 'node:0' and 'node:output:0' all name the node 'node'."""
    return tensor.lstrip("^").split(":", 1)[0]
