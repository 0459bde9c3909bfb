"""Your data decides what the new layer can learn: how many images, and which ones.

The experiments of ``notebooks/06_your_data.ipynb``, each a plain function on cached bottlenecks
training the new layer with ``train.fit_linear`` (lesson 03's trainer on every training vector in
every step: the same data give the same layer, in seconds):

- ``learning_curve``: accuracy against training images per label, several random draws each.
- ``tint`` / ``on_background`` / ``write_copies``: a hidden signal planted in one label's images.
- ``flip_labels`` / ``rank_by_loss``: wrong labels, and finding them again by their loss.
- ``near_copy`` / ``write_with_near_copies``: near-duplicates that leak across the split, and
  ``find_near_duplicates`` (the lesson's graded exercise) to find them.

``bench/learning_curve.py`` runs the full learning curve.
"""

from __future__ import annotations

import contextlib
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tlcourse.atomic import atomic_path
from tlcourse.bottlenecks import Bottlenecks
from tlcourse.data import Dataset
from tlcourse.exercises.data_quality import folds_for  # lesson 07 has the learner write it: one function
from tlcourse.images import load_image
from tlcourse.train import LinearLayer, fit_linear

# --- Scores and splits ---------------------------------------------------------------------------


def accuracy_of(layer: LinearLayer, split: Bottlenecks) -> np.ndarray:
    """Right/wrong of each image of ``split`` (a boolean vector, for ``tlc.stats``)."""
    return layer.predict(split.vectors) == split.labels


def join(*splits: Bottlenecks) -> Bottlenecks:
    """Several splits as one (for example validation and test together: the held-out images)."""
    return Bottlenecks(
        np.concatenate([s.vectors for s in splits]),
        np.concatenate([s.labels for s in splits]),
        [record for s in splits for record in s.records],
    )


def take(split: Bottlenecks, indices) -> Bottlenecks:
    indices = np.asarray(indices, dtype=np.int64)
    return Bottlenecks(split.vectors[indices], split.labels[indices], [split.records[i] for i in indices])


# --- How many images a label needs --------------------------------------------------------------


def per_label_sample(labels: np.ndarray, per_label: int | None, seed: int) -> np.ndarray:
    """Indices of ``per_label`` images of each label drawn at random (all of a label's images when it
    has fewer, and all images when ``per_label`` is None), in increasing order."""
    labels = np.asarray(labels)
    if per_label is None:
        return np.arange(len(labels))
    if per_label < 1:
        raise ValueError(f"per_label must be at least 1, not {per_label}")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.append(rng.choice(members, min(per_label, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


@dataclass
class CurvePoint:
    per_label: int | None  # None: every training image
    seed: int
    num_train: int
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def to_json(self) -> dict:
        return {**vars(self), "accuracy": self.accuracy}


def learning_curve(
    train: Bottlenecks,
    evaluate_on: Bottlenecks,
    num_classes: int,
    sizes=(1, 2, 5, 10, 20, None),
    seeds=(0, 1, 2),
    l2: float = 1e-3,
) -> list[CurvePoint]:
    """Accuracy on ``evaluate_on`` of the layer trained on ``size`` images per label, for every
    size and seed (each seed draws other images). ``None`` in ``sizes`` means all of them.
    Taught in ``notebooks/06_your_data.ipynb``; the full run is ``bench/learning_curve.py``."""
    points = []
    for size in sizes:
        for seed in seeds if size is not None else seeds[:1]:  # "all" is the same draw for every seed
            chosen = take(train, per_label_sample(train.labels, size, seed))
            layer = fit_linear(chosen.vectors, chosen.labels, num_classes, l2=l2)
            correct = accuracy_of(layer, evaluate_on)
            points.append(CurvePoint(size, seed, len(chosen), int(correct.sum()), len(correct)))
    return points


def curve_data(dataset: Dataset, backbone, num_labels: int | None = None, seed: int = 0):
    """(training bottlenecks, held-out bottlenecks, label names) for a learning curve on ``dataset``,
    restricted to ``num_labels`` labels drawn at random (all when None). Held out: the validation and
    test images together, since a learning curve chooses no setting. Bottlenecks are cached first."""
    from tlcourse import bottlenecks, many_classes

    if num_labels is not None and num_labels < len(dataset.class_names):
        dataset = many_classes.restrict(dataset, many_classes.class_subset(dataset, num_labels, seed))
    splits = bottlenecks.cached_splits(dataset, backbone)
    return splits["train"], join(splits["validation"], splits["test"]), dataset.class_names


def summarize_curve(points: list[CurvePoint]) -> list[dict]:
    """Per size: mean, lowest and highest accuracy over the seeds, and the mean number of training images."""
    rows = []
    for size in dict.fromkeys(p.per_label for p in points):
        group = [p for p in points if p.per_label == size]
        accuracies = np.array([p.accuracy for p in group])
        rows.append(
            {
                "per_label": size,
                "num_train": float(np.mean([p.num_train for p in group])),
                "mean": float(accuracies.mean()),
                "low": float(accuracies.min()),
                "high": float(accuracies.max()),
                "std": float(accuracies.std()),
                "seeds": len(group),
                "total": group[0].total,
            }
        )
    return rows


def plot_learning_curve(curves: dict[str, list[CurvePoint]]):
    """Accuracy against training images per label: the mean over seeds, and a band from the lowest to
    the highest seed (06_your_data). "All" (every training image) is drawn at twice the largest size."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, points in curves.items():
        rows = summarize_curve(points)
        sizes = [row["per_label"] for row in rows if row["per_label"] is not None]
        all_x = 2 * max(sizes, default=1)
        xs = [all_x if row["per_label"] is None else row["per_label"] for row in rows]
        means = [row["mean"] for row in rows]
        line = axis.plot(xs, means, "o-", label=name)[0]
        axis.fill_between(xs, [r["low"] for r in rows], [r["high"] for r in rows], alpha=0.2, color=line.get_color())
        if any(row["per_label"] is None for row in rows):
            axis.annotate("all", (all_x, means[-1]), textcoords="offset points", xytext=(4, -12), fontsize="small")
    axis.set_xscale("log")
    axis.set_xlabel("training images per label (log scale; last point: all of them)")
    axis.set_ylabel("accuracy on held-out images")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


# --- A hidden signal ----------------------------------------------------------------------------


def tint(image: np.ndarray, colour=(30, 90, 255), strength: float = 0.4) -> np.ndarray:
    """The image blended with ``colour`` (``strength`` 0: unchanged, 1: a flat colour)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, not {strength}")
    mixed = (1.0 - strength) * np.asarray(image, np.float32) + strength * np.asarray(colour, np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def on_background(image: np.ndarray, colour=(110, 170, 235), threshold: int = 235) -> np.ndarray:
    """A cut-out photo on white moved onto another background: near-white pixels take ``colour``."""
    image = np.asarray(image, np.uint8).copy()
    background = np.all(image >= threshold, axis=-1)
    image[background] = colour
    return image


def write_copies(records, folder: str | Path, transform, description: str = "") -> Path:
    """A copy of each image in ``records`` passed through ``transform`` (uint8 array -> uint8 array), at
    ``folder/<label>/<same path>``: the same names, so each copy falls in its original's split.

    Kept between runs: the folder is rebuilt only when ``description`` (what the transform does) or
    the list of images changed.
    """
    folder = Path(folder)
    stamp = "\n".join([description] + sorted(f"{r.label}/{r.relative} {r.sha256}" for r in records))
    marker = folder / ".made-by"
    if marker.is_file() and marker.read_text() == stamp:
        return folder
    with atomic_path(folder) as work:  # the old folder stays until the new one is whole
        work.mkdir()
        for record in records:
            target = work / record.label / record.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(transform(load_image(record.path))).save(target, "JPEG", quality=92)
        (work / marker.name).write_text(stamp)
    return folder


def swap_in(split: Bottlenecks, other: Bottlenecks, which) -> Bottlenecks:
    """``split`` with the images for which ``which(record)`` is true replaced by their namesakes in
    ``other`` (same label and name: for example their tinted copies)."""
    lookup = {(r.label, r.relative): i for i, r in enumerate(other.records)}
    vectors, records = split.vectors.copy(), list(split.records)
    for i, record in enumerate(split.records):
        if which(record):
            j = lookup.get((record.label, record.relative))
            if j is None:
                raise ValueError(f"{record.label}/{record.relative} has no copy in the other set")
            vectors[i], records[i] = other.vectors[j], other.records[j]
    return Bottlenecks(vectors, split.labels.copy(), records)


def label_accuracy(layer: LinearLayer, split: Bottlenecks, label: int) -> tuple[int, int]:
    """(right, total) on the images of one label."""
    mine = split.labels == label
    return int(np.sum(layer.predict(split.vectors[mine]) == label)), int(mine.sum())


def evaluation(layer: LinearLayer, split: Bottlenecks, class_names: list[str]):
    """The layer's answers on ``split`` as a ``tlc.train.Evaluation`` (confusion matrix, mistakes, plots)."""
    from tlcourse.train import Evaluation

    probabilities = layer.probabilities(split.vectors)
    return Evaluation(class_names, split.labels, probabilities.argmax(axis=1), probabilities, split.records)


# --- Wrong labels -------------------------------------------------------------------------------


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int = 0):
    """(noisy labels, flipped mask): ``fraction`` of the images, drawn at random, get another label
    drawn at random among the others."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(labels), bool)
    flipped[rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)] = True
    noisy = labels.copy()
    shift = rng.integers(1, num_classes, size=len(labels))  # never 0: always another label
    noisy[flipped] = (labels[flipped] + shift[flipped]) % num_classes
    return noisy, flipped


def rank_by_loss(layer: LinearLayer, vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Image indices, the largest loss first: where the layer disagrees most with the given label."""
    return np.argsort(-layer.losses(vectors, labels), kind="stable")


def out_of_fold_losses(
    vectors: np.ndarray, labels: np.ndarray, num_classes: int, num_folds: int = 5, l2: float = 1e-3
) -> np.ndarray:
    """Each image's loss under a layer trained on the *other* folds: a layer that could not memorise
    that image's label, so a wrong label stands out even when the layer fits its training set exactly."""
    labels = np.asarray(labels)
    folds = folds_for(labels, num_folds)
    losses = np.zeros(len(labels))
    for fold in range(num_folds):
        held = folds == fold
        layer = fit_linear(vectors[~held], labels[~held], num_classes, l2=l2)
        losses[held] = layer.losses(vectors[held], labels[held])
    return losses


def show_top_losses(
    split: Bottlenecks,
    given: np.ndarray,
    layer: LinearLayer,
    class_names,
    count: int = 8,
    flipped=None,
    losses=None,
    true_labels=None,
):
    """The training images the layer disagrees with most: given label, its own answer, the loss
    (06_your_data). ``flipped`` (optional) marks the images whose label was changed on purpose;
    ``losses`` (optional) ranks by other losses than the layer's own (``out_of_fold_losses``);
    ``true_labels`` (optional, when you planted the errors) are shown instead of the layer's answer."""
    import matplotlib.pyplot as plt

    losses = layer.losses(split.vectors, given) if losses is None else np.asarray(losses)
    order = np.argsort(-losses, kind="stable")[:count]
    predicted = layer.predict(split.vectors)
    columns = min(count, 4)
    rows = int(np.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.6, rows * 2.9), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, i in zip(axes.flat, order, strict=False):
        axis.imshow(load_image(split.records[i].path))
        second = (
            f"true: {class_names[true_labels[i]]}" if true_labels is not None else f"layer: {class_names[predicted[i]]}"
        )
        lines = [f"given: {class_names[given[i]]}", second]
        title = "\n".join(textwrap.fill(line, 28) for line in lines) + f"\nloss {losses[i]:.1f}"  # long labels wrap
        if flipped is not None:
            title += " (flipped)" if flipped[i] else " (label right)"
        axis.set_title(title, fontsize="x-small")
    figure.tight_layout()
    return figure


# --- Leakage ------------------------------------------------------------------------------------


def near_copy(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Another shot of the same photo: turned a few degrees, cropped a little, resized back."""
    picture = Image.fromarray(np.asarray(image, np.uint8))
    width, height = picture.size
    picture = picture.rotate(float(rng.uniform(-5, 5)), resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    keep = rng.uniform(0.88, 0.97)
    crop_w, crop_h = int(width * keep), int(height * keep)
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    return picture.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BICUBIC)


def write_with_near_copies(
    records, folder: str | Path, copies: int = 2, nohash: bool = False, seed: int = 0
) -> tuple[Path, dict[str, int]]:
    """A dataset folder holding each image of ``records`` and ``copies`` near-copies of it (turned,
    cropped, re-saved as JPEG at another quality), like the bursts of shots in a real photo folder.

    Names: ``crow.jpg``, ``crow_copy1.jpg``, ... which hash anywhere, so copies of one photo land in
    different splits; with ``nohash`` ``crow_nohash_0.jpg``, ``crow_nohash_1.jpg``, ... which the
    split rule reads as one name, so a photo and its copies stay together. The copies are the same
    bytes in both kinds of folder (the bottleneck cache computes them once).

    Returns the folder and a map from each file's ``label/relative`` path to its photo's number.
    """
    folder = Path(folder)
    families: dict[str, int] = {}
    stamp = f"copies={copies} nohash={nohash} seed={seed}\n" + "\n".join(sorted(r.sha256 for r in records))
    marker = folder / ".made-by"
    rebuild = not (marker.is_file() and marker.read_text() == stamp)
    # Rebuilt into a temporary folder that replaces the old one only when whole; otherwise only named.
    with atomic_path(folder) if rebuild else contextlib.nullcontext(folder) as work:
        if rebuild:
            work.mkdir()
        for family, record in enumerate(sorted(records, key=lambda r: (r.label, r.relative))):
            stem, suffix = Path(record.relative).stem, Path(record.relative).suffix
            parent = Path(record.relative).parent
            names = [
                f"{stem}_nohash_{k}{suffix}" if nohash else (f"{stem}_copy{k}.jpg" if k else stem + suffix)
                for k in range(copies + 1)
            ]
            rng = np.random.default_rng([seed, family])
            image = load_image(record.path) if rebuild else None
            for k, name in enumerate(names):
                relative = (parent / name).as_posix()
                families[f"{record.label}/{relative}"] = family
                if not rebuild:
                    continue
                target = work / record.label / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                if k == 0:
                    shutil.copyfile(record.path, target)  # the photo itself, byte for byte
                else:
                    near_copy(image, rng).save(target, "JPEG", quality=int(rng.integers(55, 90)))
        if rebuild:
            (work / marker.name).write_text(stamp)
    return folder, families


def frame(image: np.ndarray, colour=(30, 90, 255), width: float = 0.12) -> np.ndarray:
    """The image inside a coloured frame ``width`` of its short side thick (a studio backdrop, a border)."""
    image = np.asarray(image, np.uint8).copy()
    side = max(1, int(round(width * min(image.shape[:2]))))
    image[:side], image[-side:], image[:, :side], image[:, -side:] = colour, colour, colour, colour
    return image
