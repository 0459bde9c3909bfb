"""TensorFlow Lite (LiteRT) models for phones: a fixed-size uint8 input, float or full-integer int8.

The course's other model files take images of any size and resize them inside the model, with an
antialiased resize (TensorFlow's ``ScaleAndTranslate``) that is neither a TFLite builtin nor a
Flex op. A phone model takes a fixed input instead, so the resize moves out of the model into
one function, ``resize_for_model``, that ``label_image.py``, the lesson and the benchmark all use
(an app does the same step with its own image library). What stays inside is cheap: the cast to
float and ``(x - offset) / scale``.

- Input: ``uint8`` RGB ``[1, size, size, 3]`` (``size`` is the backbone's: 224 for
  EfficientNet-Lite0, 260 for Lite2, 299 for Inception-v3); the batch dimension may be resized.
- Output: the class probabilities, in the order of the labels file. The float model returns
  ``float32``; the int8 model returns ``uint8`` with ``probability = scale * (q - zero_point)``
  (read from the output's quantization parameters; ``TFLiteClassifier`` does it for you).
- ``quantization="int8"``: weights and activations in 8-bit integers, input and output ``uint8``
  (what microcontrollers and NPUs need), calibrated on a representative set of training images.

Running them: ``TFLiteClassifier`` uses the maintained LiteRT runtime (PyPI ``ai-edge-litert``,
module ``ai_edge_litert.interpreter``, wheels for Linux, macOS and Windows), because
``tf.lite.Interpreter`` is deprecated and scheduled for removal from TensorFlow. LiteRT runs only
its built-in operations (no TensorFlow "Flex" ones, which can read and write files).

Taught in ``notebooks/13_deploy_to_phone.ipynb``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from tlcourse import litert
from tlcourse.errors import ModelFileError, TLCourseError
from tlcourse.preprocessing import Preprocessing, centre_square, numpy_fixed_input
from tlcourse.quiet import quiet

QUANTIZATIONS = ("float32", "int8")
CALIBRATION_IMAGES = 100  # TensorFlow's guidance: a few hundred at most; 100 calibrates a small head well
_PIL_METHODS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class TFLiteExportError(TLCourseError, ValueError):
    """A TFLite export that cannot be made as asked; the message says what to change."""


def model_preprocessing(model) -> Preprocessing:
    """The ``Preprocessing`` (input size, crop, resize method, scaling) inside a model the course exported."""
    try:
        return model.get_layer("preprocessing").preprocessing
    except ValueError:
        raise TFLiteExportError(
            "the model has no 'preprocessing' layer; export a model made by retrain.py or Backbone.exported_classifier"
        ) from None


def resize_for_model(images, preprocessing: Preprocessing) -> np.ndarray:
    """Images of any size -> the fixed ``[size, size, 3]`` uint8 input of a TFLite model.

    ``images``: one uint8 RGB image ``[height, width, 3]`` or a batch ``[N, height, width, 3]``.
    Exactly the course's in-model preprocessing (centre crop, antialiased resize), computed with
    numpy (``tlcourse.preprocessing``: no TensorFlow needed), without the final scaling, rounded
    to uint8: so the model's input moves by at most half a pixel level (the lesson measures it).
    """
    images = np.asarray(images)
    if images.ndim == 3:
        return numpy_fixed_input(images, preprocessing)
    return np.stack([numpy_fixed_input(image, preprocessing) for image in images])


def resize_with_pillow(image: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """What a typical app does instead: the same centre square, then its image library's bicubic resize.

    Not used by the course's tools; the lesson measures how far it moves the model's input and answers.
    """
    crop = Image.fromarray(centre_square(np.asarray(image, dtype=np.uint8), preprocessing))
    size = (preprocessing.size, preprocessing.size)
    return np.asarray(crop.resize(size, _PIL_METHODS.get(preprocessing.method, Image.Resampling.BICUBIC)))


def balanced_indices(labels, num_samples: int) -> list[int]:
    """Up to ``num_samples`` indices taking each label in turn (first images of each label first)."""
    by_label: dict = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    queues = [list(reversed(indices)) for indices in by_label.values()]
    chosen: list[int] = []
    while len(chosen) < num_samples and any(queues):
        for queue in queues:
            if queue and len(chosen) < num_samples:
                chosen.append(queue.pop())
    return chosen


def representative_dataset(images, labels, num_samples: int) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Calibration data for int8 conversion (the lesson's exercise; this is the package's own answer).

    A function that yields ``[float32 array [1, size, size, 3]]`` (raw 0-255 pixels, the float
    model's input) for up to ``num_samples`` of ``images``, taking every label in turn.
    """
    images = np.asarray(images)
    chosen = balanced_indices(list(labels), num_samples)

    def generate():
        for index in chosen:
            yield [images[index][None].astype(np.float32)]

    return generate


def _function(model, quantization: str):
    """The model as a ``tf.function`` over a fixed-size batch: uint8 in (float: 0-255 for int8)."""
    import tensorflow as tf

    from tlcourse import export

    preprocessing = model_preprocessing(model)
    _, classifier = export.split(model)
    size = preprocessing.size
    dtype = tf.uint8 if quantization == "float32" else tf.float32  # the int8 converter quantizes a float input

    def run(image):
        pixels = tf.cast(image, tf.float32)
        return {"probabilities": classifier((pixels - preprocessing.offset) / preprocessing.scale, training=False)}

    function = tf.function(run, input_signature=[tf.TensorSpec([None, size, size, 3], dtype, name="image")])
    return function


def convert(model, quantization: str = "float32", representative_data: Callable | None = None) -> bytes:
    """The TFLite flatbuffer of a model the course exported (``Backbone.exported_classifier``), as bytes.

    ``quantization="int8"`` needs ``representative_data``: a function yielding calibration inputs
    (see ``representative_dataset``); the result takes and returns ``uint8``.
    """
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise TFLiteExportError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {quantization!r}")
    if quantization == "int8" and representative_data is None:
        raise TFLiteExportError(
            "int8 quantization needs representative images to calibrate on: pass representative_data "
            "(e.g. tlcourse.tflite.representative_dataset(images, labels, 100)); retrain.py uses training images"
        )
    function = _function(model, quantization)
    converter = litert.converter(function, "the model being converted to TFLite")
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    with quiet():
        return converter.convert()


def keras_on_fixed_input(model) -> Callable[[np.ndarray], np.ndarray]:
    """The Keras model as its TFLite files see it: fixed-size uint8 images ``[N, size, size, 3]`` -> probabilities.

    The reference for a converted model (same input, same network). Calling the whole Keras model
    on a fixed-size image would crop and resize it once more.
    """
    import tensorflow as tf

    from tlcourse import export

    preprocessing = model_preprocessing(model)
    _, network = export.split(model)

    @tf.function(reduce_retracing=True)
    def run(images):
        pixels = tf.cast(images, tf.float32)
        return network((pixels - preprocessing.offset) / preprocessing.scale, training=False)

    return lambda images: run(tf.constant(np.asarray(images, dtype=np.uint8))).numpy()


def write_tflite(
    model, path: str | Path, quantization: str = "float32", representative_data=None, labels: list[str] | None = None
) -> None:
    """Write ``convert(...)`` to ``path``, with its TFLite metadata (``tlcourse.tflite_metadata``).

    The metadata gives the input's size, pixel format and preprocessing, the output's meaning and,
    with ``labels``, packs the labels file. In place; ``retrain.write_outputs`` makes it atomic.
    """
    from tlcourse.tflite_metadata import with_metadata

    content = convert(model, quantization, representative_data)
    Path(path).write_bytes(with_metadata(content, labels, model_preprocessing(model), quantization))


def calibration_images(records, preprocessing: Preprocessing, num_samples: int = CALIBRATION_IMAGES):
    """(images [N, size, size, 3] uint8, labels) of up to ``num_samples`` training records, every label in turn."""
    from tlcourse.images import ImageError, load_image

    images, labels = [], []
    for index in balanced_indices([record.label for record in records], len(records)):
        if len(images) >= num_samples:
            break
        try:
            images.append(np.asarray(resize_for_model(load_image(records[index].path), preprocessing)))
        except ImageError:
            continue
        labels.append(records[index].label)
    if not images:
        raise TFLiteExportError("no readable training images to calibrate the int8 model on")
    return np.stack(images), labels


class TFLiteClassifier:
    """A ``.tflite`` model the course wrote: ``classifier(images)``, uint8 ``[N, size, size, 3]`` -> probabilities.

    ``classifier.prepare(image)`` is ``resize_for_model`` for this model's input; ``input_size``,
    ``input_dtype`` and ``runtime`` say what an app must feed it and what ran it here. The
    preprocessing and ``labels`` come from the file's TFLite metadata (``tflite_metadata``), which
    ``write_tflite`` stores; a ``preprocessing`` given here is used instead of the metadata's. A file
    without that metadata is refused (``ModelFileError``: nothing says how to crop, resize and scale
    its images) unless ``preprocessing`` is given, and then it has no labels (None).
    """

    def __init__(self, path: str | Path, preprocessing: Preprocessing | None = None, num_threads: int | None = None):
        num_threads = num_threads or os.cpu_count() or 1
        path = Path(path)
        content = path.read_bytes()
        if content[4:8] != b"TFL3":
            raise ModelFileError(f"{path}: not a TFLite model (no TFL3 identifier); is this the file retrain wrote?")
        from tlcourse.tflite_metadata import read_metadata

        info = read_metadata(content, path)
        if preprocessing is None and info is None:
            raise ModelFileError(
                f"{path}: this .tflite file has no TFLite metadata, so nothing says how to crop, resize and scale "
                "its images. Write it with retrain.py --output_tflite (or tlcourse.tflite.write_tflite), which "
                "stores them in the file; in Python, TFLiteClassifier(path, preprocessing=...) takes them explicitly"
            )
        self.labels = info.labels if info else None
        interpreter, self.runtime = litert.interpreter_class()
        with quiet():  # LiteRT says which delegate it applies
            self._interpreter = interpreter(model_content=content, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.input_size = int(self._input["shape"][1])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.quantization = "int8" if self.output_dtype != np.float32 else "float32"
        self.preprocessing = preprocessing or info.preprocessing
        if self.preprocessing.size != self.input_size:
            raise ModelFileError(
                f"{path}: input is {self.input_size} px but the preprocessing says {self.preprocessing.size}"
            )
        self._batch = 1

    def prepare(self, images):
        """``resize_for_model`` for this model's input size (one image or a batch)."""
        return resize_for_model(images, self.preprocessing)

    def _quantize_input(self, images: np.ndarray) -> np.ndarray:
        scale, zero_point = self._input["quantization"]
        if self.input_dtype == np.uint8 and scale and (scale, zero_point) != (1.0, 0):
            values = np.round(images.astype(np.float32) / scale + zero_point)
            return np.clip(values, 0, 255).astype(np.uint8)
        return images.astype(self.input_dtype)

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected uint8 images [N, {self.input_size}, {self.input_size}, 3], got {images.shape}")
        if len(images) != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], [len(images), *images.shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = len(images)
        self._interpreter.set_tensor(self._input["index"], self._quantize_input(images))
        self._interpreter.invoke()
        output = self._interpreter.get_tensor(self._output["index"])
        if self.output_dtype != np.float32:
            scale, zero_point = self._output["quantization"]
            return (output.astype(np.float32) - zero_point) * scale
        return output.copy()


def milliseconds_per_image(classify: Callable, images: np.ndarray, batch_size: int = 1, rounds: int = 3) -> float:
    """Best of ``rounds`` passes over ``images`` in batches of ``batch_size``, in ms per image (after a warm-up)."""
    classify(images[:batch_size])
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(images), batch_size):
            classify(images[start : start + batch_size])
        best = min(best, (time.perf_counter() - started) / len(images) * 1000)
    return best
