"""Read any image a learner is likely to have as plain 8-bit RGB, or say clearly why not.

The format is found from the file's content, never from its extension. Greyscale, palette,
CMYK and 16-bit images become RGB; transparency is composited onto a background instead of
turning black; EXIF orientation is applied; an animated GIF gives its first frame.

A large JPEG (a phone's 4032x3024 photo) is decoded at 1/2, 1/4 or 1/8 of its size, by the JPEG
decoder itself, while its short side stays at least ``DECODE_MIN_SIDE``: several times faster,
and still well above the 224-299 pixels a backbone sees. Caching and labelling both read images
here, so they see the same pixels.

A plain JPEG (8-bit, greyscale or 3 channels, no EXIF rotation) can also be decoded by
TensorFlow's own decoder in the ``tf.data`` pipeline, with no Python in the way: ``plain_jpeg_scale``
says which files are plain, and at what scale ``load_image`` would decode them, so that both
decoders give the same pixels (``tests/test_images.py`` checks it on the course's datasets).

Taught in ``notebooks/01_prepare_dataset.ipynb``.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tlcourse.errors import TLCourseError

# Formats accepted, by what Pillow finds in the bytes (MPO is a camera's multi-picture JPEG).
ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"}
# Above this many pixels an image is refused as a possible decompression bomb (Pillow's default).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
BACKGROUND = (255, 255, 255)
DECODE_MIN_SIDE = 512
JPEG_HEADER_BYTES = 1 << 17  # the SOF marker of a plain JPEG comes after at most 64 KB of EXIF (and other APPn)
PLAIN_SOF_MARKERS = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman JPEG


class ImageError(TLCourseError, ValueError):
    """An image that cannot be used; the message says why and what to do."""


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or wider greyscale
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" and values.max() > 255 else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def draft_scale(width: int, height: int) -> int:
    """The libjpeg scale (1, 2, 4 or 8) ``load_image`` decodes a JPEG of this size at (Pillow's ``draft`` rule)."""
    fits = min(width // DECODE_MIN_SIDE, height // DECODE_MIN_SIDE)
    return next(scale for scale in (8, 4, 2, 1) if fits >= scale or scale == 1)


def _exif_orientation(tiff: bytes) -> int:
    """The EXIF orientation tag (1 = upright) of a TIFF-structured EXIF block; 0 when it cannot be read."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 0
    try:
        (directory,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, directory)
        for entry in range(directory + 2, directory + 2 + 12 * count, 12):
            tag, _, _, value = struct.unpack_from(order + "HHIH", tiff, entry)
            if tag == 0x0112:
                return value
    except struct.error:
        return 0
    return 1


def plain_jpeg_scale(path: str | Path) -> int:
    """For a plain JPEG, the scale (1, 2, 4 or 8) ``load_image`` decodes it at; 0 for anything else.

    Plain: 8-bit Huffman JPEG (baseline or progressive), greyscale or 3 channels (not CMYK), no
    EXIF rotation, under the pixel limit. Those decode to the same pixels with
    ``tf.io.decode_jpeg(..., ratio=scale, dct_method="INTEGER_ACCURATE")``; every other file
    (or one this header reader is unsure of) goes through ``load_image``.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(JPEG_HEADER_BYTES)
    except OSError:
        return 0
    if data[:3] != b"\xff\xd8\xff":
        return 0
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00" and _exif_orientation(segment[6:]) != 1:
            return 0
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            if marker not in PLAIN_SOF_MARKERS or len(segment) < 6:
                return 0
            bits, height, width, channels = struct.unpack_from(">BHHB", segment)
            if bits != 8 or channels not in (1, 3) or not 0 < width * height <= MAX_PIXELS:
                return 0
            return draft_scale(width, height)
        if marker == 0xDA:  # start of scan before any frame header: not a JPEG to trust
            return 0
        position += 2 + length
    return 0


def load_image(path: str | Path, background: tuple[int, int, int] = BACKGROUND, max_pixels: int = MAX_PIXELS):
    """The image at ``path`` as a ``(height, width, 3)`` uint8 array; ``ImageError`` if unusable."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format not in ACCEPTED_FORMATS:
                    raise ImageError(f"{image.format} images are not supported; convert it to JPEG or PNG")
                if image.width * image.height > max_pixels:
                    raise ImageError(
                        f"{image.width}x{image.height} pixels is over the {max_pixels:,}-pixel limit "
                        "(possible decompression bomb); shrink the image if it is genuine"
                    )
                image.seek(0)  # first frame of an animation
                if image.format in ("JPEG", "MPO"):
                    image.draft(None, (DECODE_MIN_SIDE, DECODE_MIN_SIDE))  # no-op unless both sides >= 1,024 px
                image = ImageOps.exif_transpose(image)
                image.load()
                return np.asarray(_to_rgb(image, background), dtype=np.uint8)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("permission denied; check the file's permissions") from None
    except IsADirectoryError:
        raise ImageError("is a folder, not an image") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"refused as a possible decompression bomb ({error})") from None
    except Image.UnidentifiedImageError:
        size = path.stat().st_size if path.exists() else 0
        reason = "empty file (0 bytes)" if size == 0 else "not an image Pillow can read"
        raise ImageError(f"{reason}; remove it or replace it with a JPEG or PNG") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"damaged or truncated image ({error}); re-export or remove it") from None
