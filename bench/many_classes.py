"""Reproduce lesson 09's table: the many-classes accuracy collapse and what wins accuracy back.

    python bench/many_classes.py            # the whole table (about 40 minutes on 2 cores, caches included)
    python bench/many_classes.py --quick    # 25 labels, three recipes: a fast check
    python bench/many_classes.py --only "Lite2 instead of Lite0 (tuned L2 settings)"
                                            # measure that row; every other one from runs/bench_many_classes/

Every recipe is measured on the same dataset (``many_classes``, 117 labels) and the same split:

- each accuracy carries a 95% bootstrap interval over the test images, and each row is compared
  with the row it changes one thing from by a paired test on the same images (``tlcourse.stats``);
- the recipe to use is chosen on the validation split, and the test accuracy of that choice is
  reported (choosing by test accuracy would flatter it);
- the accuracy-against-labels curve draws 3 random label subsets for every size;
- the seed's own scale: the tutorial's command and the frozen-feature ladder on
  ``many_classes_150`` (over 150 labels).

Writes bench/results/many_classes.{json,md,png} and many_classes_curve.png after each stage (recipes,
seed scale, curve); rows already measured are kept in runs/bench_many_classes/, so an interrupted
run goes on where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from tlcourse.many_classes import (  # noqa: E402
    CHANGES_FROM,
    LADDER,
    RECIPES,
    Experiment,
    RecipeResult,
    Row,
    as_measured,
    choose_on_validation,
    class_subset,
    compare,
    restrict,
)

RESULTS = ROOT / "bench" / "results"
CLASS_COUNTS = (5, 10, 25, 50)
SUBSET_SEEDS = (0, 1, 2)
DONE = ROOT / "runs" / "bench_many_classes"  # rows already measured: an interrupted run goes on from there
ONLY: set[str] | None = None  # --only: the recipes this run may measure (None: all); the rest must be remembered


class NotRemembered(LookupError):
    """A row --only did not name, and no earlier run measured."""


def done_path(key: dict) -> Path:
    """Where the result measured with ``key`` is remembered."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return DONE / f"{digest}.json"


def remembered(key: dict, measure) -> RecipeResult:
    """``measure()``, or its result from an earlier run with exactly the same ``key`` (dataset, recipe, subset)."""
    DONE.mkdir(parents=True, exist_ok=True)
    path = done_path(key)
    if path.is_file():
        return RecipeResult.from_json(json.loads(path.read_text()))
    if ONLY is not None and key["recipe"] not in ONLY:
        raise NotRemembered(f"not in {DONE} and not named by --only")
    result = measure()
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(result.to_json(), default=str))
    os.replace(temporary, path)
    return result


def run_rows(experiment: Experiment, recipes: dict, label: str) -> tuple[list[RecipeResult], dict[str, str]]:
    """Every recipe once; a recipe that fails is reported as not run (with its error), not hidden."""
    table, failed = [], {}
    names = sorted(experiment.dataset.class_names)
    for name, row in recipes.items():
        try:
            result = remembered(key_of(names, row), lambda: experiment.run(*row)[0])  # noqa: B023
        except Exception as error:  # e.g. fine-tuning being rewritten: report it and go on
            traceback.print_exc()
            failed[name] = f"{type(error).__name__}: {error}"
            print(f"[{label}] {name}: NOT RUN ({failed[name]})", flush=True)
            continue
        table.append(result)
        print(
            f"[{label}] {name:<52s} top-1 {result.interval()}  top-5 {result.top5_accuracy:.1%}  "
            f"train {result.train_accuracy:.1%}  validation {result.validation_accuracy:.1%}  ({result.seconds:.0f} s)",
            flush=True,
        )
    return table, failed


def forgotten(experiment: Experiment, recipes: dict) -> list[str]:
    """The rows of the committed results file that --only would drop: measured there, not remembered here."""
    path = RESULTS / "many_classes.json"
    held = {row["name"] for row in json.loads(path.read_text())["techniques"]} if path.is_file() else set()
    labels = sorted(experiment.dataset.class_names)
    return [
        name
        for name, row in recipes.items()
        if name in held and name not in ONLY and not done_path(key_of(labels, row)).is_file()
    ]


def key_of(labels: list[str], row: Row, **extra) -> dict:
    """What a remembered result was measured with: the labels, the backbone and the whole recipe."""
    spec = dataclasses.asdict(row.recipe)
    return {"labels": labels, "recipe": row.recipe.name, "backbone": row.backbone, "spec": spec, **extra}


def frozen_features(table: list[RecipeResult]) -> list[RecipeResult]:
    """The rows that train a new layer on frozen features (not the fine-tuning rows)."""
    return [r for r in table if isinstance(RECIPES[r.name].recipe, tlc.pipeline.HeadRecipe)]


def describe_rows(table: list[RecipeResult]) -> tuple[list[dict], RecipeResult, RecipeResult]:
    """Rows as JSON with intervals and paired comparisons; the recipe chosen on validation, overall and frozen."""
    by_name = {r.name: r for r in table}
    chosen, chosen_frozen = choose_on_validation(table), choose_on_validation(frozen_features(table))
    rows = []
    for result in table:
        base = CHANGES_FROM.get(result.name)
        if base is None and result.name != table[0].name:
            base = chosen_frozen.name  # a separate recipe: compared with the frozen-feature recipe chosen
        base = base if base in by_name and base != result.name else None
        interval = result.interval()
        row = {
            **result.to_json(),
            "interval": {"low": interval.low, "high": interval.high},
            "test_right": interval.correct,
            "test_images": interval.total,
            "compared_with": base,
        }
        if base:
            comparison = compare(by_name[base], result)
            row["comparison"] = comparison.to_json()
            row["within_noise"] = not comparison.significant
        rows.append(row)
    return rows, chosen, chosen_frozen


def markdown_rows(rows: list[dict]) -> list[str]:
    lines = [
        "| recipe | backbone | top-1 [95% interval] | top-5 | train | validation | against the row it changes "
        "| verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        interval = row["interval"]
        if row.get("compared_with"):
            c = row["comparison"]
            against = f"{c['value']:+.1%} [{c['low']:+.1%}, {c['high']:+.1%}] vs {row['compared_with']}"
            verdict = "within noise" if row["within_noise"] else "a real difference"
        else:
            against, verdict = "", ""
        top1 = f"{row['accuracy']:.1%} [{interval['low']:.1%}, {interval['high']:.1%}]"
        lines.append(
            f"| {row['name']} | {row['backbone']} | {top1}"
            f" | {row['top5_accuracy']:.1%} | {row['train_accuracy']:.1%} | {row['validation_accuracy']:.1%} | "
            f"{against} | {verdict} |"
        )
    return lines


def curve_json(results: list[RecipeResult]) -> list[dict]:
    return [
        {
            "num_classes": r.num_classes,
            "subset_seed": r.subset_seed,
            "accuracy": r.accuracy,
            "test_images": len(r.correct),
        }
        for r in results
    ]


def run_curve(experiment: Experiment, recipe: RecipeResult, sizes) -> list[RecipeResult]:
    row = as_measured(RECIPES[recipe.name], recipe.settings)  # the L2 chosen on all labels, not re-tuned per subset
    results = []
    for size in sizes:
        for seed in SUBSET_SEEDS:
            subset = restrict(experiment.dataset, class_subset(experiment.dataset, size, seed))

            def measure(subset=subset):
                return experiment.run(*row, subset)[0]

            result = remembered(key_of(subset.class_names, row, curve=True), measure)
            result.subset_seed = seed
            results.append(result)
            print(f"[curve] {recipe.name}: {size} labels, subset {seed}: {result.accuracy:.1%}", flush=True)
    return results + [recipe]


def write_report(stem: str, summary: dict, table, curves: dict, sizes) -> None:
    """The results files, from whatever stages have finished (``summary['stages_done']``)."""
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    chosen = summary["chosen_on_validation"]
    interval = summary["chosen_test_interval"]
    lines = [
        f"# Many classes: {summary['num_classes']} labels, {summary['num_test_images']} test images",
        "",
        f"`{summary['command']}` ({summary['seconds'] // 60} minutes). "
        "Top-1 with its 95% bootstrap interval over the test images. Each row is compared with the row it "
        f"changes one thing from (the ladder: {', '.join(LADDER)}; the Lite2 row swaps the backbone of the "
        "tuned-L2 row), or, for a separate recipe, with the frozen-feature recipe chosen on validation: "
        "a paired difference on the same images with its 95% interval.",
        "",
        *markdown_rows(summary["techniques"]),
        "",
        f"Chosen on validation: **{chosen}** (validation {summary['chosen_validation_accuracy']:.1%}), test "
        f"{summary['chosen_test_accuracy']:.1%} [{interval['low']:.1%}, {interval['high']:.1%}]; "
        f"among the frozen-feature recipes: {summary['chosen_frozen_on_validation']}.",
    ]
    if summary["not_run"]:
        lines += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in summary["not_run"].items())]
    if curves:
        lines += [
            "",
            f"## Accuracy against the number of labels ({len(SUBSET_SEEDS)} random label subsets per size)",
            "",
            "| labels | " + " | ".join(curves) + " |",
            "| --- |" + " --- |" * len(curves),
        ]
        for size in sizes:
            cells = []
            for results in curves.values():
                values = [r.accuracy for r in results if r.num_classes == size]
                cells.append(", ".join(f"{v:.1%}" for v in values))
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
    seed = summary.get("seed_scale")
    if seed:
        lines += [
            "",
            f"## The seed's scale: {seed['dataset']}, {seed['num_classes']} labels, "
            f"{seed['num_test_images']} test images",
            "",
            *markdown_rows(seed["techniques"]),
            "",
            f"Chosen on validation: **{seed['chosen_on_validation']}**, test {seed['chosen_test_accuracy']:.1%}.",
        ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    tlc.plots.plot_recipes(table).savefig(RESULTS / f"{stem}.png", dpi=100, bbox_inches="tight")
    if curves:
        tlc.plots.plot_accuracy_vs_classes(curves).savefig(RESULTS / f"{stem}_curve.png", dpi=100, bbox_inches="tight")
    print("\n".join(lines), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="25 labels and three recipes")
    parser.add_argument(
        "--only",
        action="append",
        metavar="RECIPE",
        choices=list(RECIPES),
        help="measure only this recipe (repeatable); every other row comes from an earlier run on this machine, "
        "and the run is refused if a row of the results file would be lost",
    )
    args = parser.parse_args()
    global ONLY  # one run, one setting
    ONLY = set(args.only) if args.only else None
    started = time.perf_counter()
    stem = "many_classes_quick" if args.quick else "many_classes"
    RESULTS.mkdir(parents=True, exist_ok=True)
    bottleneck_dir = tlc.config.project_root() / "runs" / "bottlenecks"

    dataset = tlc.data.scan_dataset(tlc.datasets.many_classes())
    experiment = Experiment(dataset, bottleneck_dir, progress=True)
    recipes, sizes = dict(RECIPES), CLASS_COUNTS
    if args.quick:
        experiment.dataset = restrict(dataset, class_subset(dataset, 25))
        recipes, sizes = {name: RECIPES[name] for name in list(RECIPES)[:3]}, (5, 10)

    if ONLY and not args.quick and (lost := forgotten(experiment, recipes)):
        parser.error(
            f"--only goes on from the rows an earlier run measured on this machine ({DONE}), and the rows "
            f"{', '.join(lost)} of bench/results/many_classes.json are not there: the results file would lose "
            "them. Run `python bench/many_classes.py` (the whole table) instead."
        )

    # Work is done in order of importance, one row at a time, and the results files are rewritten after
    # each: on a busy machine an interrupted run still leaves the rows, the curve and the seed's scale
    # measured so far (and a rerun goes on from there).
    num_classes = len(experiment.dataset.class_names)
    full_sizes = [n for n in sizes if n < num_classes]
    summary = {
        "dataset": "many_classes",
        "num_classes": num_classes,
        "num_images": len(experiment.dataset.images),
        "num_test_images": len(experiment.dataset.split("test")),
        "ladder": list(LADDER),
        "subset_seeds": list(SUBSET_SEEDS),
        "command": "python bench/many_classes.py"
        + (" --quick" if args.quick else "")
        + "".join(f' --only "{name}"' for name in args.only or []),
        "versions": tlc.course.environment(),
        "stages_done": [],
    }
    table, failed, curves = [], {}, {}
    big_experiment, big_table, big_failed = None, [], {}

    def report(stage):
        summary["stages_done"] = [*summary["stages_done"], stage]
        summary["seconds"] = round(time.perf_counter() - started)
        write_report(stem, summary, table, curves, [*full_sizes, num_classes])

    def main_row(name):
        measured, not_run = run_rows(experiment, {name: recipes[name]}, "many_classes")
        table.extend(measured)
        table.sort(key=lambda r: list(recipes).index(r.name))
        failed.update(not_run)
        rows, chosen, chosen_frozen = describe_rows(table)
        interval = chosen.interval()
        summary.update(
            {
                "baseline_accuracy": table[0].accuracy,
                "chosen_on_validation": chosen.name,
                "chosen_validation_accuracy": chosen.validation_accuracy,
                "chosen_test_accuracy": chosen.accuracy,
                "chosen_test_interval": {"low": interval.low, "high": interval.high},
                "chosen_frozen_on_validation": chosen_frozen.name,
                "chosen_frozen_test_accuracy": chosen_frozen.accuracy,
                "best_by_test_for_reference": max(table, key=lambda r: r.accuracy).name,
                "gain_points": round(100 * (chosen.accuracy - table[0].accuracy), 1),
                "techniques": rows,
                "not_run": failed,
            }
        )
        report(f"many_classes: {name}")

    def seed_row(name):
        nonlocal big_experiment
        if big_experiment is None:
            big = tlc.data.scan_dataset(tlc.datasets.many_classes_150())
            big_experiment = Experiment(big, bottleneck_dir, progress=True)
            if args.quick:
                big_experiment.dataset = restrict(big, class_subset(big, 30))
        measured, not_run = run_rows(big_experiment, {name: LADDER[name]}, "many_classes_150")
        big_table.extend(measured)
        big_table.sort(key=lambda r: list(LADDER).index(r.name))
        big_failed.update(not_run)
        big_rows, big_chosen, _ = describe_rows(big_table)
        summary["seed_scale"] = {
            "dataset": "many_classes_150",
            "num_classes": len(big_experiment.dataset.class_names),
            "num_images": len(big_experiment.dataset.images),
            "num_test_images": len(big_experiment.dataset.split("test")),
            "chosen_on_validation": big_chosen.name,
            "chosen_test_accuracy": big_chosen.accuracy,
            "techniques": big_rows,
            "not_run": big_failed,
        }
        report(f"many_classes_150: {name}")

    def curve(name):
        # 3 random label subsets per size; a tuned recipe keeps the L2 chosen on all the labels.
        curves[name] = run_curve(experiment, next(r for r in table if r.name == name), full_sizes)
        summary["accuracy_vs_classes"] = {key: curve_json(results) for key, results in curves.items()}
        summary["curve_recipes"] = list(curves)
        report(f"curve: {name}")

    first = [name for name in list(LADDER)[:4] if name in recipes]  # tutorial .. tuned L2: quick to train
    for name in first:
        main_row(name)
    curve("tutorial")
    for name in first if not args.quick else first[:3]:
        seed_row(name)
    rest = [name for name in recipes if name not in first]
    if "+ label smoothing 0.1" in rest:
        main_row("+ label smoothing 0.1")
    curve(describe_rows(frozen_features(table))[1].name)
    if not args.quick:
        seed_row("+ label smoothing 0.1")
    for name in rest:
        if name not in {r.name for r in table}:
            main_row(name)
    if not args.quick:
        seed_row("+ cached augmentation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
