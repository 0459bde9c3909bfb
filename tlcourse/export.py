"""Put the backbone and the retrained layer together and write the model files, atomically.

The exported model takes raw RGB images (uint8, ``[batch, height, width, 3]``, any size) and
returns class probabilities; resizing and normalisation are inside it, so whoever runs it (the
course's ``label_image.py``, TensorFlow Serving, a phone) preprocesses exactly as training did.

Formats:
- frozen graph (``.pb``, the tutorial's ``--output_graph``): input tensor ``image:0``,
  output tensor ``final_result:0`` (or ``--final_tensor_name``). Like any GraphDef it is a program:
  ``label_image.py`` checks its operations first (``tlcourse.safe_graph``).
  Between the two, ``preprocessed:0`` is the network's input: a labeller can run the model's own
  preprocessing on each image, then the network on whole batches of them.
- Keras (``.keras``, next to the graph): safe to load with ``keras.models.load_model`` in its
  default safe mode; needs ``import tlcourse`` for the preprocessing layer.
- SavedModel (``--saved_model_dir``): for TensorFlow Serving; signature ``serving_default``, and
  its two halves ``preprocess`` and ``classify_preprocessed``.

The writers here write in place; ``tlcourse.retrain.write_outputs`` calls them through the table of
formats (``tlcourse.formats``, which reads them back too) so that every file lands atomically.
Taught in ``notebooks/03_retrain.ipynb``.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tlcourse.quiet import quiet

INPUT_NAME = "image"
PREPROCESSED_NAME = "preprocessed"


def split(model: keras.Model) -> tuple[keras.layers.Layer, keras.Model]:
    """The two halves of an exported model: its preprocessing layer, and the network after it."""
    preprocessing = model.get_layer("preprocessing")
    return preprocessing, keras.Model(preprocessing.output, model.output, name="classifier")


def _serving_functions(model: keras.Model, final_tensor_name: str) -> dict:
    """``serving_default`` (uint8 images -> probabilities) and its halves, as ``tf.function``s."""
    preprocessing, classifier = split(model)
    size = preprocessing.preprocessing.size
    images = tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)

    @tf.function(input_signature=[images])
    def serve(image):
        preprocessed = tf.identity(preprocessing(image), name=PREPROCESSED_NAME)
        return {final_tensor_name: tf.identity(classifier(preprocessed, training=False), name=final_tensor_name)}

    @tf.function(input_signature=[images])
    def preprocess(image):
        return {PREPROCESSED_NAME: preprocessing(image)}

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=PREPROCESSED_NAME)])
    def classify_preprocessed(preprocessed):
        return {final_tensor_name: classifier(preprocessed, training=False)}

    return {"serving_default": serve, "preprocess": preprocess, "classify_preprocessed": classify_preprocessed}


def write_frozen_graph(model: keras.Model, path: str | Path, final_tensor_name: str = "final_result") -> None:
    """A frozen GraphDef with every weight as a constant: ``image:0`` in, ``<final_tensor_name>:0`` out."""
    concrete = _serving_functions(model, final_tensor_name)["serving_default"].get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    Path(path).write_bytes(frozen.graph.as_graph_def().SerializeToString())


def write_saved_model(model: keras.Model, directory: str | Path, final_tensor_name: str = "final_result") -> None:
    """A SavedModel whose ``serving_default`` signature takes ``image`` and returns ``final_tensor_name``."""
    module = tf.Module()
    module.model = model
    module.functions = _serving_functions(model, final_tensor_name)
    with quiet():  # "Assets written to ..."
        tf.saved_model.save(module, str(directory), signatures=dict(module.functions))
