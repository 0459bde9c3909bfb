"""``make demo``: the whole tutorial on the embedded default, offline.

Prepares the ``stamps`` dataset, runs the tutorial's retrain command on it (as a ``RetrainConfig``) (1,000 steps, batch
100, learning rate 0.01), prints the final test accuracy, and labels one held-out test image per
label with the exported frozen graph, as ``label_image.py`` would.
"""

from __future__ import annotations

import sys

from tlcourse import config, datasets, label, retrain
from tlcourse.data import scan_dataset
from tlcourse.errors import command_line


@command_line  # exit codes: tlcourse.errors
def main() -> int:
    image_dir = datasets.stamps()
    run = config.project_root() / "runs" / "demo"
    settings = retrain.RetrainConfig(
        image_dir=image_dir,
        bottleneck_dir=run / "bottlenecks",
        how_many_training_steps=1000,
        train_batch_size=100,
        summaries_dir=run / "training_summaries" / "basic",
        output_graph=run / "retrained_graph.pb",
        output_labels=run / "retrained_labels.txt",
    )
    changed = [f"--{name}={value}" for name, value in settings.to_json().items() if settings.is_set(name)]
    print("python retrain.py " + " ".join(changed), flush=True)
    result = retrain.retrain(settings)

    held_out = {}
    for record in scan_dataset(image_dir).split("test"):
        held_out.setdefault(record.label, record.path)
    print("\nLabelling one held-out test image per label (python label_image.py IMAGE):")
    for labelled in label.label_images(list(held_out.values()), result.paths["graph"], result.paths["labels"]):
        best, score = labelled.top[0]
        truth = labelled.path.parent.name
        print(f"  {labelled.path.name:<28s} true: {truth:<11s} predicted: {best:<11s} ({score:.1%})")
    evaluation = result.evaluation
    print(f"\nFinal test accuracy on stamps: {evaluation.accuracy:.1%} (N={len(evaluation.labels)}).")
    print(f"Outputs in {run}; TensorBoard: tensorboard --logdir {run / 'training_summaries'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
