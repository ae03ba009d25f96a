"""SavedModels that run file operations the audit could not see: inside a serialized graph held in a string
(DatasetFromGraph), and in a library function called by op name (a node whose `op` is the function's name).

Each recipe is refused with exit 2 before TensorFlow loads it, and nothing is written; plain SavedModels
(Keras-exported, TF1 builder) still pass the audit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .cli_runs import Run, run_main, two_photo_calibration
from .cli_runs import assert_refused as refused

pytestmark = pytest.mark.timeout(300)


def assert_refused(result: Run, fragment: str) -> None:
    refused(result, fragment)
    assert "--trust-model-code" in result.stderr


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    return two_photo_calibration(tmp_path_factory.mktemp("calib_audit"))


def _tf():
    from safeconvert.runners.tf_runner import quiet_tensorflow

    return quiet_tensorflow()


def _dataset_from_graph_model(directory: Path, cache_prefix: Path) -> Path:
    """A TF2 SavedModel whose serving function rebuilds a dataset from a serialized GraphDef held in a string;
    the nested graph caches to files at `cache_prefix` (a path of the model's choice)."""
    tf = _tf()
    graph = tf.data.Dataset.range(3).cache(str(cache_prefix))._as_serialized_graph().numpy()
    assert b"CacheDataset" in graph

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.ones((3, 10), np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def serve(self, x):
            empty = tf.strings.substr(tf.strings.as_string(tf.shape(x)[0]), 0, 0)  # keeps the string from folding
            variant = tf.raw_ops.DatasetFromGraph(graph_def=tf.strings.join([tf.constant(graph), empty]))
            dataset = tf.data.experimental.from_variant(variant, tf.TensorSpec([], tf.int64))
            total = dataset.reduce(tf.constant(0, tf.int64), lambda a, b: a + b)
            return {"output_0": tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.w) + 0.0 * tf.cast(total, tf.float32)}

    module = Module()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def _writer_function(marker: Path):
    tf = _tf()

    @tf.function
    def write():
        tf.io.write_file(str(marker), "written on load")
        return tf.constant(1.0)

    return write.get_concrete_function().function_def


def _called_by_op_name_tf2(directory: Path, marker: Path) -> Path:
    """A TF2 SavedModel whose serving function has a node whose op is a library function that writes `marker`."""
    tf = _tf()
    from tensorflow.core.protobuf import saved_model_pb2

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.ones((3, 10), np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def serve(self, x):
            return {"output_0": tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.w)}

    module = Module()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    proto = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
    library = proto.meta_graphs[0].graph_def.library
    writer = library.function.add()
    writer.CopyFrom(_writer_function(marker))
    serve = next(f for f in library.function if f.signature.name.startswith("__inference_serve"))
    call = serve.node_def.add()
    call.name, call.op = "call_writer", writer.signature.name
    returned = serve.ret[serve.signature.output_arg[0].name].split(":")[0]
    next(n for n in serve.node_def if n.name == returned).input.append("^call_writer")
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    return directory


def _tf1_saved_model(directory: Path, marker: Path | None = None) -> Path:
    """A TF1 SavedModel (tf.compat.v1 builder); with `marker`, its logits depend on a call by op name to a
    library function that writes `marker`."""
    tf = _tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, 8, 8, 3], name="images")
        weights = v1.get_variable("weights", initializer=tf.ones([3, 4]))
        logits = tf.matmul(tf.reduce_mean(images, axis=[1, 2]), weights, name="logits")
        signature = v1.saved_model.predict_signature_def({"images": images}, {"logits": logits})
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(directory))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()
    if marker is not None:
        from tensorflow.core.protobuf import saved_model_pb2

        proto = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
        graph_def = proto.meta_graphs[0].graph_def
        writer = graph_def.library.function.add()
        writer.CopyFrom(_writer_function(marker))
        call = graph_def.node.add()
        call.name, call.op = "call_writer", writer.signature.name
        next(n for n in graph_def.node if n.name == "logits").input.append("^call_writer")
        (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    return directory


def test_dataset_from_graph_is_refused_and_writes_nothing(tmp_path: Path, calib, capfd):
    prefix = tmp_path / "written" / "cache"
    prefix.parent.mkdir()
    model = _dataset_from_graph_model(tmp_path / "dfg", prefix)
    result = run_main(["check", str(model), str(model), "--calib", str(calib)], capfd)
    assert_refused(result, "DatasetFromGraph")
    assert not list(prefix.parent.iterdir())


def test_function_called_by_op_name_is_followed_tf2(tmp_path: Path, calib, capfd):
    marker = tmp_path / "written.txt"
    model = _called_by_op_name_tf2(tmp_path / "opname", marker)
    result = run_main(["check", str(model), str(model), "--calib", str(calib)], capfd)
    assert_refused(result, "WriteFile")
    assert not marker.exists()


def test_the_op_name_recipe_really_writes_when_called(tmp_path: Path):
    """The refusal above is not vacuous: TensorFlow does run the function called by op name."""
    marker = tmp_path / "written.txt"
    model = _called_by_op_name_tf2(tmp_path / "opname", marker)
    loaded = _tf().saved_model.load(str(model))
    loaded.signatures["serving_default"](_tf().zeros([1, 32, 32, 3]))
    assert marker.exists()


def test_function_called_by_op_name_is_followed_tf1(tmp_path: Path, calib, capfd):
    marker = tmp_path / "written.txt"
    model = _tf1_saved_model(tmp_path / "tf1_opname", marker)
    result = run_main(["check", str(model), str(model), "--calib", str(calib)], capfd)
    assert_refused(result, "WriteFile")
    assert not marker.exists()


@pytest.mark.parametrize("filename", ["", "cache_files"])
def test_dataset_cache_to_files_is_refused_in_memory_allowed(tmp_path: Path, filename: str):
    from safeconvert.safety.saved_model_audit import NeedsTrust, audit_saved_model

    tf = _tf()
    target = str(tmp_path / filename) if filename else ""

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            total = tf.data.Dataset.range(3).cache(target).reduce(tf.constant(0, tf.int64), lambda a, b: a + b)
            return {"output_0": x + tf.cast(total, tf.float32)}

    module = Module()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    if filename:
        with pytest.raises(NeedsTrust, match="CacheDataset"):
            audit_saved_model(tmp_path / "sm")
    else:
        audit_saved_model(tmp_path / "sm")


def test_plain_saved_models_still_pass(small_keras_file: Path, tmp_path: Path):
    from safeconvert.runners.tf_runner import load_keras_model
    from safeconvert.safety.saved_model_audit import audit_saved_model

    load_keras_model(small_keras_file).export(str(tmp_path / "exported"), verbose=False)
    audit_saved_model(tmp_path / "exported")
    audit_saved_model(_tf1_saved_model(tmp_path / "tf1"))
