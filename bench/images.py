"""The benchmarks' images: made once from the stamps photos, kept under data/bench/."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

import tlcourse as tlc


def make_images(folder: Path, count: int, seed: int = 0, size: tuple[int, int] | None = None) -> Path:
    """``count`` distinct JPEGs made from the stamps photos, 5 labels: tinted, noisy crops (about
    160 px), or with ``size`` whole photos enlarged to ``size`` with sensor-like noise (camera photos)."""
    if (folder / ".complete").is_file() and len(list(folder.rglob("*.jpg"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    sources = stamps_photos()
    rng = np.random.default_rng(seed)
    for index in range(count):
        source = sources[index % len(sources)]
        with Image.open(source) as opened:
            image = opened.convert("RGB")
        photo = enlarged(image, size, rng) if size else cropped(image, rng)
        target = folder / source.parent.name / f"{index:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(target, quality=90)
    (folder / ".complete").write_text("")
    return folder


def cropped(image: Image.Image, rng) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32)
    height, width = pixels.shape[:2]
    top, left = rng.integers(0, height // 5 + 1), rng.integers(0, width // 5 + 1)
    crop = pixels[top : top + height * 4 // 5, left : left + width * 4 // 5]
    return crop * rng.uniform(0.8, 1.2, 3) + rng.normal(0, 3, crop.shape)


def enlarged(image: Image.Image, size: tuple[int, int], rng) -> np.ndarray:
    pixels = np.asarray(image.resize(size, Image.BICUBIC), dtype=np.int16)
    return pixels + rng.integers(-6, 7, pixels.shape, dtype=np.int16)


def stamps_photos() -> list[Path]:
    """The stamps photos, taking each label in turn, so that any first few cover every label."""
    by_label: dict[str, list[Path]] = {}
    for path in sorted(tlc.datasets.stamps().rglob("*.jpg")):
        by_label.setdefault(path.parent.name, []).append(path)
    return [path for group in itertools.zip_longest(*by_label.values()) for path in group if path]
