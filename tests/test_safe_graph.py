"""A model file is a program: hostile graphs are refused before anything in them runs (tlcourse.safe_graph)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.test_tflite import small_model
from tlcourse import export, label, litert, safe_graph

IMAGE = tf.TensorSpec([None, None, None, 3], tf.uint8, name=export.INPUT_NAME)


def probabilities(image):
    """Three made-up class probabilities from the image: the model looks like a real one to its caller."""
    means = tf.reduce_mean(tf.cast(image, tf.float32), axis=[1, 2])
    return tf.identity(tf.nn.softmax(means / 255.0), name="final_result")


def hostile_forward(kind: str, target):
    """A forward pass with the classic tensor names (``image`` in, ``final_result`` out) that also does ``kind``."""

    def effect(image):
        if kind == "write":
            return tf.io.write_file(str(target), "written by a model file")
        if kind == "read":
            return tf.strings.length(tf.io.read_file(str(target)))
        if kind == "python":
            return tf.py_function(lambda: open(target, "w").write("python ran"), [], tf.int64)
        if kind == "checkpoint":  # the saver's own operation, outside the saver
            return tf.raw_ops.SaveV2(
                prefix=str(target), tensor_names=["x"], shape_and_slices=[""], tensors=[tf.shape(image)]
            )
        raise ValueError(kind)

    def forward(image):
        with tf.control_dependencies([effect(image)]):
            return probabilities(image)

    return tf.function(forward, input_signature=[IMAGE])


def write_hostile_graph(kind: str, path, target):
    graph_def = hostile_forward(kind, target).get_concrete_function().graph.as_graph_def()
    path.write_bytes(graph_def.SerializeToString())
    return path


def write_hostile_saved_model(kind: str, path, target):
    module = tf.Module()
    module.serve = hostile_forward(kind, target)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def an_image(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(path)
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    return path


@pytest.mark.parametrize(
    ("kind", "op"), [("write", "WriteFile"), ("read", "ReadFile"), ("python", "EagerPyFunc"), ("checkpoint", "SaveV2")]
)
@pytest.mark.parametrize("form", ["frozen graph", "SavedModel"])
def test_label_image_refuses_a_hostile_model_before_running_it(tmp_path, capsys, kind, op, form):
    target = tmp_path / "secret.txt"
    if kind == "read":
        target.write_text("someone else's file")
    write = write_hostile_graph if form == "frozen graph" else write_hostile_saved_model
    model = write(kind, tmp_path / ("model.pb" if form == "frozen graph" else "saved_model"), target)
    before = sorted(tmp_path.rglob("*"))
    image = an_image(tmp_path)

    with pytest.raises(safe_graph.UnsafeModelError, match=rf"operation '{op}' .* is not one that labelling"):
        label.load_classifier(model)
    status = label.main([str(image), f"--graph={model}", f"--labels={tmp_path / 'labels.txt'}"])
    err = capsys.readouterr().err
    assert status != 0 and f"operation '{op}'" in err and str(model) in err and "A model file is a program" in err
    assert sorted(tmp_path.rglob("*")) == sorted([*before, image, tmp_path / "labels.txt"]), "the model wrote a file"
    if kind == "read":
        assert target.read_text() == "someone else's file"


def test_the_courses_own_models_pass_the_check(tmp_path):
    """Frozen graph and SavedModel as retrain writes them: their saver functions may hold SaveV2, the rest may not."""
    model = small_model()
    export.write_frozen_graph(model, tmp_path / "g.pb")
    export.write_saved_model(model, tmp_path / "saved")
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 80, 3), np.uint8)
    graph, saved = label.load_classifier(tmp_path / "g.pb"), label.load_classifier(tmp_path / "saved")
    np.testing.assert_allclose(graph(images), saved(images), atol=1e-5)


def test_a_saver_that_names_the_serving_function_gains_nothing(tmp_path):
    """Saver functions may hold SaveV2, but not a function the loader runs, even if the saver names it too."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = write_hostile_saved_model("checkpoint", tmp_path / "saved", tmp_path / "ckpt")
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    meta_graph = proto.meta_graphs[0]
    every_caller = [node.name for node in meta_graph.graph_def.node if node.attr["f"].func.name]
    assert len(every_caller) == 3  # the serving signature, the saver's save and restore
    run = set(meta_graph.object_graph_def.concrete_functions)
    with pytest.raises(safe_graph.UnsafeModelError, match=r"'SaveV2' .*in function '__inference_forward"):
        safe_graph.check_graph_def(meta_graph.graph_def, path, safe_graph.SAVED_MODEL_GRAPH_OPS, every_caller, run)
    safe_graph.check_graph_def(meta_graph.graph_def, path, safe_graph.SAVED_MODEL_GRAPH_OPS, every_caller)  # unguarded


def test_the_litert_conversion_refuses_a_hostile_function(tmp_path):
    target = tmp_path / "written.txt"
    function = hostile_forward("write", target)
    with pytest.raises(safe_graph.UnsafeModelError, match="operation 'WriteFile'.*in the main graph"):
        litert.LiteRTNetwork(function, source="hostile.keras")
    with pytest.raises(safe_graph.UnsafeModelError, match="^hostile.keras: refused"):
        litert.LiteRTNetwork(function, tmp_path / "kept.litert", source="hostile.keras")
    assert sorted(tmp_path.iterdir()) == []


def test_a_tensorflow_1_saved_model_is_refused(tmp_path):
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    (tmp_path / "saved_model.pb").write_bytes(
        saved_model_pb2.SavedModel(meta_graphs=[meta_graph_pb2.MetaGraphDef()]).SerializeToString()
    )
    with pytest.raises(safe_graph.UnsafeModelError, match="TensorFlow 1 SavedModel"):
        safe_graph.check_saved_model(tmp_path)
