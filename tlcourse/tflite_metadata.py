"""TFLite metadata: the labels, the input's size, pixel format and normalisation, inside the .tflite file.

Apps built on LiteRT and MediaPipe's tasks read TFLite metadata (what Model Maker writes): with it,
an app needs no separate labels file and no knowledge of the input format from our README. The
usual writer, ``tflite-support``, has no wheel past Python 3.11 and pins an old protobuf, so the
course writes the metadata itself, as the standard schema defines it (``metadata_schema.fbs`` in
tensorflow/tflite-support, file identifier ``M001``), with the ``flatbuffers`` runtime:

- a ``ModelMetadata`` flatbuffer, stored in one of the model's buffers and named by a
  ``Model.metadata`` entry ``TFLITE_METADATA`` (as ``tflite_support.metadata.MetadataPopulator``);
- the associated files (``labels.txt``, one label per line in output order, and
  ``preprocessing.json``, the course's crop and resize) appended to the model as a zip archive.

The input tensor says: an RGB image (``ImageProperties``, its size), raw pixel values 0-255
(``NormalizationOptions`` mean 0, std 1, because the model scales them itself), and the crop and
resize in ``preprocessing.json``. The output tensor: class probabilities (``FeatureProperties``,
stats 0 to 1), the labels file as ``TENSOR_AXIS_LABELS``, and for an int8 model how to read its
uint8 values. ``read_metadata`` reads it all back without TensorFlow. Written by
``tflite.write_tflite`` (the model of ``notebooks/13_deploy_to_phone.ipynb``), which does not show it yet.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from dataclasses import dataclass

import flatbuffers
import numpy as np
from flatbuffers import number_types, table

from tlcourse.errors import TLCourseError
from tlcourse.preprocessing import Preprocessing

METADATA_NAME = "TFLITE_METADATA"  # the Model.metadata entry that names the buffer (tflite-support's name)
IDENTIFIER = b"M001"  # metadata_schema.fbs: file_identifier
MIN_PARSER_VERSION = "1.0.0"  # every field written here is in the schema's first version
LABELS_FILE = "labels.txt"
PREPROCESSING_FILE = "preprocessing.json"
# Enum values from metadata_schema.fbs.
RGB = 1  # ColorSpaceType
FEATURE_PROPERTIES, IMAGE_PROPERTIES = 1, 2  # ContentProperties union
NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union
DESCRIPTIONS, TENSOR_AXIS_LABELS = 1, 2  # AssociatedFileType
# Field slots, in the schema's order (a union takes two: its type, then its value).
ASSOCIATED_FILE = {"name": 0, "description": 1, "type": 2}
IMAGE_SIZE = {"width": 0, "height": 1}
IMAGE_PROPS = {"color_space": 0, "default_size": 1}
CONTENT = {"content_properties_type": 0, "content_properties": 1}
NORMALIZATION = {"mean": 0, "std": 1}
PROCESS_UNIT = {"options_type": 0, "options": 1}
STATS = {"max": 0, "min": 1}
TENSOR = {"name": 0, "description": 1, "content": 3, "process_units": 4, "stats": 5, "associated_files": 6}
SUBGRAPH = {"name": 0, "input_tensor_metadata": 2, "output_tensor_metadata": 3}
MODEL = {"name": 0, "description": 1, "version": 2, "subgraph_metadata": 3, "min_parser_version": 7}


class MetadataError(TLCourseError, ValueError):
    """TFLite metadata that cannot be written or read as the course writes it."""


@dataclass
class ModelInfo:
    """What a .tflite file's metadata says: its labels, and the preprocessing its input needs."""

    labels: list[str] | None  # None when no labels file is packed
    preprocessing: Preprocessing
    description: str


# Writing ----------------------------------------------------------------------------------------


def _table(builder: flatbuffers.Builder, fields: dict, slots: dict, kinds: dict) -> int:
    """One table: ``fields`` (name -> an offset built before, or a scalar of the kind ``kinds`` gives)."""
    add = {
        "offset": builder.PrependUOffsetTRelativeSlot,
        "byte": builder.PrependInt8Slot,
        "ubyte": builder.PrependUint8Slot,
        "uint": builder.PrependUint32Slot,
    }
    builder.StartObject(max(slots.values(), default=-1) + 1)
    for name, value in fields.items():
        add[kinds.get(name, "offset")](slots[name], value, 0)  # 0: the schema's default, left out when equal
    return builder.EndObject()


def _offsets(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _floats(builder: flatbuffers.Builder, values: list[float]) -> int:
    return builder.CreateNumpyVector(np.asarray(values, dtype=np.float32))


def _file(builder: flatbuffers.Builder, name: str, description: str, kind: int) -> int:
    fields = {"name": builder.CreateString(name), "description": builder.CreateString(description), "type": kind}
    return _table(builder, fields, ASSOCIATED_FILE, {"type": "byte"})


def metadata_buffer(preprocessing: Preprocessing, num_labels: int | None, quantization: str, name: str) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) of a course classifier (labels packed if counted)."""
    b = flatbuffers.Builder(1024)
    size = preprocessing.size
    image_size = _table(b, {"width": size, "height": size}, IMAGE_SIZE, {"width": "uint", "height": "uint"})
    properties = _table(b, {"color_space": RGB, "default_size": image_size}, IMAGE_PROPS, {"color_space": "byte"})
    content = {"content_properties_type": IMAGE_PROPERTIES, "content_properties": properties}
    input_content = _table(b, content, CONTENT, {"content_properties_type": "ubyte"})
    mean, std = _floats(b, [0.0]), _floats(b, [1.0])
    normalization = _table(b, {"mean": mean, "std": std}, NORMALIZATION, {})
    unit = {"options_type": NORMALIZATION_OPTIONS, "options": normalization}
    units = _offsets(b, [_table(b, unit, PROCESS_UNIT, {"options_type": "ubyte"})])
    pixel_stats = _table(b, {"max": _floats(b, [255.0]), "min": _floats(b, [0.0])}, STATS, {})
    if preprocessing.fit == "pad":
        how = f"{preprocessing.method} resize of the whole image padded with white to a square"
    else:
        how = f"{preprocessing.method} resize of the centre {preprocessing.crop_fraction:g} of the short side"
    preprocessing_file = _file(b, PREPROCESSING_FILE, f"The course's preprocessing (JSON): {how}.", DESCRIPTIONS)
    image = {
        "name": b.CreateString("image"),
        "description": b.CreateString(
            f"RGB image, uint8 [1, {size}, {size}, 3], pixel values 0-255 as they are: the model scales them "
            f"itself. Make it from a photo by a {how}, to {size} x {size} pixels."
        ),
        "content": input_content,
        "process_units": units,
        "stats": pixel_stats,
        "associated_files": _offsets(b, [preprocessing_file]),
    }
    input_tensor = _table(b, image, TENSOR, {})
    feature = {"content_properties_type": FEATURE_PROPERTIES, "content_properties": _table(b, {}, {}, {})}
    output_content = _table(b, feature, CONTENT, {"content_properties_type": "ubyte"})
    reading = (
        "uint8 values: probability = scale * (q - zero_point), with this tensor's quantization parameters"
        if quantization == "int8"
        else "float32 probabilities"
    )
    probabilities = {
        "name": b.CreateString("probabilities"),
        "description": b.CreateString(f"Probabilities of the labels ({reading}); they sum to 1."),
        "content": output_content,
        "stats": _table(b, {"max": _floats(b, [1.0]), "min": _floats(b, [0.0])}, STATS, {}),
    }
    if num_labels is not None:
        labels_file = _file(
            b, LABELS_FILE, f"The {num_labels} labels, one a line, in output order.", TENSOR_AXIS_LABELS
        )
        probabilities["associated_files"] = _offsets(b, [labels_file])
    output_tensor = _table(b, probabilities, TENSOR, {})
    subgraph = {
        "name": b.CreateString(name),
        "input_tensor_metadata": _offsets(b, [input_tensor]),
        "output_tensor_metadata": _offsets(b, [output_tensor]),
    }
    model = {
        "name": b.CreateString(name),
        "description": b.CreateString("Image classifier retrained by tlcourse (transfer learning)."),
        "version": b.CreateString("1"),
        "subgraph_metadata": _offsets(b, [_table(b, subgraph, SUBGRAPH, {})]),
        "min_parser_version": b.CreateString(MIN_PARSER_VERSION),
    }
    b.Finish(_table(b, model, MODEL, {}), file_identifier=IDENTIFIER)
    return bytes(b.Output())


def with_metadata(model: bytes, labels: list[str] | None, preprocessing: Preprocessing, quantization: str) -> bytes:
    """``model`` (a .tflite flatbuffer) with its metadata in a buffer, and the files it names zipped after it.

    Without ``labels``, no labels file is packed (the rest is written all the same).
    """
    from ai_edge_litert import schema_py_generated as schema

    tflite = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buffer = schema.BufferT()
    count = None if labels is None else len(labels)
    buffer.data = np.frombuffer(metadata_buffer(preprocessing, count, quantization, "classifier"), np.uint8)
    tflite.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(tflite.buffers) - 1
    tflite.metadata = [m for m in tflite.metadata or [] if m.name != METADATA_NAME.encode()] + [entry]
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(tflite.Pack(builder), file_identifier=b"TFL3")
    archive = io.BytesIO(bytes(builder.Output()))
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_STORED) as files:  # appended after the flatbuffer
        if labels is not None:
            files.writestr(LABELS_FILE, "".join(f"{label}\n" for label in labels))
        files.writestr(PREPROCESSING_FILE, json.dumps(dataclasses.asdict(preprocessing)))
    return archive.getvalue()


# Reading ----------------------------------------------------------------------------------------


class _Table:
    """Read access to one flatbuffer table by field slot (the schema's field order)."""

    def __init__(self, data: bytearray, position: int):
        self._table = table.Table(data, position)

    def _offset(self, slot: int) -> int:
        return self._table.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str | None:
        offset = self._offset(slot)
        return self._table.String(offset + self._table.Pos).decode("utf-8") if offset else None

    def scalar(self, slot: int, flags, default=0):
        offset = self._offset(slot)
        return self._table.Get(flags, offset + self._table.Pos) if offset else default

    def child(self, slot: int) -> _Table | None:
        offset = self._offset(slot)
        return _Table(self._table.Bytes, self._table.Indirect(offset + self._table.Pos)) if offset else None

    def children(self, slot: int) -> list[_Table]:
        offset = self._offset(slot)
        if not offset:
            return []
        start = self._table.Vector(offset)
        return [
            _Table(self._table.Bytes, self._table.Indirect(start + 4 * i)) for i in range(self._table.VectorLen(offset))
        ]

    def floats(self, slot: int) -> list[float]:
        offset = self._offset(slot)
        return self._table.GetVectorAsNumpy(number_types.Float32Flags, offset).tolist() if offset else []


def metadata_root(buffer: bytes) -> _Table:
    """The ``ModelMetadata`` table of a metadata flatbuffer (checks its ``M001`` identifier)."""
    if bytes(buffer[4:8]) != IDENTIFIER:
        raise MetadataError(f"not TFLite metadata (identifier {bytes(buffer[4:8])!r}, expected {IDENTIFIER!r})")
    data = bytearray(buffer)
    return _Table(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0))


def metadata_of(model: bytes) -> bytes | None:
    """The metadata flatbuffer stored in a .tflite model, or None if it has none."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(bytearray(model), 0)
    for index in range(root.MetadataLength()):
        entry = root.Metadata(index)
        if entry.Name() == METADATA_NAME.encode():
            return root.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def read_metadata(model: bytes, source="the model") -> ModelInfo | None:
    """The labels and preprocessing a .tflite model's metadata gives, or None if it has no metadata."""
    buffer = metadata_of(model)
    if buffer is None:
        return None
    try:
        root = metadata_root(buffer)
        subgraph = root.children(MODEL["subgraph_metadata"])[0]
        image = subgraph.children(SUBGRAPH["input_tensor_metadata"])[0]
        output = subgraph.children(SUBGRAPH["output_tensor_metadata"])[0]
        files = zipfile.ZipFile(io.BytesIO(model))
        labels_names = [
            f.string(ASSOCIATED_FILE["name"])
            for f in output.children(TENSOR["associated_files"])
            if f.scalar(ASSOCIATED_FILE["type"], number_types.Int8Flags) == TENSOR_AXIS_LABELS
        ]
        labels = None
        if labels_names:  # the first, as the schema says
            labels = [line for line in files.read(labels_names[0]).decode("utf-8").splitlines() if line.strip()]
        preprocessing = Preprocessing(**json.loads(files.read(PREPROCESSING_FILE)))
        properties = image.child(TENSOR["content"]).child(CONTENT["content_properties"])
        size = properties.child(IMAGE_PROPS["default_size"]).scalar(IMAGE_SIZE["width"], number_types.Uint32Flags)
    except (IndexError, KeyError, AttributeError, TypeError, ValueError, zipfile.BadZipFile) as error:
        raise MetadataError(
            f"{source}: its TFLite metadata is not the course's ({type(error).__name__}: {error}); pass --labels, "
            "or write the model again with retrain.py --output_tflite"
        ) from None
    if size != preprocessing.size:
        raise MetadataError(f"{source}: metadata input size {size} but preprocessing size {preprocessing.size}")
    return ModelInfo(labels, preprocessing, root.string(MODEL["description"]) or "")
