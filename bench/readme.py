"""Write the README's tables of measured figures from bench/results/*.json.

    python bench/readme.py            # rewrite each table between its marker comments in README.md
    python bench/readme.py --check    # exit 1, naming the tables, if README.md differs from the results

Each table sits between ``<!-- bench/readme.py: NAME -->`` and ``<!-- end of bench/readme.py: NAME -->``.
A benchmark rerun changes a results file; running this script then changes the README to match, and
``tests/test_readme_figures.py`` fails until it has been run. The prose around the tables stays
qualitative, so that a rerun cannot leave it saying an old figure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"

# What each recipe of bench/many_classes.py changes from the row it is compared with, as flags.
WHAT_IT_CHANGES = {
    "tutorial": "1,000 SGD steps of batch 100, learning rate 0.01, EfficientNet-Lite0",
    "+ standardized bottlenecks": "`--standardize_bottlenecks`",
    "+ Adam, cosine schedule, early stopping": (
        "`--optimizer=adam --learning_rate_schedule=cosine --early_stopping_patience=10`, up to 3,000 steps"
    ),
    "+ tuned L2": "`--l2` chosen on validation",
    "+ label smoothing 0.1": "`--label_smoothing=0.1`",
    "+ cached augmentation": "`--num_distorted_variants` with the distortion flags",
    "fine-tune the top 2 blocks (Lite0, its own settings)": "`--fine_tune_blocks=2`",
    "Lite2 instead of Lite0 (tuned L2 settings)": "`--architecture=efficientnet_lite2` (260 px), + tuned L2's settings",
}

# The Speed table's columns: title, then the contender's key in summary.json.
SPEED_COLUMNS = {
    "caching": "caching",
    "retrain.py's way": "retrain_py",
    "Keras recipe": "keras_recipe",
    "network alone": "network_only",
    "TensorFlow caching": "caching_tensorflow",
    "Pillow only": "caching_pillow_only",
    "files written inline": "caching_writes_inline",
    "bfloat16 caching": "caching_bfloat16",
    "XLA": "caching_xla",
}
BACKBONE_NAMES = {"efficientnet_lite0": "EfficientNet-Lite0", "inception_v3": "Inception-v3"}
FORMAT_NAMES = {"saved_model": "SavedModel", "tflite_float": "TFLite float", "tflite_int8": "TFLite int8"}


def load(name: str) -> dict:
    path = RESULTS / name
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing: run the benchmark that writes it (see README, Development)")
    return json.loads(path.read_text())


def percent(value: float, sign: bool = False) -> str:
    return f"{value:+.1%}" if sign else f"{value:.1%}"


def interval(value: float, low: float, high: float, sign: bool = False) -> str:
    return f"{percent(value, sign)} [{percent(low, sign)}, {percent(high, sign)}]"


def rounded(value: float, decimals: int) -> str:
    """``value`` to ``decimals`` places, halves rounded up as a reader would: 20.25 -> 20.3."""
    return f"{Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP):f}"


def rate(images_per_second: float, cpu_ms_per_image: float) -> str:
    """A Speed cell, 'images/s (CPU ms per image)': 81.5 (23.4), 3.6 (542)."""
    return f"{rounded(images_per_second, 1)} ({rounded(cpu_ms_per_image, 1 if cpu_ms_per_image < 100 else 0)})"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|" for cells in lines)


def recipes_table(results: dict) -> str:
    """The recipes of one many-label set, the one chosen on validation in bold."""
    rows = []
    for row in results["techniques"]:
        if row["name"] not in WHAT_IT_CHANGES:
            raise SystemExit(f"error: recipe {row['name']!r} has no entry in WHAT_IT_CHANGES of {__file__}: add one")
        comparison = row.get("comparison")
        against = ""
        if comparison is not None:
            verdict = "within noise" if row["within_noise"] else "a real difference"
            difference = interval(comparison["value"], comparison["low"], comparison["high"], sign=True)
            against = f"{difference} vs {row['compared_with']}: {verdict}"
        top1 = interval(row["accuracy"], row["interval"]["low"], row["interval"]["high"])
        what = WHAT_IT_CHANGES[row["name"]]
        name = row["name"] + (" (**chosen on validation**)" if row["name"] == results["chosen_on_validation"] else "")
        train = percent(row["train_accuracy"])
        rows.append(
            [name, what, top1, percent(row["top5_accuracy"]), train, percent(row["validation_accuracy"]), against]
        )
    header = ["recipe", "what it changes", "top-1 [95% interval]", "top-5", "train", "validation"]
    return table([*header, "against the row it changes"], rows)


def many_classes() -> str:
    return recipes_table(load("many_classes.json"))


def many_classes_150() -> str:
    return recipes_table(load("many_classes.json")["seed_scale"])


def speed_targets() -> str:
    rows = [
        [name, rounded(figures["measured"], 2), rounded(figures["target"], 2), "met" if figures["met"] else "not met"]
        for name, figures in load("summary.json")["targets"].items()
    ]
    return table(["speed target (`targets` in summary.json)", "measured", "target", ""], rows)


def speed_jobs() -> str:
    """A warm rerun and training (summary.json), and labelling one image three ways (label_one_image.json)."""
    summary, one_image = load("summary.json"), load("label_one_image.json")
    seconds = {
        way: one_image[f"label_one_image_{way}_process_seconds"] for way in ("tensorflow", "kept_litert", "tflite")
    }
    speedups = {
        "kept_litert": one_image["label_one_image_speedup"],
        "tflite": one_image["label_one_image_tflite_speedup"],
    }
    warm = f"{summary['warm_speedup']}x faster than cold"
    training = f"{summary['head_training_seconds_1000_steps_batch_100']} s"
    rows = [
        ["a folder cached again, every bottleneck already cached", warm, summary["machine"]],
        ["1,000 training steps of batch 100 on cached bottlenecks", training, summary["machine"]],
        [
            "`label_image.py IMAGE` with a `.pb` model, through TensorFlow",
            f"{seconds['tensorflow']} s",
            one_image["machine"],
        ],
    ]
    for way, what in (
        ("kept_litert", "the `.pb` model's kept LiteRT conversion"),
        ("tflite", "the `.tflite` model"),
    ):
        rows.append([f"the same with {what}", f"{seconds[way]} s ({speedups[way]}x faster)", one_image["machine"]])
    return table(["job (labelling: a whole process, start-up included)", "time", "machine"], rows)


def speed() -> str:
    contenders = load("summary.json")["contenders"]
    rows = []
    for name, measured in contenders.items():
        backbone, images = name.split(", ")
        cells = [f"{BACKBONE_NAMES[backbone]}, {images}"]
        for key in SPEED_COLUMNS.values():
            figures = measured.get(key)
            cells.append("" if figures is None else rate(figures["images_per_second"], figures["cpu_ms_per_image"]))
        rows.append(cells)
    return table(["backbone, images", *SPEED_COLUMNS], rows)


def deploy_formats() -> str:
    results = load("deploy.json")
    rows = []
    for key, name in FORMAT_NAMES.items():
        figures = results["formats"][key]
        agreement = results["agreement"].get(key)
        agrees = (
            "same network"
            if agreement is None
            else " / ".join(f"{agreement[part]['agree']} of {agreement[part]['images']}" for part in agreement)
        )
        rows.append([name, f"{figures['mb']:.2f}", f"{figures['ms_per_image']:.2f}", agrees])
    return table(["format", "MB", "ms per image", "agrees with Keras: stamps test / held out / all"], rows)


def deploy_int8() -> str:
    """The TFLite models' agreement with Keras on many_classes, by how the new layer was trained."""
    rows = []
    names = {"tutorial": "the tutorial's recipe", "tuned": "lesson 09's tuned recipe"}
    for key, recipe in load("deploy.json")["many_classes_recipes"].items():
        agreement = recipe["agreement"]
        agrees = [
            f"{agreement[form]['test']['agree']} of {agreement[form]['test']['images']}"
            for form in ("tflite_float", "tflite_int8")
        ]
        rows.append(
            [
                names.get(key, key),
                percent(recipe["keras_test_accuracy"]),
                f"{recipe['median_top_probability']}",
                *agrees,
            ]
        )
    header = ["new layer on `many_classes`", "Keras test top-1", "median top probability", "TFLite float agrees"]
    return table([*header, "TFLite int8 agrees"], rows)


def deploy_backbones() -> str:
    rows = []
    for backbone in load("deploy.json")["backbones"]:
        milliseconds = backbone["ms_per_image"]
        accuracy = interval(backbone["many_classes_accuracy"], *backbone["many_classes_interval"])
        rows.append(
            [
                f"`{backbone['backbone']}`",
                f"{backbone['input_size']} px",
                f"{backbone['tflite_float_mb']:.2f}",
                f"{backbone['tflite_int8_mb']:.2f}",
                f"{milliseconds['tflite_float']:.2f}",
                f"{milliseconds['tflite_int8']:.2f}",
                accuracy,
            ]
        )
    header = ["backbone", "input", "float MB", "int8 MB", "ms float", "ms int8"]
    return table([*header, "many_classes accuracy [95% interval] (same recipe)"], rows)


def paired(comparison: dict, reference: str) -> str:
    verdict = "within noise" if comparison["low"] <= 0 <= comparison["high"] else "a real difference"
    return (
        f"{interval(comparison['value'], comparison['low'], comparison['high'], sign=True)} vs {reference}: {verdict}"
    )


def fine_tuning() -> str:
    results = load("fine_tuning.json")
    auto = results["auto"]
    rows = []
    for row in results["rows"]:
        against = ""
        if row["name"] in auto["fine_tuned_against_best_frozen"]:
            against = paired(auto["fine_tuned_against_best_frozen"][row["name"]], auto["best_frozen"])
        elif "against_the_recipe" in row:
            against = paired(row["against_the_recipe"], "the recipe")
        name = row["name"] + (" (**chosen on validation**)" if row.get("chosen") else "")
        test = interval(row["accuracy"], *row["interval"])
        rows.append([name, percent(row["validation_accuracy"]), test, against, f"{row['seconds']:.0f}"])
    header = ["recipe", "validation", "test top-1 [95% interval]", "paired, on the same test images", "seconds"]
    return table(header, rows)


def fine_tuning_runs() -> str:
    rows = []
    for name in ("fine_tuning.json", "fine_tuning_150.json"):
        results = load(name)
        auto = results["auto"]
        chosen = next(row for row in results["rows"] if row.get("chosen"))
        fine = next(row for row in results["rows"] if row["fine_tuned"] and "against_the_recipe" not in row)
        speed = f"{fine['notes']['seconds_per_epoch']} s, {fine['notes']['training_images_per_second']} images/s"
        precision = results.get("precision")
        rows.append(
            [
                f"`{results['dataset']}`",
                str(results["num_classes"]),
                str(results["num_test_images"]),
                chosen["name"],
                interval(chosen["accuracy"], *chosen["interval"]),
                f"{percent(results['target'])}: {'met' if results['target_met'] else 'not met'}",
                f"{auto['wall_seconds'] / 60:.1f} min",
                speed,
                f"{precision['bfloat16_against_float32']}x" if precision else "",
            ]
        )
    header = ["dataset", "labels", "test images", "chosen on validation", "its test top-1 [95% interval]", "target"]
    return table([*header, "`--recipe=auto`, caching included", "an epoch of fine-tuning", "bfloat16 / float32"], rows)


def fine_tuning_stamps() -> str:
    results = load("fine_tuning_stamps.json")
    rows = [
        ["`make demo`'s program (`python -m tlcourse.demo`)", ", ".join(f"{t} s" for t in results["demo"]), ""],
        [
            "its command with `--recipe=auto`",
            ", ".join(f"{t} s" for t in results["auto"]),
            f"{results['auto_chosen']}; {results['auto_against_demo']}x the demo",
        ],
    ]
    return table(["stamps, a whole process in a fresh project folder", "each round", "chosen"], rows)


TABLES: dict[str, Callable[[], str]] = {
    "fine_tuning": fine_tuning,
    "fine_tuning_stamps": fine_tuning_stamps,
    "fine_tuning_runs": fine_tuning_runs,
    "deploy_formats": deploy_formats,
    "deploy_int8": deploy_int8,
    "deploy_backbones": deploy_backbones,
    "many_classes": many_classes,
    "many_classes_150": many_classes_150,
    "speed": speed,
    "speed_targets": speed_targets,
    "speed_jobs": speed_jobs,
}


def marked(name: str) -> re.Pattern:
    return re.compile(
        rf"(<!-- bench/readme\.py: {name} -->\n).*?(\n<!-- end of bench/readme\.py: {name} -->)", flags=re.S
    )


def render(text: str) -> str:
    """``text`` (the README) with every marked table rewritten from bench/results/."""
    for name, make in TABLES.items():
        pattern = marked(name)
        if len(pattern.findall(text)) != 1:
            raise SystemExit(f"error: {README} must hold the markers of table {name!r} once: see {__file__}")
        match = pattern.search(text)
        text = text[: match.end(1)] + make() + text[match.start(2) :]
    return text


def stale_tables(text: str) -> list[str]:
    """Names of the tables whose text in ``text`` differs from what the results files give."""
    fresh = render(text)
    return [name for name in TABLES if marked(name).search(text).group(0) != marked(name).search(fresh).group(0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if README.md is out of date")
    arguments = parser.parse_args(argv)
    text = README.read_text()
    if arguments.check:
        stale = stale_tables(text)
        if stale:
            print(f"README.md is out of date for {', '.join(stale)}: run python bench/readme.py", file=sys.stderr)
        return 1 if stale else 0
    README.write_text(render(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
