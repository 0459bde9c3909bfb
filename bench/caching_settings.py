"""Caching with each of the image pipeline's settings changed from its default, in paired rounds.

    python bench/caching_settings.py            # 1,000 small images, 8 interleaved rounds (6 minutes on 2 cores)
    python bench/caching_settings.py --quick    # 300 images, 4 rounds

Two of ``tlcourse.bottlenecks.CachingOptions``, each changed alone against the default:
- ``tf_data_autotune`` (default off). tf.data's autotuner runs a thread that sleeps for periods
  that double (10 ms, 20 ms, ... 10.24 s, 20.48 s). With it on, the end of the images sometimes
  waited for its next wake-up, so a caching run that needed 10 seconds took 20: the "two speeds"
  earlier benchmarks blamed on the host. Each round records that wait (between the last batch and
  the end of the pipeline).
- ``write_behind`` (default on): each batch's cache files written on a second thread while the
  network runs on the next batch, against written inline between batches.

Every round caches the same images into a fresh cache once per setting, in an order that rotates
from round to round, so that a slow spell of the machine falls on each setting in turn. A change
of a few percent hides in the spread of single rounds; the paired difference (each round's rate
minus the default's rate in the same round) does not. Results go to
bench/results/caching_settings.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from bench.images import make_images  # noqa: E402
from bench.performance import cpu_name, cpu_seconds  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT = "default"
SETTINGS = {  # name -> the caching options it changes
    DEFAULT: {},
    "autotuner on": {"tf_data_autotune": True},
    "cache files written inline": {"write_behind": False},
}


def caching_round(backbone, records, changes: dict) -> dict:
    """Rate, CPU per image and the wait at the pipeline's end of one cold caching run with ``changes``."""
    started_cpu = cpu_seconds()
    options = tlc.bottlenecks.CachingOptions(**changes)
    with tempfile.TemporaryDirectory() as cache:
        report = tlc.bottlenecks.cache_bottlenecks(records, backbone, cache, progress=False, options=options)
    assert report.computed == len(records) and not report.failures
    return {
        "images_per_second": round(len(records) / report.seconds, 1),
        "cpu_ms_per_image": round(1000 * (cpu_seconds() - started_cpu) / len(records), 1),
        "end_wait_seconds": round(report.end_wait_seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds, for a fast check")
    args = parser.parse_args()
    count, rounds = (300, 4) if args.quick else (1000, 8)
    records = tlc.data.scan_dataset(make_images(tlc.config.data_dir() / "bench" / f"images_{count}", count)).images
    backbone = tlc.backbones.load_backbone("efficientnet_lite0")  # float32, on this machine's default engine
    for changes in SETTINGS.values():
        caching_round(backbone, records[:40], changes)  # warm up: conversion, tracing
    names = list(SETTINGS)
    measures = ("images_per_second", "cpu_ms_per_image", "end_wait_seconds")
    figures = {name: {key: [] for key in measures} for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            measured = caching_round(backbone, records, SETTINGS[name])
            for key, value in measured.items():
                figures[name][key].append(value)
            print(
                f"round {round_number + 1}: {name}: {measured['images_per_second']} images/s, "
                f"{measured['cpu_ms_per_image']} CPU ms/image, the end waited {measured['end_wait_seconds']} s",
                flush=True,
            )
    for name, named in figures.items():
        named["median_images_per_second"] = round(statistics.median(named["images_per_second"]), 1)
        named["median_cpu_ms_per_image"] = round(statistics.median(named["cpu_ms_per_image"]), 1)
        named["rounds_whose_end_waited_over_1_s"] = sum(wait > 1 for wait in named["end_wait_seconds"])
        if name != DEFAULT:
            differences = [
                mine - default
                for mine, default in zip(named["images_per_second"], figures[DEFAULT]["images_per_second"], strict=True)
            ]
            named["against_the_default"] = {
                "mean_difference_images_per_second": round(statistics.mean(differences), 1),
                "sd_of_the_difference": round(statistics.stdev(differences), 1),
                "rounds_the_default_was_faster": sum(difference < 0 for difference in differences),
            }
    summary = {
        "images": count,
        "rounds": rounds,
        "engine": backbone.engine,
        "settings": figures,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}",
        "versions": tlc.course.environment(),
    }
    write_results(summary, "python bench/caching_settings.py" + (" --quick" if args.quick else ""))
    return 0


def write_results(summary: dict, command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "caching_settings.json").write_text(json.dumps(summary, indent=2) + "\n")
    rounds = summary["rounds"]
    rows = []
    for name, named in summary["settings"].items():
        against = named.get("against_the_default")
        paired = (
            f"{against['mean_difference_images_per_second']:+} (sd {against['sd_of_the_difference']}); "
            f"the default faster in {against['rounds_the_default_was_faster']} of {rounds}"
            if against
            else ""
        )
        rows.append(
            f"| {name} | {named['median_images_per_second']} | {named['median_cpu_ms_per_image']} | {paired} "
            f"| {named['rounds_whose_end_waited_over_1_s']} of {rounds} "
            f"| {', '.join(map(str, named['images_per_second']))} | {', '.join(map(str, named['end_wait_seconds']))} |"
        )
    (RESULTS / "caching_settings.md").write_text(
        f"# Caching with each pipeline setting changed from its default\n\n`{command}` on {summary['machine']}; "
        f"{', '.join(f'{key} {value}' for key, value in summary['versions'].items())}.\n\nCold caching of "
        f"{summary['images']} small JPEGs with EfficientNet-Lite0 (engine {summary['engine']}), "
        f"{rounds} interleaved rounds per setting.\n\n"
        "| setting | median images/s | median CPU ms/image | images/s against the default, same round "
        "| rounds whose end waited over 1 s | every round (images/s) | the end's wait in every round (s) |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
