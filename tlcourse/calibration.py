"""How far to trust a score: calibration, temperature scaling, and images of none of the labels.

- ``reliability_bins`` and ``expected_calibration_error``: does a top score of 0.9 mean "right 9
  times in 10"? Equal-width bins on the top probability, each bin's accuracy against its mean
  confidence (``plot_reliability`` draws the reliability diagram).
- ``head_logits``, ``fit_temperature`` and ``with_temperature``: temperature scaling. One number
  ``T``, fitted on the validation split, divides the logits; the answers (the arg-max) never
  change, only how sure the scores sound. It costs nothing at run time: dividing the logits by
  ``T`` is dividing the last layer's weights and bias by ``T``.
- ``choose_threshold`` and ``threshold_counts``: a softmax always names one of its labels, even
  for an image of none of them. A threshold on the top probability, chosen on validation images
  (known ones against a held-out set of unknown ones), turns low scores into "unknown";
  ``label_image.py --threshold P`` applies it. ``unknown_records`` picks such images for the
  stamps model: photos of other subjects, and clip art.

A label is kept when its score is *above* the threshold, and "unknown" otherwise, here and in
``label_image.py``: a threshold of 0 changes nothing, a threshold of 1 rejects everything.

Taught in ``notebooks/11_calibration.ipynb`` (calibration, temperature) and
``notebooks/12_unknown_images.ipynb`` (the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcourse.atomic import atomic_path
from tlcourse.data import Dataset, ImageRecord

# Subjects of the stamps dataset's five labels (``datasets.STAMPS_CLASSES``): clip art of these
# (a drawing of a bird is still a bird) is not counted as "none of the labels".
STAMPS_SUBJECT_WORDS = ("animals", "birds", "bovines", "food", "fruit", "vegetables", "plants", "flowers")


# --- calibration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins on the top probability: how many images, their accuracy, their mean confidence."""

    edges: np.ndarray  # num_bins + 1 values from 0 to 1
    counts: np.ndarray
    accuracy: np.ndarray  # nan where a bin is empty
    confidence: np.ndarray  # nan where a bin is empty

    @property
    def expected_calibration_error(self) -> float:
        """Each bin's |accuracy - confidence|, weighted by its share of the images."""
        used = self.counts > 0
        weights = self.counts[used] / self.counts.sum()
        return float(np.sum(weights * np.abs(self.accuracy[used] - self.confidence[used])))


def _check_probabilities(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != (len(probabilities),):
        raise ValueError(f"expected probabilities [N, C] and N labels, got {probabilities.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ValueError("no images to measure calibration on")
    return probabilities, labels


def bin_index(confidence, num_bins: int) -> np.ndarray:
    """The bin of each top probability: bin ``i`` holds ``[i / num_bins, (i + 1) / num_bins)``, 1.0 the last."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")
    return np.minimum((np.asarray(confidence) * num_bins).astype(int), num_bins - 1)


def reliability_bins(probabilities, labels, num_bins: int = 10) -> ReliabilityBins:
    """The data of a reliability diagram: per bin of top probability, accuracy against confidence."""
    probabilities, labels = _check_probabilities(probabilities, labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    index = bin_index(confidence, num_bins)
    counts = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=num_bins) / counts
        mean_confidence = np.bincount(index, weights=confidence, minlength=num_bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, num_bins + 1), counts, accuracy, mean_confidence)


def expected_calibration_error(probabilities, labels, num_bins: int = 10) -> float:
    """ECE: the gap between accuracy and confidence, bin by bin, weighted by each bin's share of images."""
    return reliability_bins(probabilities, labels, num_bins).expected_calibration_error


def negative_log_likelihood(logits, labels, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against integer labels (stable for any logits)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_normaliser = np.log(np.exp(scaled).sum(axis=1))
    return float(np.mean(log_normaliser - scaled[np.arange(len(scaled)), np.asarray(labels)]))


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    exponentials = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def fit_temperature(logits, labels, low: float = 1e-3, high: float = 1e3) -> float:
    """The temperature in ``[low, high]`` that minimises the validation negative log-likelihood.

    The likelihood is smooth and has one minimum in ``log T``, so a golden-section search finds it.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    f_c, f_d = negative_log_likelihood(logits, labels, np.exp(c)), negative_log_likelihood(logits, labels, np.exp(d))
    while b - a > 1e-6:
        if f_c < f_d:
            b, d, f_d = d, c, f_c
            c = b - ratio * (b - a)
            f_c = negative_log_likelihood(logits, labels, np.exp(c))
        else:
            a, c, f_c = c, d, f_d
            d = a + ratio * (b - a)
            f_d = negative_log_likelihood(logits, labels, np.exp(d))
    return float(np.exp((a + b) / 2.0))


def _last_dense(head):
    import keras

    last = head.layers[-1]
    if not isinstance(last, keras.layers.Dense) or last.activation is not keras.activations.softmax:
        raise ValueError("expected a head whose last layer is a Dense layer with a softmax (train.new_head)")
    return last


def head_logits(head, vectors) -> np.ndarray:
    """The logits of a retrained head (its outputs before the softmax), for bottleneck ``vectors``."""
    last = _last_dense(head)
    x = np.asarray(vectors, dtype=np.float32)
    for layer in head.layers[:-1]:
        x = np.asarray(layer(x))
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in last.get_weights())
    return x.astype(np.float64) @ kernel + bias


def with_temperature(head, temperature: float):
    """A copy of ``head`` whose scores are ``softmax(logits / temperature)``: same answers, new confidence.

    The last layer's weights and bias are divided by ``temperature``; the model keeps its shape and
    layer names, so it exports (``Backbone.exported_classifier``) and labels (``label_image.py``) like any other.
    """
    import keras

    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    last = _last_dense(head)
    scaled = keras.models.clone_model(head)
    scaled.set_weights(head.get_weights())
    kernel, bias = last.get_weights()
    scaled.layers[-1].set_weights([kernel / temperature, bias / temperature])
    return scaled


# --- images of none of the labels ------------------------------------------------------------------


def top_probability(probabilities) -> np.ndarray:
    """Each image's highest score: the number a threshold is compared with."""
    return np.asarray(probabilities).max(axis=1)


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float, or a ValueError that says what a threshold is."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"the threshold must be a probability between 0 and 1, got {threshold!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"the threshold must be a probability between 0 and 1, got {threshold!r}")
    return value


def is_unknown(top_score, threshold: float):
    """True where the top score is not above the threshold: the answer becomes "unknown"."""
    return np.asarray(top_score) <= check_threshold(threshold)


@dataclass(frozen=True)
class ThresholdCounts:
    """What a threshold does to known images (of the labels) and unknown ones (of none of them)."""

    threshold: float
    known_lost: int  # known images answered "unknown"
    known_total: int
    unknown_rejected: int  # unknown images answered "unknown"
    unknown_total: int

    def __str__(self) -> str:
        return (
            f"threshold {self.threshold:.3f}: rejects {self.unknown_rejected} of {self.unknown_total} unknown images, "
            f"loses {self.known_lost} of {self.known_total} known ones"
        )


def threshold_counts(threshold: float, known_scores, unknown_scores) -> ThresholdCounts:
    """Counts, in images, of known images lost and unknown images rejected at ``threshold``."""
    known, unknown = np.asarray(known_scores), np.asarray(unknown_scores)
    return ThresholdCounts(
        check_threshold(threshold),
        int(is_unknown(known, threshold).sum()),
        len(known),
        int(is_unknown(unknown, threshold).sum()),
        len(unknown),
    )


def choose_threshold(known_scores, unknown_scores) -> float:
    """The threshold that best separates known from unknown validation images.

    It maximises (share of known images kept) + (share of unknown images rejected), so each group
    counts the same however many images it has (Youden's J). Candidates are the midpoints between
    neighbouring scores; ties go to the lower threshold, which loses fewer known images.
    """
    known, unknown = np.sort(np.asarray(known_scores, float)), np.sort(np.asarray(unknown_scores, float))
    if not len(known) or not len(unknown):
        raise ValueError("choosing a threshold needs both known and unknown validation images")
    scores = np.unique(np.concatenate([known, unknown, [0.0, 1.0]]))
    candidates = np.concatenate([[0.0], (scores[:-1] + scores[1:]) / 2.0])
    kept = 1.0 - np.searchsorted(known, candidates, side="right") / len(known)  # scores above the threshold
    rejected = np.searchsorted(unknown, candidates, side="right") / len(unknown)  # scores at or below it
    return float(candidates[int(np.argmax(kept + rejected))])


def unknown_records(dataset: Dataset, split: str, kind: str, known_words=STAMPS_SUBJECT_WORDS) -> list[ImageRecord]:
    """Images of ``dataset`` (``many_classes``) that belong to none of the stamps model's labels.

    ``kind`` "photo": photos of other subjects (the ``photo-`` labels whose name holds none of
    ``known_words``); "clipart": drawings, leaving out those of animals, food and plants.
    """
    if kind not in ("photo", "clipart"):
        raise ValueError(f"kind must be 'photo' or 'clipart', not {kind!r}")
    prefix = f"{kind}-"
    labels = {
        name for name in dataset.class_names if name.startswith(prefix) and not any(w in name for w in known_words)
    }
    return [record for record in dataset.split(split) if record.label in labels]


def subsample(records: list, size: int | None, seed: int = 0) -> list:
    """At most ``size`` of ``records`` (seeded, in their original order); all of them when ``size`` is None."""
    if size is None or len(records) <= size:
        return list(records)
    chosen = np.sort(np.random.default_rng(seed).choice(len(records), size, replace=False))
    return [records[i] for i in chosen]


def export_model(backbone, head, class_names: list[str], folder: str | Path) -> tuple[Path, Path]:
    """Write ``model.keras`` (raw images in, scores out) and ``labels.txt`` for ``label_image.py``."""
    folder = Path(folder)
    model_path, labels_path = folder / "model.keras", folder / "labels.txt"
    with atomic_path(model_path, keep_suffix=True) as temporary:
        backbone.exported_classifier(head).save(temporary)
    with atomic_path(labels_path) as temporary:
        temporary.write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
    return model_path, labels_path


# --- figures -----------------------------------------------------------------------------------------


def plot_reliability(curves: dict[str, ReliabilityBins]):
    """Reliability diagrams side by side: accuracy per confidence bin against the diagonal."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.8), squeeze=False)
    for axis, (name, bins) in zip(axes[0], curves.items(), strict=True):
        centres = (bins.edges[:-1] + bins.edges[1:]) / 2
        width = bins.edges[1] - bins.edges[0]
        used = bins.counts > 0
        axis.bar(centres[used], bins.accuracy[used], width=width * 0.9, color="tab:blue", label="accuracy")
        axis.bar(  # from the accuracy to the mean confidence: up when over-confident, down when under-confident
            centres[used],
            bins.confidence[used] - bins.accuracy[used],
            bottom=bins.accuracy[used],
            width=width * 0.9,
            facecolor=(1.0, 0.0, 0.0, 0.2),
            edgecolor="tab:red",
            hatch="//",
            label="gap to mean confidence",
        )
        axis.plot([0, 1], [0, 1], "k--", linewidth=1)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("top probability (confidence)")
        axis.set_title(f"{name}\nECE {bins.expected_calibration_error:.3f}", fontsize="medium")
    axes[0][0].set_ylabel("accuracy in the bin")
    axes[0][0].legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def plot_top_probability(groups: dict[str, np.ndarray], threshold: float | None = None):
    """Histograms of the top probability for groups of images (known, unknown ...), with the threshold."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(len(groups), 1, figsize=(7, 1.7 * len(groups) + 0.6), sharex=True, squeeze=False)
    bins = np.linspace(0, 1, 26)
    for axis, (name, scores), color in zip(axes[:, 0], groups.items(), plt.cm.tab10.colors, strict=False):
        axis.hist(scores, bins=bins, color=color, alpha=0.8)
        axis.set_ylabel("images")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of images: no 0.5 ticks
        axis.set_title(f"{name} ({len(scores)} images)", fontsize="medium", loc="left")
        if threshold is not None:
            axis.axvline(threshold, color="k", linestyle="--", linewidth=1)
    axes[-1, 0].set_xlabel("top probability" + ("  (dashed: the threshold)" if threshold is not None else ""))
    figure.tight_layout()
    return figure


def plot_intervals(intervals: dict, title: str = "test accuracy with 95% intervals"):
    """Accuracies or differences with their bootstrap intervals (``stats.Interval``), one row each;
    a line marks zero when an interval reaches it."""
    import matplotlib.pyplot as plt

    names = list(intervals)
    figure, axis = plt.subplots(figsize=(7, 0.5 * len(names) + 1.2))
    for row, name in enumerate(names):
        interval = intervals[name]
        axis.plot([interval.low, interval.high], [row, row], color="tab:blue", linewidth=3)
        axis.plot(interval.value, row, "o", color="k")
    if min(interval.low for interval in intervals.values()) <= 0:
        axis.axvline(0, color="k", linewidth=1)
    axis.xaxis.set_major_formatter(lambda value, _: f"{value:+.0%}" if value else "0")
    axis.set_yticks(range(len(names)), names)
    axis.invert_yaxis()
    axis.set_title(title, fontsize="medium")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


@dataclass(frozen=True)
class Difference:
    """A difference between two measurements on the same images, with its paired bootstrap interval."""

    value: float
    low: float
    high: float
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        verdict = "a real difference" if self.significant else "within noise"
        return f"{self.value:+.3f} ({self.confidence:.0%} interval {self.low:+.3f} to {self.high:+.3f}: {verdict})"


def ece_difference(
    probabilities_a, probabilities_b, labels, num_bins: int = 10, num_resamples: int = 1000, seed: int = 0
) -> Difference:
    """ECE of B minus ECE of A, scored on the same images, with a paired bootstrap interval over the images."""
    a, labels = _check_probabilities(probabilities_a, labels)
    b, _ = _check_probabilities(probabilities_b, labels)
    if a.shape != b.shape:
        raise ValueError(f"the two sets of scores have different shapes: {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(labels), size=(num_resamples, len(labels)))
    resampled = [
        expected_calibration_error(b[p], labels[p], num_bins) - expected_calibration_error(a[p], labels[p], num_bins)
        for p in picks
    ]
    low, high = np.quantile(resampled, [0.025, 0.975])
    value = expected_calibration_error(b, labels, num_bins) - expected_calibration_error(a, labels, num_bins)
    return Difference(float(value), float(low), float(high))
