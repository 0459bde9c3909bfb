"""Fine-tuning on many_classes (117 labels, lesson 08's split): lesson 09's table.

    python bench/fine_tuning.py            # all labels: frozen features, fine-tuning, both traps
    python bench/fine_tuning.py --quick    # 25 labels: a fast check
    python bench/fine_tuning.py --resume   # after an interruption: keep the rows already measured

Rows, all on the same test images, each with its 95% bootstrap interval (``tlcourse.stats``):
- frozen features with the best head of lesson 08 (the frozen-feature recipe with the best
  validation accuracy in ``bench/results/many_classes.json``, else "+ tuned L2");
- the new layer alone after phase 1 (frozen features, dropout and a dense layer);
- the top blocks fine-tuned the right way (two phases, batch norms frozen);
- trap 1, batch norms in training mode; trap 2, a random head at the head's learning rate;
- for reference, fine-tuning the whole network on a GPU: ``WHOLE_NETWORK_GPU`` below, measured
  elsewhere (not by this script) and quoted with its source.

Writes bench/results/fine_tuning{,_quick}.{json,md}; each finished row is also saved at once to
``fine_tuning{,_quick}_rows.partial.json``, which ``--resume`` reads (the file goes once every row is
measured: ``--no_traps --resume`` writes the table without the missing traps, a later ``--resume`` adds them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from tlcourse import finetune, many_classes, stats  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BLOCKS = 2
# Not measured here: /work/shared/FACTS.md section 7 (measured on an H200 GPU with PyTorch, 2026-11-28), on
# this very split (117 labels; 4,934 train / 653 validation / 652 test images, re-encoded as 256-px crops).
WHOLE_NETWORK_GPU = {
    "name": "whole network fine-tuned on a GPU (reference, not measured here)",
    "num_classes": 117,
    "accuracy": 0.730,  # learning rate chosen on validation; 72.9-74.1% over learning rates 3e-4..3e-3
    "accuracy_range": [0.729, 0.741],
    "linear_probe_accuracy": 0.663,  # a linear layer on frozen standardised Lite0 features, same run
    "recipe": "all of EfficientNet-Lite0, 25 epochs, AdamW, one-cycle, head LR 10x, random-resized crop + flip, "
    "label smoothing 0.1, batch 128",
    "source": "FACTS.md section 7: measured on an H200 GPU with PyTorch 2.11 on 2026-11-28, not by this script",
}


def frozen_recipe_name() -> str:
    """The frozen-feature recipe lesson 08 chose on validation (its table), else "+ tuned L2"."""
    path = RESULTS / "many_classes.json"
    if path.is_file():
        rows = json.loads(path.read_text()).get("techniques", [])
        frozen = [r for r in rows if r["name"] in many_classes.LADDER and not (r["settings"] or {}).get("distortions")]
        if frozen:
            return max(frozen, key=lambda r: r["validation_accuracy"])["name"]
    return "+ tuned L2"


def frozen_features(experiment, dataset, backbone, prepared, recipe: str):
    """Lesson 08's head ``recipe`` on the bottlenecks: (test evaluation, validation accuracy)."""
    _, settings, _ = many_classes.RECIPES[recipe]
    splits = prepared.bottlenecks()
    settings = dict(settings)
    if settings.get("l2") == "tuned":
        settings["l2"] = experiment.tune_l2(dataset, backbone, splits, settings)
    config = tlc.train.TrainConfig(**settings)
    head, _ = tlc.train.train_head(splits["train"], splits["validation"], len(dataset.class_names), config, None, False)
    test = tlc.train.evaluate(head, splits["test"], dataset.class_names)
    return test, tlc.train.evaluate(head, splits["validation"], dataset.class_names).accuracy


PHASE_1 = "phase 1 alone: the new layer on frozen features"


def saved_rows(path: Path, num_test_images: int) -> dict[str, dict]:
    """The rows an interrupted run saved in ``path``, by name (none if there is no such file)."""
    if not path.is_file():
        print(f"--resume: no {path}, every row is measured now", flush=True)
        return {}
    rows = json.loads(path.read_text())
    if any(r["test_images"] != num_test_images for r in rows):
        sys.exit(f"{path} was saved on another set of test images: delete it, or run without --resume")
    print(f"--resume: reusing {len(rows)} rows from {path}", flush=True)
    return {r["name"]: r for r in rows}


def write_atomically(path: Path, text: str) -> None:
    with tlc.atomic.atomic_path(path) as temporary:
        Path(temporary).write_text(text)


def save_rows(path: Path, rows: list[dict]) -> None:
    """Every finished row, at once: ``--resume`` takes them up after an interruption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(rows, default=str))


def row(name: str, test: tlc.train.Evaluation, validation_accuracy: float, seconds: float, **extra) -> dict:
    correct = np.asarray(test.labels) == np.asarray(test.predictions)
    interval = stats.bootstrap_interval(correct)
    return {
        "name": name,
        "accuracy": interval.value,
        "interval": [interval.low, interval.high],
        "test_right": interval.correct,
        "test_images": interval.total,
        "top5_accuracy": many_classes.top_k_accuracy(test, 5),
        "validation_accuracy": validation_accuracy,
        "seconds": round(seconds, 1),
        "correct": "".join("1" if c else "0" for c in correct),
        **extra,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="25 labels")
    parser.add_argument(
        "--no_traps", action="store_true", help="measure no trap row (with --resume, saved ones are kept)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="reuse the rows an interrupted run saved (its .partial.json)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = tlc.data.scan_dataset(tlc.datasets.many_classes())
    if args.quick:
        dataset = many_classes.restrict(dataset, many_classes.class_subset(dataset, 25))
    stem = "fine_tuning_quick" if args.quick else "fine_tuning"
    partial = RESULTS / f"{stem}_rows.partial.json"
    done = saved_rows(partial, len(dataset.split("test"))) if args.resume else {}
    bottleneck_dir = tlc.config.project_root() / "runs" / "bottlenecks"
    experiment = many_classes.Experiment(dataset, bottleneck_dir, progress=True)
    rows = []
    # One pass of the (folded) lower part over every image; the bottlenecks come from the cached
    # activations through the frozen top (equal to the folded backbone's within 1e-5).
    backbone = tlc.backbones.load_backbone("efficientnet_lite0")
    config = finetune.FineTuneConfig(blocks=BLOCKS)
    prepared = None

    def prepare():
        nonlocal prepared
        if prepared is None:
            unfolded = tlc.backbones.load_backbone("efficientnet_lite0", fold_batch_norms=False)
            prepared = finetune.prepare(dataset, backbone, bottleneck_dir, config, unfolded, progress=True)
            print(f"activations cached ({time.perf_counter() - started:.0f} s)", flush=True)
        return prepared

    frozen_name = frozen_recipe_name()
    name = f"frozen features, best head ({frozen_name})"
    if name in done:
        rows.append(done[name])
    else:
        t = time.perf_counter()
        frozen_test, frozen_validation = frozen_features(experiment, dataset, backbone, prepare(), frozen_name)
        rows.append(row(name, frozen_test, frozen_validation, time.perf_counter() - t))
        save_rows(partial, rows)
    print(rows[-1]["name"], f"{rows[-1]['accuracy']:.1%}", flush=True)

    variants = {
        f"top {BLOCKS} blocks fine-tuned: two phases, batch norms frozen (the right way)": {},
        "trap 1: batch norms in training mode (otherwise the right way)": {"batch_norms": "training"},
        "trap 2: random head, one phase at the head's learning rate": {"two_phase": False},
    }
    for name, options in variants.items():
        if name in done:
            rows += [r for r in done.values() if r["name"] == PHASE_1 and not rows[1:]] + [done[name]]
            print(name, f"{rows[-1]['accuracy']:.1%}", "(saved by an interrupted run)", flush=True)
            continue
        if args.no_traps and name.startswith("trap"):
            continue
        t = time.perf_counter()
        settings = finetune.FineTuneConfig(blocks=BLOCKS, **options)
        tuned = finetune.fine_tune(dataset, backbone, bottleneck_dir, settings, False, prepared=prepare())
        validation = tuned.evaluate("validation", dataset.class_names).accuracy
        epochs = len(tuned.history.history["loss"])
        if tuned.head_test is not None and not rows[1:]:
            head_validation = max(tuned.head_history.history["val_accuracy"]) if tuned.head_history else float("nan")
            rows.append(row(PHASE_1, tuned.head_test, head_validation, 0))
        rows.append(row(name, tuned.test, validation, time.perf_counter() - t, phase_2_epochs=epochs, settings=options))
        print(name, f"{rows[-1]['accuracy']:.1%}", f"({rows[-1]['seconds']:.0f} s)", flush=True)
        save_rows(partial, rows)

    right = next(r for r in rows if "the right way" in r["name"])
    for r in rows:
        if r is not right:
            a = np.array([c == "1" for c in right["correct"]])
            b = np.array([c == "1" for c in r["correct"]])
            r["against_the_right_way"] = stats.paired_comparison(a, b).to_json()

    summary = {
        "num_classes": len(dataset.class_names),
        "num_test_images": len(dataset.split("test")),
        "blocks": BLOCKS,
        "config": {k: v for k, v in vars(config).items() if k not in ("distortions", "summaries_dir")},
        "rows": rows,
        "whole_network_gpu": WHOLE_NETWORK_GPU,
        "gap_to_whole_network_points": (
            round(100 * (WHOLE_NETWORK_GPU["accuracy"] - right["accuracy"]), 1)
            if len(dataset.class_names) == WHOLE_NETWORK_GPU["num_classes"]
            else None  # another set of labels: not comparable
        ),
        "seconds": round(time.perf_counter() - started),
        "command": "python bench/fine_tuning.py"
        + "".join(f" --{flag}" for flag in ("quick", "no_traps", "resume") if getattr(args, flag)),
        "rows_from_an_interrupted_run": [r["name"] for r in rows if r["name"] in done],
        "versions": tlc.course.environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_atomically(RESULTS / f"{stem}.json", json.dumps(summary, indent=2, default=str) + "\n")
    write_atomically(RESULTS / f"{stem}.md", markdown(summary))
    if len(rows) == len(variants) + 2:  # every row: no interrupted run left to resume
        partial.unlink(missing_ok=True)
    print(markdown(summary))
    return 0


def markdown(summary: dict) -> str:
    lines = [
        f"# Fine-tuning: {summary['num_classes']} labels, {summary['num_test_images']} test images",
        "",
        f"`{summary['command']}` ({summary['seconds']} s on {summary['versions'].get('device', '?')})",
        "",
        "| recipe | top-1 [95% interval] | top-5 | validation | against the right way (paired) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in summary["rows"]:
        low, high = r["interval"]
        c = r.get("against_the_right_way")
        against = ""
        if c:
            verdict = "within noise" if c["low"] <= 0 <= c["high"] else "a real difference"
            against = f"{c['value']:+.1%} [{c['low']:+.1%}, {c['high']:+.1%}], {verdict}"
        lines.append(
            f"| {r['name']} | {r['accuracy']:.1%} [{low:.1%}, {high:.1%}] ({r['test_right']} of {r['test_images']}) "
            f"| {r['top5_accuracy']:.1%} | {r['validation_accuracy']:.1%} | {against} |"
        )
    gpu = summary["whole_network_gpu"]
    lines.append(
        f"| {gpu['name']} | {gpu['accuracy']:.1%} ({gpu['accuracy_range'][0]:.1%}-{gpu['accuracy_range'][1]:.1%} "
        f"over learning rates) | | | |"
    )
    right = next(r for r in summary["rows"] if "the right way" in r["name"])
    if summary["num_classes"] == gpu["num_classes"]:
        gap = f"The right way on 2 CPU cores lands {100 * (gpu['accuracy'] - right['accuracy']):.1f} points below"
        gap += " the whole-network GPU figure (a negative number: above it)."
    else:
        gap = f"The reference row is on {gpu['num_classes']} labels, this table on {summary['num_classes']}: "
        gap += "not comparable (run without --quick)."
    lines += ["", f"Reference row: {gpu['source']}; recipe: {gpu['recipe']}.", gap, ""]
    if summary.get("rows_from_an_interrupted_run"):
        reused = "; ".join(summary["rows_from_an_interrupted_run"])
        lines += [
            f"Measured by an earlier, interrupted run (`--resume` kept them; their seconds are in the JSON): {reused}.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
