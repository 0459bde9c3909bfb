"""The bottleneck as an embedding: nearest neighbours, image search, few-shot labels, unknown images,
and which image to label next.

Every function here works on cached bottlenecks (``tlcourse.bottlenecks.cached_splits``) in numpy,
with the cosine similarity of the tool's image search (``tlcourse.search.normalize`` / ``nearest``):

- ``knn_predict`` and ``class_means`` / ``nearest_mean_predict``: two classifiers with no training,
  set beside the trained layer along lesson 06's learning curve (``compare_on_curve``).
- ``search_scores``: precision@k and mean average precision of an image search, scored by the
  lesson's graded exercise (``tlcourse.exercises.embeddings.retrieval_scores``, or yours).
- ``add_labels_experiment``: new labels from five images each, by class means or by retraining.
- ``auroc`` / ``auroc_interval``: how well a score separates known images from images of none of
  the labels, whatever the threshold.
- ``active_labelling``: which image to label next, against random choice.
- ``show_neighbours``: a mistake explained by the nearest training images.

The search index on disk (``tlcourse.search.SearchIndex``) and its command line belong to the tool.

Taught in ``notebooks/08_embeddings.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tlcourse import search, stats
from tlcourse.bottlenecks import Bottlenecks
from tlcourse.exercises.embeddings import retrieval_scores
from tlcourse.train import fit_linear
from tlcourse.your_data import accuracy_of, per_label_sample, take

# --- Two classifiers without training ------------------------------------------------------------


def knn_predict(train: Bottlenecks, queries, num_classes: int, k: int = 5) -> np.ndarray:
    """The label each query's ``k`` nearest training images vote for, each vote weighted by its similarity."""
    indices, similarities = search.nearest(queries, train.vectors, k)
    votes = np.zeros((len(indices), num_classes))
    np.add.at(votes, (np.arange(len(indices))[:, None], train.labels[indices]), np.maximum(similarities, 0) + 1e-6)
    return votes.argmax(axis=1)


def class_means(vectors, labels, num_classes: int) -> np.ndarray:
    """One unit vector per label: the mean direction of its images (a row of zeros for a label without any)."""
    vectors, labels = search.normalize(vectors), np.asarray(labels)
    means = np.zeros((num_classes, vectors.shape[1]), np.float32)
    np.add.at(means, labels, vectors)
    return search.normalize(means)


def mean_similarities(means: np.ndarray, queries) -> np.ndarray:
    """Cosine similarity of every query to every class mean, ``[Q, C]``; -inf for a label without images."""
    similarities = search.normalize(np.atleast_2d(queries)) @ means.T
    similarities[:, ~means.any(axis=1)] = -np.inf
    return similarities


def nearest_mean_predict(means: np.ndarray, queries) -> np.ndarray:
    """The label whose mean direction is closest to each query (a nearest-class-mean classifier)."""
    return mean_similarities(means, queries).argmax(axis=1)


def _trained_layer(train: Bottlenecks, queries, num_classes: int) -> np.ndarray:
    return fit_linear(train.vectors, train.labels, num_classes).predict(queries)


def _nearest_class_mean(train: Bottlenecks, queries, num_classes: int) -> np.ndarray:
    return nearest_mean_predict(class_means(train.vectors, train.labels, num_classes), queries)


def _five_nearest_neighbours(train: Bottlenecks, queries, num_classes: int) -> np.ndarray:
    return knn_predict(train, queries, num_classes, k=5)


# name -> function(training bottlenecks, query vectors, number of labels) -> the label of each query
CLASSIFIERS = {
    "trained layer": _trained_layer,
    "nearest class mean": _nearest_class_mean,
    "5 nearest neighbours": _five_nearest_neighbours,
}


def predictions(name: str, train: Bottlenecks, queries, num_classes: int) -> np.ndarray:
    """The labels one of ``CLASSIFIERS`` gives ``queries`` after seeing ``train``."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name](train, queries, num_classes)


@dataclass
class CurveComparison:
    """Right/wrong of each classifier on the same held-out images, per training size and seed."""

    sizes: tuple
    seeds: tuple
    correct: dict  # (classifier, size) -> bool array [seeds * images], seeds one after another

    def accuracy(self, name: str, size) -> stats.Interval:
        return stats.bootstrap_interval(self.correct[name, size])

    def paired(self, name_a: str, name_b: str, size) -> stats.PairedComparison:
        """B minus A on the same (seed, image) pairs."""
        return stats.paired_comparison(self.correct[name_a, size], self.correct[name_b, size])

    def table(self, baseline: str = "trained layer") -> str:
        others = [name for name in CLASSIFIERS if name != baseline]
        header = f"{'per label':>9s}  {baseline:>14s}  " + "  ".join(f"{name + ' - layer':>32s}" for name in others)
        lines = [header]
        for size in self.sizes:
            cells = []
            for name in others:
                d = self.paired(baseline, name, size).difference
                cells.append(f"{d.value:+7.1%} ({d.low:+.1%} to {d.high:+.1%})".rjust(32))
            lines.append(f"{size:>9}  {self.accuracy(baseline, size).value:14.1%}  " + "  ".join(cells))
        return "\n".join(lines)


def compare_on_curve(
    train: Bottlenecks, evaluate_on: Bottlenecks, num_classes: int, sizes=(1, 2, 5, 10, 20), seeds=(0, 1, 2)
) -> CurveComparison:
    """Each of ``CLASSIFIERS`` trained on ``size`` images a label (the same draw for all), scored on
    ``evaluate_on``, for every size and seed: lesson 06's learning curve with two classifiers more."""
    correct = {}
    for size in sizes:
        for name in CLASSIFIERS:
            runs = []
            for seed in seeds:
                chosen = take(train, per_label_sample(train.labels, size, seed))
                runs.append(predictions(name, chosen, evaluate_on.vectors, num_classes) == evaluate_on.labels)
            correct[name, size] = np.concatenate(runs)
    return CurveComparison(tuple(sizes), tuple(seeds), correct)


# --- Image search ----------------------------------------------------------------------------------


def search_scores(index: Bottlenecks, queries: Bottlenecks, k: int = 5, scorer=retrieval_scores) -> tuple:
    """(precision@k, mean average precision) of searching ``index`` with each query image: an indexed
    image is relevant when it has the query's label. ``scorer`` is the function that scores the ranking
    (the lesson passes the learner's own)."""
    similarities = search.normalize(queries.vectors) @ search.normalize(index.vectors).T
    return scorer(similarities, queries.labels, index.labels, k)


# --- New labels from a few images -----------------------------------------------------------------


@dataclass
class NewLabels:
    """Accuracy with some labels known from only a few images, by class means or by retraining."""

    new_labels: list[int]
    shots: int
    correct: dict  # method -> bool array over the test images
    is_new: np.ndarray  # which test images belong to the new labels

    def accuracy(self, method: str, only_new: bool = False) -> stats.Interval:
        correct = self.correct[method]
        return stats.bootstrap_interval(correct[self.is_new] if only_new else correct)


def add_labels_experiment(
    train: Bottlenecks, test: Bottlenecks, num_classes: int, num_new: int = 10, shots: int = 5, seed: int = 0
) -> NewLabels:
    """``num_new`` labels drawn at random become "new": only ``shots`` of their training images are kept.

    Three ways to classify the test images: class means with the new labels' means added (no training
    at all), the layer retrained on the same images, and the layer trained on every training image
    (what waiting for more images of the new labels would give).
    """
    rng = np.random.default_rng(seed)
    present = np.unique(train.labels)
    new_labels = sorted(rng.choice(present, min(num_new, len(present)), replace=False).tolist())
    keep = ~np.isin(train.labels, new_labels)
    for label in new_labels:
        members = np.flatnonzero(train.labels == label)
        keep[rng.choice(members, min(shots, len(members)), replace=False)] = True
    few = take(train, np.flatnonzero(keep))
    means = class_means(few.vectors, few.labels, num_classes)
    correct = {
        f"class means, {shots} images for the new labels": nearest_mean_predict(means, test.vectors) == test.labels,
        f"layer retrained, {shots} images for the new labels": accuracy_of(
            fit_linear(few.vectors, few.labels, num_classes), test
        ),
        "layer trained on every image": accuracy_of(fit_linear(train.vectors, train.labels, num_classes), test),
    }
    return NewLabels(new_labels, shots, correct, np.isin(test.labels, new_labels))


# --- Images of none of the labels -------------------------------------------------------------------


def auroc(known_scores, unknown_scores) -> float:
    """The chance that a known image scores higher than an unknown one (ties count half): 1 separates
    them perfectly at some threshold, 0.5 is a coin toss. The area under the ROC curve."""
    known, unknown = np.asarray(known_scores, float), np.asarray(unknown_scores, float)
    if not len(known) or not len(unknown):
        raise ValueError("an AUROC needs both known and unknown images")
    higher = known[:, None] > unknown[None, :]  # every pair of a known and an unknown image
    tied = known[:, None] == unknown[None, :]
    return float(higher.mean() + 0.5 * tied.mean())


def auroc_interval(known_scores, unknown_scores, num_resamples: int = 1000, seed: int = 0) -> tuple:
    """(AUROC, low, high): a 95% bootstrap interval, each group resampled on its own."""
    known, unknown = np.asarray(known_scores, float), np.asarray(unknown_scores, float)
    rng = np.random.default_rng(seed)
    resampled = [
        auroc(known[rng.integers(0, len(known), len(known))], unknown[rng.integers(0, len(unknown), len(unknown))])
        for _ in range(num_resamples)
    ]
    low, high = np.quantile(resampled, [0.025, 0.975])
    return auroc(known, unknown), float(low), float(high)


def nearest_similarity(index_vectors, queries, k: int = 1) -> np.ndarray:
    """Each query's mean cosine similarity to its ``k`` nearest indexed images: low for an unfamiliar image."""
    return search.nearest(queries, index_vectors, k)[1].mean(axis=1)


# --- Which image to label next ----------------------------------------------------------------------


def _random_order(rng, pool, labelled, labels, num_classes) -> np.ndarray:
    return rng.random(int((~labelled).sum()))


def _margin(rng, pool, labelled, labels, num_classes) -> np.ndarray:
    """How far apart the two closest class means are: small when the classifier hesitates."""
    means = class_means(pool[labelled], labels[labelled], num_classes)
    similarities = np.sort(mean_similarities(means, pool[~labelled]), axis=1)
    return similarities[:, -1] - similarities[:, -2]


def _likeness(rng, pool, labelled, labels, num_classes) -> np.ndarray:
    """Similarity to the nearest labelled image: small for an image unlike anything labelled so far."""
    return nearest_similarity(pool[labelled], pool[~labelled])


# name -> function(rng, vectors, labelled mask, labels, number of labels) -> a score per unlabelled image;
# the lowest scores are labelled next
STRATEGIES = {"random": _random_order, "least confident": _margin, "farthest": _likeness}


def _pick(strategy: str, pool: np.ndarray, labelled: np.ndarray, labels: np.ndarray, num_classes, batch, rng):
    """Indices of ``pool`` (not yet labelled) to label next: the ``batch`` lowest scores of ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    score = STRATEGIES[strategy](rng, pool, labelled, labels, num_classes)
    return np.flatnonzero(~labelled)[np.argsort(score, kind="stable")[:batch]]


def active_labelling(
    pool: Bottlenecks,
    evaluate_on: Bottlenecks,
    num_classes: int,
    strategy: str,
    batch: int,
    rounds: int,
    seed: int = 0,
) -> tuple[list[int], list[np.ndarray]]:
    """Label ``batch`` images of ``pool`` at a time, chosen by ``strategy``, after one random image of each label.

    After each round the nearest-class-mean classifier of the labelled images is scored on
    ``evaluate_on``. Returns (images labelled after each round, right/wrong of each held-out image).
    The labels of the pool stand for a person who labels the images the strategy asks for.
    """
    rng = np.random.default_rng(seed)
    labelled = np.zeros(len(pool), bool)
    labelled[per_label_sample(pool.labels, 1, seed)] = True
    counts, correct = [], []
    for round_index in range(rounds + 1):
        if round_index:
            labelled[_pick(strategy, pool.vectors, labelled, pool.labels, num_classes, batch, rng)] = True
        means = class_means(pool.vectors[labelled], pool.labels[labelled], num_classes)
        counts.append(int(labelled.sum()))
        correct.append(nearest_mean_predict(means, evaluate_on.vectors) == evaluate_on.labels)
    return counts, correct


def plot_active_labelling(curves: dict, seeds: int):
    """Accuracy against images labelled: per strategy, ``{name: (counts, correct per round)}`` with the
    correct arrays of all seeds one after another; the band is a 95% bootstrap interval."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, (counts, correct) in curves.items():
        intervals = [stats.bootstrap_interval(c, num_resamples=500) for c in correct]
        line = axis.plot(counts, [i.value for i in intervals], "o-", label=name)[0]
        axis.fill_between(counts, [i.low for i in intervals], [i.high for i in intervals], alpha=0.2,
                          color=line.get_color())  # fmt: skip
    axis.set_xlabel("images labelled")
    axis.set_ylabel(f"accuracy on held-out images ({seeds} runs)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


# --- Explaining a mistake ------------------------------------------------------------------------------


def show_neighbours(queries: Bottlenecks, index: Bottlenecks, class_names: list[str], k: int = 4, predicted=None):
    """One row per query image: the image with its label (and, in red, a classifier's wrong answer from
    ``predicted``), then its ``k`` nearest indexed images with their labels and similarities."""
    import matplotlib.pyplot as plt

    from tlcourse.images import load_image

    indices, similarities = search.nearest(queries.vectors, index.vectors, k)
    rows = len(queries)
    figure, axes = plt.subplots(rows, k + 1, figsize=(1.9 * (k + 1), 2.1 * rows), squeeze=False)
    for row in range(rows):
        record = queries.records[row]
        axes[row, 0].imshow(load_image(record.path))
        title = f"query: {class_names[queries.labels[row]]}"
        if predicted is not None:
            title += f"\nanswered {class_names[predicted[row]]}"
        axes[row, 0].set_title(title, fontsize=8, color="black" if predicted is None else "crimson")
        for column, (neighbour, similarity) in enumerate(zip(indices[row], similarities[row], strict=True), 1):
            axes[row, column].imshow(load_image(index.records[neighbour].path))
            axes[row, column].set_title(f"{class_names[index.labels[neighbour]]}\n{similarity:.2f}", fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    return figure
