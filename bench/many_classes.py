"""Reproduce lesson 07's table: the many-classes accuracy collapse and what wins accuracy back.

    python bench/many_classes.py            # the whole table (about 10-15 minutes on 2 cores)
    python bench/many_classes.py --quick    # 25 labels, fewer recipes: a fast check

Every recipe is measured on the same dataset (``many_classes``, over 100 labels) and the same
split. Writes bench/results/many_classes.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from tlcourse.many_classes import RECIPES, Experiment, restrict  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLASS_COUNTS = (5, 10, 25, 50)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="25 labels and three recipes")
    args = parser.parse_args()

    dataset = tlc.data.scan_dataset(tlc.datasets.many_classes())
    experiment = Experiment(dataset, tlc.config.project_root() / "runs" / "bottlenecks", progress=True)
    recipes = dict(RECIPES)
    if args.quick:
        experiment.dataset = restrict(dataset, tlc.many_classes.class_subset(dataset, 25))
        recipes = {name: RECIPES[name] for name in list(RECIPES)[:3]}

    table = []
    for name, (backbone, settings, distortions) in recipes.items():
        result, evaluation = experiment.run(name, backbone, settings, distortions)
        table.append(result)
        print(
            f"{name:<42s} top-1 {result.accuracy:.1%}  top-5 {result.top5_accuracy:.1%}  "
            f"train {result.train_accuracy:.1%}  ({result.seconds:.0f} s)",
            flush=True,
        )
    baseline, best = table[0], max(table, key=lambda r: r.accuracy)

    sizes = [n for n in CLASS_COUNTS if n < len(experiment.dataset.class_names)] + [len(experiment.dataset.class_names)]
    curves = {
        "tutorial": experiment.accuracy_vs_classes(sizes[:-1], "tutorial") + [baseline],
        best.name: experiment.accuracy_vs_classes(sizes[:-1], best.name) + [best],
    }

    summary = {
        "num_classes": len(experiment.dataset.class_names),
        "num_test_images": len(experiment.dataset.split("test")),
        "baseline_accuracy": baseline.accuracy,
        "best_accuracy": best.accuracy,
        "best_recipe": best.name,
        "gain_points": round(100 * (best.accuracy - baseline.accuracy), 1),
        "techniques": [result.to_json() for result in table],
        "accuracy_vs_classes": {name: [[r.num_classes, r.accuracy] for r in rs] for name, rs in curves.items()},
        "command": "python bench/many_classes.py" + (" --quick" if args.quick else ""),
        "versions": tlc.course.environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "many_classes_quick" if args.quick else "many_classes"
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    lines = [
        f"# Many classes: {summary['num_classes']} labels, {summary['num_test_images']} test images",
        "",
        f"`{summary['command']}`",
        "",
        "| recipe | backbone | top-1 | top-5 | train | validation |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.name} | {r.backbone} | {r.accuracy:.1%} | {r.top5_accuracy:.1%} | {r.train_accuracy:.1%} | "
        f"{r.validation_accuracy:.1%} |"
        for r in table
    ]
    lines += ["", "| labels | " + " | ".join(curves) + " |", "| --- |" + " --- |" * len(curves)]
    for index, size in enumerate(sizes):
        lines.append(f"| {size} | " + " | ".join(f"{curves[name][index].accuracy:.1%}" for name in curves) + " |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    figure = tlc.plots.plot_recipes(table)
    figure.savefig(RESULTS / f"{stem}.png", dpi=100, bbox_inches="tight")
    tlc.plots.plot_accuracy_vs_classes(curves).savefig(RESULTS / f"{stem}_curve.png", dpi=100, bbox_inches="tight")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
