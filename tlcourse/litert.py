"""The LiteRT engine: a TensorFlow function converted once, kept on disk, and run by LiteRT's CPU kernels.

What runs a network fast on a CPU (``hardware.default_engine``): ``Backbone.bottlenecks`` caches
through it, and ``label_image.py`` labels a folder through it. ``converter`` turns a
``tf.function`` into a TFLite converter with its weights as constants, after
``tlcourse.safe_graph`` has checked its graph; ``tlcourse.tflite`` uses it for the phone models it
writes, and ``LiteRTNetwork`` for the conversions it keeps (``*.litert`` files, made again when
``LITERT_VERSION`` changes or the file is damaged). LiteRT (PyPI ``ai-edge-litert``) runs only its
built-in operations, no TensorFlow ones, and starts in a fraction of a second without TensorFlow.

Taught in ``notebooks/02_cache_bottlenecks.ipynb`` (the engine) and
``notebooks/13_deploy_to_phone.ipynb`` (the phone model it also runs).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from tlcourse.atomic import atomic_path
from tlcourse.quiet import quiet

LITERT_VERSION = 1  # bump when the conversion to LiteRT changes: kept conversions are then made again
KEPT_MAGIC = b"TLLR\x00\x01\x00\x00"  # a kept LiteRT network: magic, CRC-32 of the flatbuffer, flatbuffer


def interpreter_class():
    """``(Interpreter class, runtime name)``: LiteRT's (imported here: it starts in a fraction of a second)."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter, "ai-edge-litert"


def converter(function, source):
    """A TFLite converter for a ``tf.function`` with an input signature (or a concrete function), weights as constants.

    Keras 3 variables are not found by the converter, which would keep them as resource variables
    (that the int8 calibrator cannot read, and that come out empty without it). The frozen graph
    is checked by ``tlcourse.safe_graph`` first (``source`` names the model in its error): the
    converter runs parts of it (constant folding, int8 calibration), and LiteRT runs the result.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from tlcourse import safe_graph

    if not isinstance(function, tf.types.experimental.ConcreteFunction):
        function = function.get_concrete_function()
    frozen = convert_variables_to_constants_v2(function)
    graph_def = frozen.graph.as_graph_def()
    safe_graph.check_graph_def(graph_def, source)
    if _has_bfloat16(graph_def):  # LiteRT has no bfloat16 kernels: convert a float32 copy
        feeds, fetches = [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]
        graph_def = _in_float32(graph_def)
        imported = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        frozen = imported.prune(feeds=feeds, fetches=fetches)
    with quiet():  # "Please consider providing the trackable_obj argument": there are no variables left to track
        return tf.lite.TFLiteConverter.from_concrete_functions([frozen])


def _nodes(graph_def):
    """Every node of a GraphDef, those of its function library included."""
    return [*graph_def.node, *(node for function in graph_def.library.function for node in function.node_def)]


def _has_bfloat16(graph_def) -> bool:
    from tensorflow.core.framework import types_pb2

    bfloat16 = types_pb2.DT_BFLOAT16
    return any(
        attr.type == bfloat16 or bfloat16 in attr.list.type or attr.tensor.dtype == bfloat16
        for node in _nodes(graph_def)
        for attr in node.attr.values()
    )


def _in_float32(graph_def):
    """A copy of a frozen graph computing in float32 where it computed in bfloat16.

    A model trained under Keras' ``mixed_bfloat16`` policy keeps float32 weights and casts them to
    bfloat16 where they are used; here every bfloat16 type becomes float32 (the casts then change
    nothing) and every bfloat16 constant is widened to float32, exactly. The answers are the
    float32 network's with the trained weights: they agree with the bfloat16 model's to about its
    rounding (``tests/test_tflite.py`` measures it).
    """
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    bfloat16, float32 = types_pb2.DT_BFLOAT16, types_pb2.DT_FLOAT
    copy = tf.compat.v1.GraphDef()
    copy.CopyFrom(graph_def)
    for node in _nodes(copy):
        for attr in node.attr.values():
            if attr.type == bfloat16:
                attr.type = float32
            for index, kind in enumerate(attr.list.type):
                if kind == bfloat16:
                    attr.list.type[index] = float32
            if attr.HasField("tensor") and attr.tensor.dtype == bfloat16:
                attr.tensor.CopyFrom(tf.make_tensor_proto(tf.make_ndarray(attr.tensor).astype(np.float32)))
    for function in copy.library.function:
        for argument in [*function.signature.input_arg, *function.signature.output_arg]:
            if argument.type == bfloat16:
                argument.type = float32
    return copy


class LiteRTNetwork:
    """A TensorFlow function of one float32 batch run by LiteRT (XNNPACK kernels), usually faster on a CPU.

    The engine behind ``Backbone.bottlenecks`` (preprocessed images -> bottlenecks) and behind
    labelling a folder (preprocessed images -> probabilities). ``function``: a ``tf.function`` with
    an input signature, or a concrete function; None to load ``kept`` only. Converted once
    (seconds) and kept at ``kept`` (written atomically, with a CRC-32: a damaged file is made
    again), so later runs only load it (in a fraction of a second, without TensorFlow). ``source``
    names the model in the error if ``tlcourse.safe_graph`` refuses its graph. Any batch size; one
    call at a time; ``input_size`` is the side of the images it takes.
    """

    def __init__(self, function, kept: Path | None = None, num_threads: int | None = None, source="the network"):
        content = read_kept(kept) if kept is not None else None
        if content is None:
            with quiet():
                content = converter(function, source).convert()
            if kept is not None:
                with atomic_path(kept, keep_suffix=True) as temporary:
                    temporary.write_bytes(KEPT_MAGIC + zlib.crc32(content).to_bytes(4, "little") + content)
        interpreter, self.runtime = interpreter_class()
        if num_threads is None:  # the cores this process may use
            num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        with quiet():
            self._interpreter = interpreter(model_content=content, num_threads=num_threads)
        details = self._interpreter.get_input_details()[0]
        self._input, self.input_size = details["index"], int(details["shape"][1])
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, images.shape)
            with quiet():  # LiteRT says which delegate it applies
                self._interpreter.allocate_tensors()
            self._shape = images.shape
        self._interpreter.set_tensor(self._input, images)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()


def read_kept(path: Path) -> bytes | None:
    """The flatbuffer kept at ``path``, or None if it is missing or damaged."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    header = len(KEPT_MAGIC) + 4
    content = data[header:]
    crc = int.from_bytes(data[len(KEPT_MAGIC) : header], "little")
    if data[: len(KEPT_MAGIC)] != KEPT_MAGIC or crc != zlib.crc32(content):
        return None
    return content
