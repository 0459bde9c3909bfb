"""Is model B really better than model A? Both on the same images, with a paired test.

    python -m tlcourse.compare A.pb B.pb --image_dir=DIR [--labels_a L] [--labels_b L] [--split validation] [--json]

Both models label the same images of ``image_dir`` (one sub-folder per label; the folder names the
right answer) with ``tlcourse.label``; each image is then right or wrong for A and for B, and
``tlcourse.stats`` gives B's accuracy minus A's with a paired bootstrap interval and McNemar's exact
test on the images where exactly one of them is right. The verdict is plain: "B is better", "A is
better" when the interval excludes zero, "within noise" when it holds it. The images where the two
models answer differently are listed, with both answers.

``--split`` takes the images of one split of the course's hash split (``validation`` by default:
choose between models on validation images, then measure the chosen one on test once); ``all``
takes every image, for a folder neither model was trained on. Lesson ``04_intervals`` teaches
the paired comparison this command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcourse import label, stats
from tlcourse.data import SPLITS, scan_dataset
from tlcourse.errors import TLCourseError, command_line


@dataclass(frozen=True)
class Disagreement:
    """An image the two models answer differently: its label (the folder) and each model's top answer."""

    path: Path
    label: str
    a: str
    b: str

    def to_json(self) -> dict:
        return {"image": str(self.path), "label": self.label, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class Comparison:
    """Model B against model A on the same images."""

    models: dict[str, str]  # "a" and "b" -> the model file
    split: str
    accuracy_a: stats.Interval
    accuracy_b: stats.Interval
    paired: stats.PairedComparison
    disagreements: list[Disagreement]
    skipped: dict[str, str]  # image -> why neither model could label it

    @property
    def verdict(self) -> str:
        if not self.paired.significant:
            return "within noise"
        return "B is better" if self.paired.difference.value > 0 else "A is better"

    def summary(self) -> str:
        d = self.paired.difference
        lines = [
            f"A: {self.models['a']}: {self.accuracy_a}",
            f"B: {self.models['b']}: {self.accuracy_b}",
            f"on the same {d.total} images ({self.split}): B - A = {d.value:+.1%}, "
            f"{d.confidence:.0%} interval {d.low:+.1%} to {d.high:+.1%}; only A right on {self.paired.only_a}, "
            f"only B right on {self.paired.only_b}; McNemar p = {self.paired.p_value:.3g}",
            f"verdict: {self.verdict}",
        ]
        if self.verdict == "within noise":
            lines[-1] += " (the interval holds zero: these images cannot tell the two models apart)"
        lines.append(f"images where they disagree: {len(self.disagreements)}")
        lines += [f"  {item.path}  label={item.label}  A={item.a}  B={item.b}" for item in self.disagreements]
        lines += [f"skipped {image}: {why}" for image, why in self.skipped.items()]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "models": self.models,
            "split": self.split,
            "a": self.accuracy_a.to_json(),
            "b": self.accuracy_b.to_json(),
            "difference": self.paired.to_json(),
            "verdict": self.verdict,
            "disagreements": [item.to_json() for item in self.disagreements],
            "skipped": self.skipped,
        }


def top_answers(records, graph, labels) -> tuple[list[str | None], dict[str, str]]:
    """Each record's top-1 label from the model ``graph`` (None where the image cannot be read), and the errors."""
    known = set(label.read_labels(labels))
    unknown = sorted({record.label for record in records} - known)
    if unknown:
        raise TLCourseError(
            f"{labels} has no label {', '.join(map(repr, unknown))}, a folder of the images: the model at {graph} "
            "cannot be right on them. Compare on a folder of the labels both models were trained on."
        )
    results = label.label_images([record.path for record in records], graph, labels, top_k=1)
    answers = [result.top[0][0] if result.top else None for result in results]
    return answers, {str(result.path): result.error for result in results if result.error}


def compare(
    graph_a,
    graph_b,
    image_dir,
    labels_a=label.DEFAULT_LABELS,
    labels_b=label.DEFAULT_LABELS,
    split: str = "validation",
    validation_percentage: float = 10.0,
    testing_percentage: float = 10.0,
    seed: int = 0,
) -> Comparison:
    """Model B (``graph_b``, ``labels_b``) against model A on the images of ``split`` (or "all") of ``image_dir``."""
    dataset = scan_dataset(image_dir, validation_percentage, testing_percentage)
    records = dataset.images if split == "all" else dataset.split(split)
    if not records:
        raise TLCourseError(f"{image_dir} has no {split} images: give a bigger folder, or --split=all")
    answers_a, errors_a = top_answers(records, graph_a, labels_a)
    answers_b, errors_b = top_answers(records, graph_b, labels_b)
    skipped = {**errors_a, **errors_b}
    kept = [i for i, record in enumerate(records) if str(record.path) not in skipped]
    if not kept:
        raise TLCourseError(f"no image of {image_dir} ({split}) could be labelled by both models")
    truth = np.array([records[i].label for i in kept])
    right_a = np.array([answers_a[i] for i in kept]) == truth
    right_b = np.array([answers_b[i] for i in kept]) == truth
    disagreements = [
        Disagreement(records[i].path, records[i].label, answers_a[i], answers_b[i])
        for i in kept
        if answers_a[i] != answers_b[i]
    ]
    return Comparison(
        models={"a": str(graph_a), "b": str(graph_b)},
        split=split,
        accuracy_a=stats.bootstrap_interval(right_a, seed=seed),
        accuracy_b=stats.bootstrap_interval(right_b, seed=seed),
        paired=stats.paired_comparison(right_a, right_b, seed=seed),
        disagreements=disagreements,
        skipped=skipped,
    )


@command_line  # exit codes: tlcourse.errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tlcourse.compare", description="Is model B really better than model A? A paired test."
    )
    parser.add_argument("graph_a", metavar="A", help="model A: frozen .pb, SavedModel folder, .keras or .tflite")
    parser.add_argument("graph_b", metavar="B", help="model B, in any of the same formats")
    parser.add_argument("--image_dir", required=True, help="images in one sub-folder per label (the right answers)")
    parser.add_argument("--labels_a", default=label.DEFAULT_LABELS, help="model A's labels file")
    parser.add_argument("--labels_b", default=label.DEFAULT_LABELS, help="model B's labels file")
    parser.add_argument(
        "--split",
        choices=[*SPLITS, "all"],
        default="validation",
        help="which images of image_dir: a split of retrain's hash split (choose on validation, report on test "
        "once), or all of them for a folder neither model was trained on",
    )
    parser.add_argument("--validation_percentage", type=float, default=10.0, help="as given to retrain")
    parser.add_argument("--testing_percentage", type=float, default=10.0, help="as given to retrain")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    comparison = compare(
        args.graph_a,
        args.graph_b,
        args.image_dir,
        args.labels_a,
        args.labels_b,
        args.split,
        args.validation_percentage,
        args.testing_percentage,
    )
    print(json.dumps(comparison.to_json(), indent=2) if args.json else comparison.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
