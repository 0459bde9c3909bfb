"""How far to trust an accuracy: bootstrap intervals over test images, and paired comparisons.

A test set of 13 or 652 images gives an accuracy with noise in it. Every accuracy the course
compares carries an interval from here, and two recipes are compared on the *same* images with a
paired test, which sees much smaller differences than two separate intervals do.

Taught in ``notebooks/04_intervals.ipynb``; used by ``bench/many_classes.py`` and the lessons.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import lgamma

import numpy as np


@dataclass(frozen=True)
class Interval:
    """An accuracy with its bootstrap interval, and the counts it came from."""

    value: float
    low: float
    high: float
    correct: int
    total: int
    confidence: float = 0.95

    def __str__(self) -> str:
        return (
            f"{self.value:.1%} ({self.correct} of {self.total}; "
            f"{self.confidence:.0%} interval {self.low:.1%} to {self.high:.1%})"
        )

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def to_json(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "correct": self.correct, "total": self.total}


def _as_correct(correct) -> np.ndarray:
    correct = np.asarray(correct)
    if correct.ndim != 1:
        raise ValueError(f"expected one right/wrong value per image, got shape {correct.shape}")
    return correct.astype(bool)


def bootstrap_interval(correct, confidence: float = 0.95, num_resamples: int = 2000, seed: int = 0) -> Interval:
    """Accuracy of a per-image right/wrong vector, with a percentile bootstrap interval.

    The test images are resampled with replacement ``num_resamples`` times; the interval holds
    the middle ``confidence`` of the resampled accuracies. When every image is right (or every
    one wrong) resampling can only give that same accuracy, so the open side comes from the
    exact (Clopper-Pearson) bound instead: 13 of 13 right still allows an accuracy down to 75%.
    """
    correct = _as_correct(correct)
    total = len(correct)
    if total == 0:
        raise ValueError("no images to compute an accuracy on")
    rng = np.random.default_rng(seed)
    resampled = correct[rng.integers(0, total, size=(num_resamples, total))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    right = int(correct.sum())
    if right == total:
        low = tail ** (1.0 / total)
    elif right == 0:
        high = 1.0 - tail ** (1.0 / total)
    return Interval(float(correct.mean()), float(low), float(high), right, total, confidence)


@dataclass(frozen=True)
class PairedComparison:
    """Recipe B minus recipe A on the same images."""

    difference: Interval  # accuracy of B minus accuracy of A, with its paired bootstrap interval
    only_a: int  # images A got right and B got wrong
    only_b: int  # images B got right and A got wrong
    p_value: float  # exact two-sided McNemar (sign) test on the images where they disagree

    @property
    def significant(self) -> bool:
        """True when the interval of the difference excludes zero."""
        return self.difference.low > 0 or self.difference.high < 0

    def __str__(self) -> str:
        d = self.difference
        verdict = "a real difference" if self.significant else "within noise"
        return (
            f"B - A = {d.value:+.1%} ({d.confidence:.0%} interval {d.low:+.1%} to {d.high:+.1%}); "
            f"only A right: {self.only_a}, only B right: {self.only_b}, McNemar p = {self.p_value:.3f}: {verdict}"
        )

    def to_json(self) -> dict:
        return {**self.difference.to_json(), "only_a": self.only_a, "only_b": self.only_b, "p_value": self.p_value}


def paired_comparison(
    correct_a, correct_b, confidence: float = 0.95, num_resamples: int = 2000, seed: int = 0
) -> PairedComparison:
    """Compare two recipes scored on the same images (same order): resample images, not recipes."""
    a, b = _as_correct(correct_a), _as_correct(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"the two recipes were scored on different numbers of images: {len(a)} and {len(b)}")
    if len(a) == 0:
        raise ValueError("no images to compare on")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(num_resamples, len(a)))
    resampled = b[picks].mean(axis=1) - a[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    difference = Interval(
        float(b.mean() - a.mean()), float(low), float(high), int(b.sum() - a.sum()), len(a), confidence
    )
    return PairedComparison(difference, only_a, only_b, mcnemar_p_value(only_a, only_b))


def unpaired_difference(
    correct_a, correct_b, confidence: float = 0.95, num_resamples: int = 2000, seed: int = 0
) -> Interval:
    """B minus A with each recipe's images resampled on their own, as if scored on different images.

    For teaching: set beside ``paired_comparison`` on the same data, it shows how much of the
    noise the pairing removes (the images both recipes find easy or hard cancel out).
    """
    a, b = _as_correct(correct_a), _as_correct(correct_b)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("no images to compare on")
    rng = np.random.default_rng(seed)
    resampled_a = a[rng.integers(0, len(a), size=(num_resamples, len(a)))].mean(axis=1)
    resampled_b = b[rng.integers(0, len(b), size=(num_resamples, len(b)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled_b - resampled_a, [tail, 1.0 - tail])
    return Interval(
        float(b.mean() - a.mean()), float(low), float(high), int(b.sum() - a.sum()), max(len(a), len(b)), confidence
    )


def mcnemar_p_value(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: under 'no difference' each disagreement is a fair coin."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    # P(X <= k) for X ~ Binomial(n, 1/2), in logs so that n in the thousands stays finite.
    log_terms = [_log_binomial(n, i) - n * np.log(2.0) for i in range(k + 1)]
    tail = float(np.exp(np.logaddexp.reduce(log_terms)))
    return min(1.0, 2.0 * tail)


def _log_binomial(n: int, k: int) -> float:
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)
