"""Read any image a learner is likely to have as plain 8-bit RGB, or say clearly why not.

The format is found from the file's content, never from its extension. Greyscale, palette,
CMYK and 16-bit images become RGB; transparency is composited onto a background instead of
turning black; EXIF orientation is applied; an animated GIF gives its first frame.

A large JPEG (a phone's 4032x3024 photo) is decoded at 1/2, 1/4 or 1/8 of its size, by the JPEG
decoder itself, while its short side stays at least ``DECODE_MIN_SIDE``: several times faster,
and still well above the 224-299 pixels a backbone sees. Caching and labelling both read images
here, so they see the same pixels.

Taught in ``notebooks/01_prepare_dataset.ipynb``.
"""

from __future__ import annotations

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
