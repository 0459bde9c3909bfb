"""Is bfloat16 good enough to be a default? Judged on a real task: many_classes (117 labels, 652 test images).

    python bench/precision.py          # an accuracy run: nice -n 19 is fine, nothing here is timed

Two recipes of lesson 09 on its split: the tutorial's, and the frozen-feature recipe chosen on validation
by ``bench/many_classes.py`` (with the L2 penalty it chose on validation, not tuned again). Each head is
trained on float32 bottlenecks and on bfloat16 bottlenecks (same split, same seed) and scored on the same
test images: top-1 and top-5 with 95% bootstrap intervals, and bfloat16 minus float32 by a paired
bootstrap and an exact McNemar test (``tlcourse.stats``). For scale, the same recipe in float32 with
another training seed: how much the result moves for a reason nobody would call a change.
Also measured: how far bfloat16 moves the bottlenecks, and how many test predictions change.

The verdict is "within noise" when every paired interval (top-1 and top-5, both recipes) contains 0.
Writes bench/results/precision.{json,md}; bottlenecks go to runs/bottlenecks (reused when cached).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from tlcourse.many_classes import RECIPES, Experiment, as_measured  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PRECISIONS = ("float32", "bfloat16")


def frozen_recipe() -> tlc.pipeline.HeadRecipe:
    """The frozen-feature recipe chosen on validation by bench/many_classes.py, with the L2 it chose."""
    measured = json.loads((RESULTS / "many_classes.json").read_text())
    name = measured["chosen_frozen_on_validation"]
    row = next(row for row in measured["techniques"] if row["name"] == name)
    return as_measured(RECIPES[name], row["settings"]).recipe


def top_k_right(evaluation, k: int) -> np.ndarray:
    top = np.argsort(-evaluation.probabilities, axis=1)[:, :k]
    return (top == evaluation.labels[:, None]).any(axis=1)


def scored(evaluation) -> dict:
    """Per test image: right or wrong at top-1 and top-5, and the predicted label."""
    predictions = evaluation.predictions
    return {"top-1": top_k_right(evaluation, 1), "top-5": top_k_right(evaluation, 5), "predictions": predictions}


def interval_json(right: np.ndarray) -> dict:
    return tlc.stats.bootstrap_interval(right).to_json()


def difference_json(a: np.ndarray, b: np.ndarray) -> dict:
    comparison = tlc.stats.paired_comparison(a, b)
    return {**comparison.to_json(), "within_noise": not comparison.significant}


def bottleneck_shift(experiments: dict, test_records) -> dict:
    """Relative distance |bfloat16 - float32| / |float32| of the test images' bottlenecks."""
    vectors = {}
    for precision, experiment in experiments.items():
        backbone = experiment.backbone("efficientnet_lite0")
        vectors[precision], kept = tlc.bottlenecks.load_bottlenecks(test_records, backbone, experiment.bottleneck_dir)
        assert len(kept) == len(test_records), f"{precision}: {len(test_records) - len(kept)} test images not cached"
    a, b = vectors["float32"], vectors["bfloat16"]
    shift = np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
    return {"mean": float(shift.mean()), "median": float(np.median(shift)), "max": float(shift.max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    started = time.perf_counter()
    bottleneck_dir = tlc.config.project_root() / "runs" / "bottlenecks"
    dataset = tlc.data.scan_dataset(tlc.datasets.many_classes())
    experiments = {p: Experiment(dataset, bottleneck_dir, progress=True, precision=p) for p in PRECISIONS}

    rows = []
    for recipe in (RECIPES["tutorial"].recipe, frozen_recipe()):
        runs = {}
        for precision, experiment in experiments.items():
            _, evaluation = experiment.run("efficientnet_lite0", recipe)
            runs[precision] = scored(evaluation)
            print(f"{recipe.name} [{precision}]: top-1 {runs[precision]['top-1'].mean():.1%}", flush=True)
        seed_1 = dataclasses.replace(recipe, config=dataclasses.replace(recipe.config, seed=1))
        _, evaluation = experiments["float32"].run("efficientnet_lite0", seed_1)
        runs["float32, seed 1"] = scored(evaluation)
        settings = dataclasses.asdict(recipe.config)
        row = {"recipe": recipe.name, "settings": settings, "test_images": len(runs["float32"]["top-1"])}
        for metric in ("top-1", "top-5"):
            row[metric] = {arm: interval_json(run[metric]) for arm, run in runs.items()}
            row[f"{metric} bfloat16 - float32"] = difference_json(runs["float32"][metric], runs["bfloat16"][metric])
            row[f"{metric} seed 1 - seed 0 (float32)"] = difference_json(
                runs["float32"][metric], runs["float32, seed 1"][metric]
            )
        row["predictions_changed"] = {
            "bfloat16": int(np.sum(runs["float32"]["predictions"] != runs["bfloat16"]["predictions"])),
            "float32, seed 1": int(np.sum(runs["float32"]["predictions"] != runs["float32, seed 1"]["predictions"])),
        }
        rows.append(row)

    within_noise = all(row[f"{m} bfloat16 - float32"]["within_noise"] for row in rows for m in ("top-1", "top-5"))
    summary = {
        "dataset": "many_classes",
        "num_classes": len(dataset.class_names),
        "test_images": len(dataset.split("test")),
        "backbone": "efficientnet_lite0",
        "recipes": rows,
        "bottleneck_shift": bottleneck_shift(experiments, dataset.split("test")),
        "within_noise": within_noise,
        "command": "python bench/precision.py",
        "seconds": round(time.perf_counter() - started),
        "machine": tlc.course.environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = markdown(summary)
    (RESULTS / "precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def markdown(summary: dict) -> list[str]:
    def value(interval):
        return f"{interval['value']:.1%} [{interval['low']:.1%}, {interval['high']:.1%}]"

    def difference(d):
        verdict = "within noise" if d["within_noise"] else "a real difference"
        return (
            f"{d['value']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}], {d['only_a']} vs {d['only_b']} images, "
            f"p = {d['p_value']:.2f}: {verdict}"
        )

    shift = summary["bottleneck_shift"]
    lines = [
        f"# bfloat16 against float32 bottlenecks: {summary['dataset']}, {summary['num_classes']} labels, "
        f"{summary['test_images']} test images",
        "",
        f"`{summary['command']}`. Top-1 and top-5 with 95% bootstrap intervals; differences paired on the same "
        "images (interval, images only float32 / only the other got right, exact McNemar p).",
        "",
        "| recipe | metric | float32 | bfloat16 | bfloat16 - float32 | float32 seed 1 - seed 0 (for scale) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in summary["recipes"]:
        for metric in ("top-1", "top-5"):
            lines.append(
                f"| {row['recipe']} | {metric} | {value(row[metric]['float32'])} | {value(row[metric]['bfloat16'])} "
                f"| {difference(row[f'{metric} bfloat16 - float32'])} "
                f"| {difference(row[f'{metric} seed 1 - seed 0 (float32)'])} |"
            )
    changed = "; ".join(
        f"{row['recipe']}: {row['predictions_changed']['bfloat16']} with bfloat16, "
        f"{row['predictions_changed']['float32, seed 1']} with another seed"
        for row in summary["recipes"]
    )
    lines += [
        "",
        f"Test predictions that change (of {summary['test_images']}): {changed}.",
        f"bfloat16 moves a bottleneck by {shift['mean']:.1%} of its length on average "
        f"(median {shift['median']:.1%}, at most {shift['max']:.1%}).",
        "",
        "Verdict: "
        + (
            "within noise on every comparison: bfloat16 can be the default where it is faster."
            if summary["within_noise"]
            else "NOT within noise on at least one comparison: float32 stays the default."
        ),
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
