"""How many images a label needs: lesson 06's learning curve, in full.

    python bench/learning_curve.py            # stamps and all of many_classes, 5 draws a point
    python bench/learning_curve.py --quick    # 20 labels of many_classes, 3 draws: a fast check

For 1, 2, 5, 10, 20 training images per label and for all of them, the new layer
(``tlc.train.fit_linear``: a softmax on standardised bottlenecks, the same settings everywhere)
is trained on images drawn at random from each label's training split, and scored on the held-out
images (the validation and test splits together: a learning curve chooses no setting). Each point
is drawn several times with other images; the table gives the mean, the lowest and the highest.
A label with fewer training images than asked gives all it has.

Writes bench/results/learning_curve.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from tlcourse import your_data  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SIZES = (1, 2, 5, 10, 20, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 labels of many_classes and 3 draws a point")
    args = parser.parse_args()
    started = time.perf_counter()
    seeds = (0, 1, 2) if args.quick else (0, 1, 2, 3, 4)
    backbone = tlc.backbones.load_backbone("efficientnet_lite0")
    datasets = {
        "stamps": (tlc.data.scan_dataset(tlc.datasets.stamps()), None),
        "many_classes": (tlc.data.scan_dataset(tlc.datasets.many_classes()), 20 if args.quick else None),
    }
    curves, summary = {}, {"command": "python bench/learning_curve.py" + (" --quick" if args.quick else "")}
    for name, (dataset, num_labels) in datasets.items():
        train, held_out, class_names = your_data.curve_data(dataset, backbone, num_labels)
        points = your_data.learning_curve(train, held_out, len(class_names), SIZES, seeds)
        label = f"{name} ({len(class_names)} labels)"
        curves[label] = points
        summary[name] = {
            "num_labels": len(class_names),
            "num_train": len(train),
            "num_held_out": len(held_out),
            "seeds": list(seeds),
            "rows": your_data.summarize_curve(points),
            "points": [p.to_json() for p in points],
        }
        print(f"{label}: " + ", ".join(f"{r['per_label'] or 'all'}: {r['mean']:.1%}" for r in summary[name]["rows"]))
    summary["seconds"] = round(time.perf_counter() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "learning_curve.json").write_text(json.dumps(summary, indent=2) + "\n")
    figure = your_data.plot_learning_curve(curves)
    figure.savefig(RESULTS / "learning_curve.png", dpi=120)
    lines = [
        "# How many images a label needs",
        "",
        f"`{summary['command']}` ({summary['seconds']} s). Accuracy on the held-out images (validation and test "
        "splits) of a new layer trained on N images per label drawn at random; mean over the draws, with the "
        "lowest and the highest draw. The tutorial asks for 1,000 images per label at least.",
        "",
    ]
    for name in datasets:
        part = summary[name]
        lines += [
            f"**{name}**: {part['num_labels']} labels, {part['num_train']} training images, "
            f"{part['num_held_out']} held-out images, {len(part['seeds'])} draws a point.",
            "",
            "| images per label | training images (mean) | accuracy | lowest | highest |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in part["rows"]:
            lines.append(
                f"| {row['per_label'] or 'all'} | {row['num_train']:.0f} | {row['mean']:.1%} | {row['low']:.1%} "
                f"| {row['high']:.1%} |"
            )
        lines.append("")
    (RESULTS / "learning_curve.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'learning_curve.md'} in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
