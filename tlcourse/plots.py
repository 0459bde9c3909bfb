"""The course's figures: samples, counts, what the backbone sees, bottleneck maps, curves, errors.

Each function draws one figure with matplotlib and returns it, so a notebook cell shows it and a
test can check what was drawn. Used throughout ``notebooks/``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from tlcourse.data import SPLITS, Dataset
from tlcourse.images import load_image


def show_samples(dataset: Dataset, per_label: int = 5, size: float = 1.8):
    """A grid with a few images of every label (01_prepare_dataset)."""
    rows = len(dataset.class_names)
    figure, axes = plt.subplots(rows, per_label, figsize=(per_label * size, rows * size), squeeze=False)
    for row, label in enumerate(dataset.class_names):
        records = [r for r in dataset.images if r.label == label][:per_label]
        for column, axis in enumerate(axes[row]):
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(records):
                axis.imshow(load_image(records[column].path))
            if column == 0:
                axis.set_ylabel(label, rotation=0, ha="right", va="center")
    figure.tight_layout()
    return figure


def plot_label_counts(dataset: Dataset):
    """Images per label, stacked by split (01_prepare_dataset)."""
    counts = dataset.counts()
    labels = list(counts)
    figure, axis = plt.subplots(figsize=(max(5, 0.5 * len(labels) + 2), 3.5))
    bottom = np.zeros(len(labels))
    for split in SPLITS:
        values = np.array([counts[label][split] for label in labels])
        axis.bar(labels, values, bottom=bottom, label=split)
        bottom += values
    axis.set_ylabel("images")
    axis.set_title("Images per label and split")
    axis.legend()
    axis.tick_params(axis="x", rotation=45 if len(labels) > 6 else 0)
    figure.tight_layout()
    return figure


def plot_top_k(image, top: list[tuple[str, float]], title: str = ""):
    """An image beside a bar chart of its top-k (name, probability) pairs (02, 04)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3), gridspec_kw={"width_ratios": [1, 1.4]})
    left.imshow(image)
    left.axis("off")
    left.set_title(title)
    names = [name for name, _ in top][::-1]
    scores = [score for _, score in top][::-1]
    right.barh(names, scores, color="tab:blue")
    right.set_xlim(0, 1)
    right.set_xlabel("probability")
    figure.tight_layout()
    return figure


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of ``vectors`` (PCA with numpy's SVD)."""
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def plot_projection(vectors: np.ndarray, labels: np.ndarray, class_names: list[str]):
    """Bottlenecks projected to 2-D, coloured by label: classes separate before any training (02)."""
    points = project_2d(vectors)
    figure, axis = plt.subplots(figsize=(6, 5))
    for index, name in enumerate(class_names):
        chosen = labels == index
        axis.scatter(points[chosen, 0], points[chosen, 1], s=18, label=name, alpha=0.8)
    axis.set_xlabel("principal component 1")
    axis.set_ylabel("principal component 2")
    axis.set_title("Bottlenecks, projected to 2-D")
    axis.legend(fontsize="small", markerscale=1.5)
    figure.tight_layout()
    return figure


def plot_history(history):
    """Accuracy and cross-entropy, training against validation, over the steps (03)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(history.steps, history.train_accuracy, label="train")
    left.plot(history.steps, history.validation_accuracy, label="validation")
    left.set_ylabel("accuracy")
    left.set_ylim(0, 1.02)
    right.plot(history.steps, history.train_cross_entropy, label="train")
    right.plot(history.steps, history.validation_cross_entropy, label="validation")
    right.set_ylabel("cross-entropy")
    for axis in (left, right):
        axis.set_xlabel("step")
        axis.legend()
    figure.tight_layout()
    return figure


def plot_confusion_matrix(evaluation):
    """Counts of true label (rows) against predicted label (columns) (03)."""
    matrix = evaluation.confusion_matrix()
    names = evaluation.class_names
    figure, axis = plt.subplots(figsize=(1.0 + 0.6 * len(names), 0.8 + 0.6 * len(names)))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=colour)
    axis.set_title(f"Test accuracy {evaluation.accuracy:.0%} (N={len(evaluation.labels)})")
    figure.tight_layout()
    return figure


def show_misclassified(evaluation, max_images: int = 8, size: float = 2.2):
    """The test images the model got wrong, with the true and the predicted label (03)."""
    wrong = evaluation.misclassified()[:max_images]
    if not wrong:
        figure, axis = plt.subplots(figsize=(4, 1))
        axis.axis("off")
        axis.text(0.5, 0.5, "No misclassified test images.", ha="center", va="center")
        return figure
    figure, axes = plt.subplots(1, len(wrong), figsize=(len(wrong) * size, size + 0.6), squeeze=False)
    for axis, (record, true, predicted) in zip(axes[0], wrong, strict=True):
        axis.imshow(load_image(record.path))
        axis.set_title(f"true: {true}\npredicted: {predicted}", fontsize="small")
        axis.axis("off")
    figure.tight_layout()
    return figure


def plot_accuracy_vs_classes(curves: dict[str, list]):
    """Test accuracy against the number of labels, one line per recipe (09_many_classes).

    ``curves``: recipe name -> results with ``num_classes`` and ``accuracy`` attributes. Several
    results with the same number of labels (random label subsets) are drawn as dots, their mean
    as the line and their range as a band: the spread shows how much the choice of labels matters.
    """
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for index, (name, results) in enumerate(curves.items()):
        color = f"C{index}"
        sizes = sorted({r.num_classes for r in results})
        groups = [[r.accuracy for r in results if r.num_classes == size] for size in sizes]
        axis.scatter([r.num_classes for r in results], [r.accuracy for r in results], s=12, alpha=0.5, color=color)
        axis.plot(sizes, [np.mean(g) for g in groups], marker="o", label=name, color=color)
        axis.fill_between(sizes, [min(g) for g in groups], [max(g) for g in groups], alpha=0.15, color=color)
    axis.set_xscale("log")
    axis.set_xlabel("number of labels")
    axis.set_ylabel("top-1 test accuracy")
    axis.set_ylim(0, 1.02)
    axis.set_title("More labels, lower accuracy (dots: random label subsets)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_per_class_accuracy(evaluation, train_counts: dict[str, int]):
    """Each label's test accuracy against its number of training images (09_many_classes)."""
    accuracy = evaluation.per_class_accuracy()
    names = [name for name in evaluation.class_names if not np.isnan(accuracy[name])]
    figure, axis = plt.subplots(figsize=(6.5, 4))
    jitter = np.random.default_rng(0).uniform(-0.02, 0.02, len(names))
    axis.scatter(
        [train_counts[n] for n in names], [accuracy[n] + j for n, j in zip(names, jitter, strict=True)], s=15, alpha=0.6
    )
    axis.set_xscale("log")
    axis.set_xlabel("training images of the label")
    axis.set_ylabel("test accuracy of the label")
    axis.set_title("Per-label accuracy")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_recipes(results: list):
    """Top-1 (with its 95% interval when known) and top-5 test accuracy of each recipe (09_many_classes)."""
    names = [r.name for r in results]
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    axis.barh(positions + 0.2, [r.top5_accuracy for r in results], height=0.4, label="top-5", color="tab:gray")
    errors = None
    if all(getattr(r, "test_correct", "") for r in results):  # 95% bootstrap intervals over the test images
        intervals = [r.interval() for r in results]
        errors = [[i.value - i.low for i in intervals], [i.high - i.value for i in intervals]]
    axis.barh(positions - 0.2, [r.accuracy for r in results], height=0.4, label="top-1", color="tab:blue", xerr=errors)
    for position, result in zip(positions, results, strict=True):
        right = result.accuracy + (errors[1][position] if errors else 0)
        axis.text(right + 0.01, position - 0.2, f"{result.accuracy:.0%}", va="center", fontsize="small")
    axis.set_yticks(positions, names)
    axis.invert_yaxis()
    axis.set_xlim(0, 1.08)
    axis.set_xlabel("test accuracy")
    axis.legend(loc="upper right")
    figure.tight_layout()
    return figure


def plot_learning_rate_range(found: dict, chosen: float | None = None):
    """The range test's smoothed loss against the learning rate, its suggestion and ``chosen`` marked
    (10_fine_tuning; ``finetune.learning_rate_range_test``)."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(found["rates"], found["losses"])
    axis.set_xscale("log")
    axis.axvline(found["suggested"], color="tab:green", linestyle="--", label=f"suggested {found['suggested']:.0e}")
    if chosen is not None:
        axis.axvline(chosen, color="tab:red", linestyle=":", label=f"recipe's default {chosen:.0e}")
    axis.set_xlabel("learning rate of the top block (the new layer's is in proportion)")
    axis.set_ylabel("training loss (smoothed)")
    axis.set_ylim(top=min(max(found["losses"]), 1.5 * found["losses"][0]))
    axis.legend()
    figure.tight_layout()
    return figure
