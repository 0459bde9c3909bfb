"""The model formats the course writes and reads: one table, ``FORMATS`` (suffix, writer, description, loader).

``retrain.write_outputs`` writes each format a run asks for with its row's ``write``, and prints
what its row's ``describe`` says of the file (what goes in and out); ``label_image.py`` reads a
model with the ``load`` of its path's row (``format_of``): a folder is a SavedModel, a file is
known by its suffix, and any other file is read as a frozen graph, as the tutorial's
``--output_graph`` was, whatever its name. A new format is a new row, plus the ``RetrainConfig``
setting that names its path (``output_paths``).

A model file is a program, and no loader here runs one before it is checked: a frozen graph's and
a SavedModel's operations are checked by ``tlcourse.safe_graph`` first (a SavedModel's from its
``saved_model.pb``, before ``tf.saved_model.load`` runs any of it); a ``.keras`` file is loaded in
Keras' safe mode, which refuses Python code in it; a ``.tflite`` file is run by LiteRT, which runs
only its built-in operations. What each format holds is described in ``tlcourse.export`` and
``tlcourse.tflite``. TensorFlow is imported only by the loaders that need it: a ``.tflite`` file
is labelled without it.

Taught in ``notebooks/03_retrain.ipynb`` (the files written) and
``notebooks/05_label_new_images.ipynb`` (labelling with them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcourse import model_card, safe_graph, tflite
from tlcourse.errors import ModelFileError
from tlcourse.quiet import import_tensorflow


@dataclass
class Classifier:
    """A loaded model. ``classifier(images)``: uint8 images ``[batch, h, w, 3]`` -> probabilities.

    ``preprocess`` and ``classify_preprocessed`` are the model's own two halves, where the file
    has them (every model this course writes does): they let images of different sizes be
    preprocessed one by one and then classified in batches. Except for a ``.tflite`` model, the
    second half is a ``ModelFunction``, which LiteRT can convert.
    """

    classify: Callable
    preprocess: Callable | None = None
    classify_preprocessed: Callable | None = None

    def __call__(self, images) -> np.ndarray:
        return self.classify(images)


class ModelFunction:
    """One TensorFlow function of a loaded model: called on a batch, or converted by LiteRT.

    ``make`` builds the concrete function the first time it is needed (pruning a frozen graph
    takes about half a second, and labelling a folder whose LiteRT conversion is kept never needs
    the network half); ``owner`` keeps alive what the function reads (a SavedModel's variables).
    """

    def __init__(self, make: Callable, owner: object = None):
        self._make, self._owner = make, owner

    @functools.cached_property
    def concrete(self):
        import tensorflow as tf

        with tf.init_scope():  # made outside any function being traced (a tf.data map calls ``preprocess``)
            return self._make()

    def get_concrete_function(self):  # what ``litert`` converts
        return self.concrete

    def __call__(self, images):
        import tensorflow as tf

        result = self.concrete(tf.convert_to_tensor(images))
        return next(iter(result.values())) if isinstance(result, dict) else result  # a signature: its one output


@dataclass
class LiteRTLabeller:
    """Labelling without TensorFlow: ``prepare`` (one uint8 image -> the network's input), ``classify`` (a batch).

    ``labels``: those packed in a .tflite file's metadata, if any.
    """

    prepare: Callable
    classify: Callable
    labels: list[str] | None = None


@dataclass(frozen=True)
class WriteOptions:
    """What the writers take besides the model and the path; each uses those it needs."""

    final_tensor_name: str = "final_result"  # the output of a frozen graph and of a SavedModel's signature
    class_names: list[str] | None = None  # packed in a .tflite file's metadata
    quantization: str = "float32"  # of a .tflite file (``tflite.QUANTIZATIONS``)
    representative_data: Callable | None = None  # what an int8 .tflite file is calibrated on


@dataclass(frozen=True)
class ModelFormat:
    """One row of ``FORMATS``: how a model is written to a path of this format, described, and read back."""

    name: str  # its key in ``output_paths`` and ``FORMATS``
    suffix: str  # of its file; "" for a folder
    write: Callable  # (Keras model, path, WriteOptions) -> None, in place (``retrain.write_outputs`` makes it atomic)
    describe: Callable  # (Keras model, path, WriteOptions) -> what ``write`` wrote there, for "wrote ..." lines
    load: Callable  # (path, final_tensor_name) -> Classifier, the file checked first where it holds operations
    labeller: Callable | None = None  # (path) -> LiteRTLabeller, if a file of it is labelled without TensorFlow

    @property
    def is_folder(self) -> bool:
        return not self.suffix


def format_of(path: str | Path) -> ModelFormat:
    """The format of the model at ``path``: a folder's, a suffix's, else a frozen graph's (any other file name)."""
    path = Path(path)
    if path.is_dir():
        return SAVED_MODEL
    files = {model_format.suffix: model_format for model_format in FORMATS.values() if not model_format.is_folder}
    return files.get(path.suffix, GRAPH)


def load(path: Path, final_tensor_name: str = "final_result") -> Classifier:
    """The model at ``path``, by the loader of its format (``label.load_classifier`` names the file if that fails)."""
    return format_of(path).load(path, final_tensor_name)


def _tensorflow():
    """TensorFlow (without its start-up notes), with the preprocessing layer that .keras models hold registered."""
    import tlcourse.backbones  # noqa: F401  (registers the preprocessing layer)

    return import_tensorflow()


_ANY_SIZE = "uint8 [batch, height, width, 3]"  # the images every model but a .tflite one takes, resized inside


def _write_graph(model, path: Path, options: WriteOptions) -> None:
    from tlcourse import export

    export.write_frozen_graph(model, path, options.final_tensor_name)


def _describe_graph(model, path: Path, options: WriteOptions) -> str:
    from tlcourse import export

    return f"{path} (frozen graph: input '{export.INPUT_NAME}:0' {_ANY_SIZE}, output '{options.final_tensor_name}:0')"


def _load_graph(path: Path, final_tensor_name: str) -> Classifier:
    tf = _tensorflow()
    from tlcourse import export

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as error:
        raise ModelFileError(f"{path}: not a TensorFlow GraphDef ({error}); is this the file retrain wrote?") from None
    safe_graph.check_graph_def(graph_def, path)
    names = {node.name for node in graph_def.node}
    if export.INPUT_NAME not in names:
        raise ModelFileError(f"{path}: this graph has no input named {export.INPUT_NAME!r}; is it one retrain wrote?")
    if final_tensor_name not in names:
        raise ModelFileError(f"{path}: --output_layer={final_tensor_name} names no tensor in this graph")
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])

    def pruned(feeds: str, fetches: str) -> ModelFunction:  # the part of the graph from ``feeds`` to ``fetches``
        return ModelFunction(lambda: wrapped.prune(feeds=f"{feeds}:0", fetches=f"{fetches}:0"))

    whole = pruned(export.INPUT_NAME, final_tensor_name)
    classifier = Classifier(lambda images: whole(images).numpy())
    if export.PREPROCESSED_NAME in names:  # older graphs run one image at a time
        classifier.preprocess = pruned(export.INPUT_NAME, export.PREPROCESSED_NAME)
        classifier.classify_preprocessed = pruned(export.PREPROCESSED_NAME, final_tensor_name)
    return classifier


def _write_keras(model, path: Path, options: WriteOptions) -> None:
    model.save(path)


def _describe_keras(model, path: Path, options: WriteOptions) -> str:
    return f"{path} (Keras model: input {_ANY_SIZE}, output the probabilities)"


def _load_keras(path: Path, final_tensor_name: str) -> Classifier:
    tf = _tensorflow()
    import keras

    from tlcourse import export

    model = keras.models.load_model(path, safe_mode=True)  # safe mode: Python code in the file is refused
    classifier = Classifier(lambda images: model(images, training=False).numpy())
    if "preprocessing" in [layer.name for layer in model.layers]:
        preprocessing, network = export.split(model)
        classifier.preprocess = preprocessing
        size = preprocessing.preprocessing.size
        spec = tf.TensorSpec([None, size, size, 3], tf.float32)
        run = tf.function(lambda images: network(images, training=False), input_signature=[spec])
        classifier.classify_preprocessed = ModelFunction(run.get_concrete_function)
    return classifier


def _write_saved_model(model, path: Path, options: WriteOptions) -> None:
    from tlcourse import export

    export.write_saved_model(model, path, options.final_tensor_name)


def _describe_saved_model(model, path: Path, options: WriteOptions) -> str:
    from tlcourse import export

    return (
        f"{path} (SavedModel: signature 'serving_default', input '{export.INPUT_NAME}' {_ANY_SIZE}, "
        f"output '{options.final_tensor_name}')"
    )


def _load_saved_model(path: Path, final_tensor_name: str) -> Classifier:
    tf = _tensorflow()
    safe_graph.check_saved_model(path)  # before loading, which runs some of it
    loaded = tf.saved_model.load(str(path))
    signatures = loaded.signatures
    serve = ModelFunction(lambda: signatures["serving_default"], loaded)
    classifier = Classifier(lambda images: serve(images).numpy())
    if "preprocess" in signatures and "classify_preprocessed" in signatures:
        classifier.preprocess = ModelFunction(lambda: signatures["preprocess"], loaded)
        classifier.classify_preprocessed = ModelFunction(lambda: signatures["classify_preprocessed"], loaded)
    return classifier


def _write_tflite(model, path: Path, options: WriteOptions) -> None:
    tflite.write_tflite(model, path, options.quantization, options.representative_data, options.class_names)


def _describe_tflite(model, path: Path, options: WriteOptions) -> str:
    size = tflite.model_preprocessing(model).size
    kind = "full-integer int8, uint8 in and out" if options.quantization == "int8" else "float32, uint8 in"
    return f"{path} (TFLite {kind}: input uint8 RGB [1, {size}, {size}, 3], resized outside)"


def _load_tflite(path: Path, final_tensor_name: str) -> Classifier:
    """Through LiteRT; the fixed-size input is made outside the model, by the preprocessing in its metadata."""
    model = tflite.TFLiteClassifier(path)
    return Classifier(classify=lambda images: model(model.prepare(images)))


def _tflite_labeller(path: Path) -> LiteRTLabeller:
    model = tflite.TFLiteClassifier(path)
    return LiteRTLabeller(model.prepare, model, model.labels)


GRAPH = ModelFormat("graph", ".pb", _write_graph, _describe_graph, _load_graph)
KERAS = ModelFormat("keras", ".keras", _write_keras, _describe_keras, _load_keras)
SAVED_MODEL = ModelFormat("saved_model", "", _write_saved_model, _describe_saved_model, _load_saved_model)
TFLITE = ModelFormat("tflite", ".tflite", _write_tflite, _describe_tflite, _load_tflite, _tflite_labeller)
FORMATS = {model_format.name: model_format for model_format in (GRAPH, KERAS, SAVED_MODEL, TFLITE)}


def output_paths(output_graph, output_labels, saved_model_dir="", output_tflite="") -> dict[str, Path]:
    """The files ``retrain`` writes: graph, keras, labels, report, model card, and the other models asked for.

    Every file name beside ``output_graph`` is made here, once (``capstone.model_paths`` asks too).
    """
    graph = Path(output_graph)
    asked = {"saved_model": saved_model_dir, "tflite": output_tflite}
    return {
        "graph": graph,
        "keras": graph.with_suffix(KERAS.suffix),
        "labels": Path(output_labels),
        "report": graph.with_suffix(".report.json"),
        "model_card": model_card.card_path(graph),
        **{name: Path(path) for name, path in asked.items() if path},
    }
