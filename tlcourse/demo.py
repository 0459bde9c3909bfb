"""``make demo``: the whole tutorial on the embedded default, offline.

Prepares the ``stamps`` dataset, runs the tutorial's retrain command on it (1,000 steps, batch
100, learning rate 0.01), prints the final test accuracy, and labels one held-out test image per
label with the exported frozen graph, as ``label_image.py`` would.
"""

from __future__ import annotations

import sys

from tlcourse import config, datasets, label, retrain
from tlcourse.data import scan_dataset


def main() -> int:
    image_dir = datasets.stamps()
    run = config.project_root() / "runs" / "demo"
    command = [
        f"--image_dir={image_dir}",
        f"--bottleneck_dir={run / 'bottlenecks'}",
        "--how_many_training_steps=1000",
        "--train_batch_size=100",
        f"--summaries_dir={run / 'training_summaries' / 'basic'}",
        f"--output_graph={run / 'retrained_graph.pb'}",
        f"--output_labels={run / 'retrained_labels.txt'}",
    ]
    print("python retrain.py " + " ".join(command), flush=True)
    result = retrain.retrain(retrain.parse_args(command))

    held_out = {}
    for record in scan_dataset(image_dir).split("test"):
        held_out.setdefault(record.label, record.path)
    print("\nLabelling one held-out test image per label (python label_image.py IMAGE):")
    for labelled in label.label_images(
        list(held_out.values()), run / "retrained_graph.pb", run / "retrained_labels.txt"
    ):
        best, score = labelled.top[0]
        truth = labelled.path.parent.name
        print(f"  {labelled.path.name:<28s} true: {truth:<11s} predicted: {best:<11s} ({score:.1%})")
    print(f"\nFinal test accuracy on stamps: {result['accuracy']:.1%} (N={result['num_images']}).")
    print(f"Outputs in {run}; TensorBoard: tensorboard --logdir {run / 'training_summaries'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
