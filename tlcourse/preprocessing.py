"""A backbone's preprocessing, and the same preprocessing in numpy, without TensorFlow.

``Preprocessing`` says what a backbone needs to see an image: a centre square (the image's centre
cropped, or the whole image padded), a resize to its input size, then ``(x - offset) / scale``.
Inside every model the course writes it runs as TensorFlow operations
(``backbones.preprocess_images``: ``tf.image.resize`` with the antialiased ``ScaleAndTranslate``
kernel when shrinking, ``ResizeBicubic``/``ResizeBilinear`` with half-pixel centres when enlarging).
``numpy_preprocess`` computes the very same thing with numpy, so that labelling with LiteRT needs
no TensorFlow at all (importing TensorFlow takes longer than labelling an image): each axis's
resize is a matrix, built with TensorFlow's kernels, sample positions and edge rules, in float32.
``tests/test_fast_label.py`` checks that both agree.

Taught in ``notebooks/02_cache_bottlenecks.ipynb`` (the preprocessing) and
``notebooks/13_deploy_to_phone.ipynb`` (the fixed-size input of a phone model).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

FITS = ("crop", "pad")  # how an image becomes the square a backbone sees
PAD_VALUE = 255  # white: what ``images.load_image`` puts behind transparent pixels


@dataclass(frozen=True)
class Preprocessing:
    """A centre square, resized, then ``(x - offset) / scale``: all a backbone needs to see an image.

    The square's side is ``crop_fraction`` of the image's short side (``fit="crop"``, the ImageNet
    way: the borders of a long image are cut), or the long side (``fit="pad"``: the whole image, the
    rest of the square white; ``crop_fraction`` does not apply). ``centre_square`` computes it.
    """

    size: int
    crop_fraction: float
    method: str
    offset: float
    scale: float
    fit: str = "crop"

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, not {self.fit!r}")

    def fitted(self, fit: str) -> Preprocessing:
        """The same preprocessing with ``fit``."""
        return replace(self, fit=fit)


# Lite: bicubic resize of a 224/256 centre crop, then (x - 127) / 128 reproduces the ImageNet
# predictions of the original checkpoints. Inception-v3: 299 px, scaled to [-1, 1].
# Here, not in ``backbones.REGISTRY`` only: ``label`` imports without TensorFlow (``backbones`` imports it),
# and picks among these the one that reproduces a converted model's own preprocessing, kept beside its
# LiteRT conversion for the next runs (``label._checked_preprocessing``). A .tflite file carries its own.
PREPROCESSINGS = {
    "efficientnet_lite0": Preprocessing(224, 224 / 256, "bicubic", 127.0, 128.0),
    "efficientnet_lite2": Preprocessing(260, 224 / 256, "bicubic", 127.0, 128.0),
    "inception_v3": Preprocessing(299, 0.875, "bilinear", 127.5, 127.5),
}


def _keys_cubic(x: np.ndarray) -> np.ndarray:  # TensorFlow's "keyscubic" kernel (a = -0.5)
    x = np.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0)).astype(np.float32)


def _triangle(x: np.ndarray) -> np.ndarray:  # TensorFlow's "triangle" kernel (bilinear)
    return np.maximum(1.0 - np.abs(x), 0.0).astype(np.float32)


KERNELS = {"bicubic": _keys_cubic, "bilinear": _triangle}
TABLE_STEPS = 1024  # ResizeBicubic reads its kernel from a table with this many steps between two pixels


@functools.lru_cache(maxsize=64)
def resize_weights(source: int, size: int, method: str) -> np.ndarray:
    """The ``[size, source]`` float32 matrix that resizes one axis as ``tf.image.resize`` does.

    Shrinking (antialiased, ``ScaleAndTranslate``): the kernel is widened by ``source / size``.
    Enlarging (``ResizeBicubic``/``ResizeBilinear``, half-pixel centres): the plain kernel. Either
    way, taps outside the image get no weight and each row's weights are renormalised to sum to 1.
    """
    if size >= source and method == "bicubic":
        return _resize_bicubic_weights(source, size)
    kernel = KERNELS[method]
    if size < source:  # ScaleAndTranslate: 1 / (size / source), the kernel widened by it
        inverse_scale = np.float32(1.0) / (np.float32(size) / np.float32(source))
    else:  # ResizeBilinear
        inverse_scale = np.float32(source) / np.float32(size)
    kernel_scale = np.float32(max(float(inverse_scale), 1.0))
    centres = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * inverse_scale  # in source pixel units
    sources = np.arange(source, dtype=np.float32) + np.float32(0.5)
    weights = kernel((sources[None, :] - centres[:, None]) / kernel_scale)  # zero outside the kernel's radius
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _resize_bicubic_weights(source: int, size: int) -> np.ndarray:
    """``ResizeBicubic``'s weights: the Keys kernel read from a table of 1024 steps, as TensorFlow does."""
    steps = TABLE_STEPS
    fractions = np.arange(steps + 1, dtype=np.float32) / np.float32(steps)
    table = np.stack([_keys_cubic(fractions + 1), _keys_cubic(fractions)], axis=1)  # distance 1 + d, distance d
    positions = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * (np.float32(source) / np.float32(size))
    positions -= np.float32(0.5)
    starts = np.floor(positions).astype(np.int64)
    offsets = np.rint((positions - starts) * np.float32(steps)).astype(np.int64)
    taps = [table[offsets, 0], table[offsets, 1], table[steps - offsets, 1], table[steps - offsets, 0]]
    weights = np.zeros((size, source), np.float32)
    for tap, values in enumerate(taps):  # the four source pixels around each position; none outside the image
        index = starts - 1 + tap
        inside = (index >= 0) & (index < source)
        weights[np.flatnonzero(inside), index[inside]] += values[inside]
    return weights / weights.sum(axis=1, keepdims=True)


def centre_square(image: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The square of one image ``[height, width, 3]`` that ``preprocessing`` resizes: its centre, or the
    whole image centred on white (an odd margin's extra row or column above or to the left)."""
    image = np.asarray(image)
    height, width = image.shape[:2]
    if preprocessing.fit == "pad":
        side = max(height, width)
        top, left = (side - height + 1) // 2, (side - width + 1) // 2
        margins = [(top, side - height - top), (left, side - width - left), (0, 0)]
        return np.pad(image, margins, constant_values=PAD_VALUE)
    side = max(int(np.float32(min(height, width)) * np.float32(preprocessing.crop_fraction)), 1)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def numpy_preprocess(image: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """One uint8 RGB image ``[height, width, 3]`` -> the backbone's float32 input ``[size, size, 3]``."""
    crop = centre_square(image, preprocessing).astype(np.float32)
    side = crop.shape[0]
    weights = resize_weights(side, preprocessing.size, preprocessing.method)
    resized = np.einsum("kj,ijc->ikc", weights, crop, optimize=True)  # along each row first, as TensorFlow does
    resized = np.einsum("ij,jkc->ikc", weights, resized, optimize=True)
    pixels = np.clip(resized, 0.0, 255.0)
    return ((pixels - np.float32(preprocessing.offset)) / np.float32(preprocessing.scale)).astype(np.float32)


def numpy_fixed_input(image: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """``tflite.resize_for_model`` in numpy: the preprocessing without its scaling, rounded to uint8."""
    pixels = numpy_preprocess(image, preprocessing) * np.float32(preprocessing.scale) + np.float32(preprocessing.offset)
    return np.round(np.clip(pixels, 0.0, 255.0)).astype(np.uint8)
