"""Build small test images of every kind the course must handle, in memory, with Pillow."""

import io
import zlib

import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)


def rgb(width=40, height=30, colour=None, seed=None):
    rng = np.random.default_rng(seed)
    if colour is not None:
        return Image.new("RGB", (width, height), colour)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB")


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def jpeg(seed=0, **kw):
    return encoded(rgb(seed=seed, **kw), "JPEG")


def labelled_folder(root, labels=("a", "b", "c"), per_label=20, width=48, height=48):
    """``root/<label>/<i>.jpg``: distinct random JPEGs, the same bytes on every run."""
    for name in labels:
        for i in range(per_label):
            write(root / name / f"{i}.jpg", jpeg(seed=zlib.crc32(f"{name}{i}".encode()), width=width, height=height))
    return root
