"""Caching with tf.data's autotuner on and off: why the image pipeline turns it off.

    python bench/tf_data_autotune.py            # 1,000 small images, 8 interleaved rounds (4 minutes on 2 cores)
    python bench/tf_data_autotune.py --quick    # 300 images, 4 rounds

The autotuner's thread sleeps for periods that double (10 ms, 20 ms, ... 10.24 s, 20.48 s). On
this project's machines the end of the images sometimes waited for its next wake-up, so a caching
run that needed 10 seconds took 20: the "two speeds" earlier benchmarks blamed on the host. Each
round caches the same images into a fresh cache with the autotuner on (``TF_DATA_AUTOTUNE``) and
off (the default), in alternating order, and records the rate and the wait between the last batch
and the end of the pipeline. Results go to bench/results/tf_data_autotune.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from bench.images import make_images  # noqa: E402
from bench.performance import cpu_name  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SETTINGS = {"autotuner off (default)": False, "autotuner on": True}


def timing_the_end(end_waits: list):
    """``image_pipeline`` that appends to ``end_waits`` how long the pipeline took to end after its last batch."""
    pipeline = tlc.bottlenecks.image_pipeline

    def timed(*args, **kwargs):
        batches = pipeline(*args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                end_waits.append(time.perf_counter() - started)
                return
            yield batch

    return timed


def caching_round(backbone, records, autotune: bool) -> tuple[float, float]:
    """(images per second, seconds the pipeline's end waited) of one cold caching run."""
    end_waits = []
    original = tlc.bottlenecks.TF_DATA_AUTOTUNE, tlc.bottlenecks.image_pipeline
    tlc.bottlenecks.TF_DATA_AUTOTUNE, tlc.bottlenecks.image_pipeline = autotune, timing_the_end(end_waits)
    try:
        with tempfile.TemporaryDirectory() as cache:
            report = tlc.bottlenecks.cache_bottlenecks(records, backbone, cache, progress=False)
    finally:
        tlc.bottlenecks.TF_DATA_AUTOTUNE, tlc.bottlenecks.image_pipeline = original
    assert report.computed == len(records) and not report.failures
    return len(records) / report.seconds, sum(end_waits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds, for a fast check")
    args = parser.parse_args()
    count, rounds = (300, 4) if args.quick else (1000, 8)
    records = tlc.data.scan_dataset(make_images(tlc.config.data_dir() / "bench" / f"images_{count}", count)).images
    backbone = tlc.backbones.load_backbone("efficientnet_lite0")  # float32, on this machine's default engine
    for autotune in SETTINGS.values():
        caching_round(backbone, records[:40], autotune)  # warm up: conversion, tracing
    figures = {name: {"images_per_second": [], "end_wait_seconds": []} for name in SETTINGS}
    for round_number in range(rounds):
        order = list(SETTINGS.items()) if round_number % 2 == 0 else list(SETTINGS.items())[::-1]
        for name, autotune in order:
            rate, wait = caching_round(backbone, records, autotune)
            figures[name]["images_per_second"].append(round(rate, 1))
            figures[name]["end_wait_seconds"].append(round(wait, 2))
            print(f"round {round_number + 1}: {name}: {rate:.1f} images/s, the end waited {wait:.2f} s", flush=True)
    for named in figures.values():
        named["median_images_per_second"] = round(statistics.median(named["images_per_second"]), 1)
        named["best_images_per_second"] = max(named["images_per_second"])
        named["rounds_whose_end_waited_over_1_s"] = sum(wait > 1 for wait in named["end_wait_seconds"])
    summary = {
        "images": count,
        "rounds": rounds,
        "engine": backbone.engine,
        "settings": figures,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}",
        "versions": tlc.course.environment(),
    }
    write_results(summary, "python bench/tf_data_autotune.py" + (" --quick" if args.quick else ""))
    return 0


def write_results(summary: dict, command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tf_data_autotune.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = "\n".join(
        f"| {name} | {named['median_images_per_second']} | {named['best_images_per_second']} "
        f"| {named['rounds_whose_end_waited_over_1_s']} of {summary['rounds']} "
        f"| {', '.join(map(str, named['images_per_second']))} | {', '.join(map(str, named['end_wait_seconds']))} |"
        for name, named in summary["settings"].items()
    )
    (RESULTS / "tf_data_autotune.md").write_text(
        f"# tf.data's autotuner and the end of the image pipeline\n\n`{command}` on {summary['machine']}; "
        f"{', '.join(f'{key} {value}' for key, value in summary['versions'].items())}.\n\nCold caching of "
        f"{summary['images']} small JPEGs with EfficientNet-Lite0 (engine {summary['engine']}), "
        f"{summary['rounds']} interleaved rounds per setting.\n\n"
        "| setting | median images/s | best images/s | rounds whose end waited over 1 s "
        "| every round (images/s) | the end's wait in every round (s) |\n| --- | --- | --- | --- | --- | --- |\n"
        f"{rows}\n"
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
