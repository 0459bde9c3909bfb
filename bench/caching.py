"""Benchmark the bottleneck cache against computing bottlenecks one image at a time.

    python bench/caching.py            # 1,000 images; memory at 1,000 and 10,000
    python bench/caching.py --quick    # 300 images; memory at 300 and 1,000

Every figure is a ratio of two runs made here, in this process or in child processes started
now, on the same images:
- cold caching (batched tf.data pipeline) against one image at a time (decode, then one forward
  pass per image), both through a graph compiled once (as retrain.py's session.run) and through
  a plain Keras call per image (as a direct TensorFlow 2 port of its loop);
- a warm rerun over the unchanged dataset against the cold run;
- peak memory (resident set) of a caching run over many images against one over few.
Results go to bench/results/caching.md and caching.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402

RESULTS = ROOT / "bench" / "results"


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


def per_image_rate(backbone, records, limit: int, compiled: bool) -> float:
    """Images per second computing bottlenecks one at a time: decode, then one forward pass each.

    ``compiled``: through a graph compiled once, as retrain.py's ``session.run`` did; otherwise a
    plain Keras call per image, as a direct TensorFlow 2 port of its loop does.
    """

    def one(record):
        batch = backbone.preprocess(tlc.images.load_image(record.path)[None])
        return backbone.features_function(batch) if compiled else backbone.features(batch, training=False)

    one(records[0])  # build and compile once, outside the timing
    started = time.perf_counter()
    for record in records[:limit]:
        np.asarray(one(record))
    return limit / (time.perf_counter() - started)


def peak_memory_mb(folder: Path, count: int) -> float:
    """Peak resident memory of a child process that scans and caches ``count`` images from scratch."""
    result = subprocess.run(
        [sys.executable, __file__, "--memory-run", str(folder)], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def memory_run(folder: Path) -> None:
    backbone = tlc.backbones.load_backbone("efficientnet_lite0")
    dataset = tlc.data.scan_dataset(folder)
    with tempfile.TemporaryDirectory() as cache:
        tlc.bottlenecks.cache_bottlenecks(dataset.images, backbone, cache, progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, for a fast check")
    parser.add_argument("--memory-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_run:
        memory_run(args.memory_run)
        return 0

    count, per_image_count, small, large = (300, 60, 300, 1000) if args.quick else (1000, 150, 1000, 10000)
    work = tlc.config.data_dir() / "bench"
    folder = make_images(work / f"images_{count}", count)
    backbone = tlc.backbones.load_backbone("efficientnet_lite0")
    dataset = tlc.data.scan_dataset(folder)

    per_image_compiled = per_image_rate(backbone, dataset.images, per_image_count, compiled=True)
    per_image_eager = per_image_rate(backbone, dataset.images, per_image_count // 3, compiled=False)
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        cold = tlc.bottlenecks.cache_bottlenecks(dataset.images, backbone, cache, progress=False)
        warm = tlc.bottlenecks.cache_bottlenecks(dataset.images, backbone, cache, progress=False)
        started = time.perf_counter()
        rescanned = tlc.data.scan_dataset(folder)
        warm_with_scan = tlc.bottlenecks.cache_bottlenecks(rescanned.images, backbone, cache, progress=False)
        warm_with_scan_seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    assert warm.hits == warm_with_scan.hits == len(dataset.images) and not cold.failures

    memory_small = peak_memory_mb(make_images(work / f"images_{small}", small), small)
    memory_large = peak_memory_mb(make_images(work / f"images_{large}", large), large)

    cold_rate = cold.computed / cold.seconds
    summary = {
        "images": count,
        "per_image_compiled_images_per_second": round(per_image_compiled, 2),
        "per_image_eager_images_per_second": round(per_image_eager, 2),
        "caching_images_per_second": round(cold_rate, 2),
        "cache_speedup_vs_per_image_compiled": round(cold_rate / per_image_compiled, 2),
        "cache_speedup_vs_per_image_eager": round(cold_rate / per_image_eager, 2),
        "cold_seconds": round(cold.seconds, 2),
        "warm_seconds": round(warm.seconds, 3),
        "warm_speedup": round(cold.seconds / warm.seconds, 1),
        "warm_with_rescan_seconds": round(warm_with_scan_seconds, 3),
        "warm_with_rescan_speedup": round(cold.seconds / warm_with_scan_seconds, 1),
        f"peak_memory_mb_{small}": round(memory_small),
        f"peak_memory_mb_{large}": round(memory_large),
        "peak_memory_ratio": round(memory_large / memory_small, 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "versions": tlc.course.environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "caching.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = "\n".join(f"| {key} | {value} |" for key, value in summary.items() if key != "versions")
    (RESULTS / "caching.md").write_text(
        "# Bottleneck caching benchmark\n\n`python bench/caching.py" + (" --quick" if args.quick else "") + "`\n\n"
        "| measure | value |\n| --- | --- |\n" + table + "\n"
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
