"""Benchmark the bottleneck cache's reruns and its memory (its speed against other ways: performance.py).

    python bench/caching.py            # 1,000 images; memory at 1,000 and 10,000
    python bench/caching.py --quick    # 300 images; memory at 300 and 1,000

Every figure is a ratio of two runs made here, in this process or in child processes started
now, on the same images:
- a warm rerun over the unchanged dataset against the cold run, with and without a rescan;
- peak memory (resident set) of a caching run over many images against one over few.
Results go to bench/results/caching.md and caching.json.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from bench.images import make_images  # noqa: E402

RESULTS = ROOT / "bench" / "results"


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

    count, small, large = (300, 300, 1000) if args.quick else (1000, 1000, 10000)
    work = tlc.config.data_dir() / "bench"
    folder = make_images(work / f"images_{count}", count)
    backbone = tlc.backbones.load_backbone("efficientnet_lite0")
    dataset = tlc.data.scan_dataset(folder)

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
        "caching_images_per_second": round(cold_rate, 2),
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
