"""tlc.stats: intervals that cover the truth, a paired test that sees what separate intervals miss."""

from math import comb

import numpy as np
import pytest

from tlcourse import stats


def test_an_interval_covers_the_true_accuracy_in_most_simulated_test_sets():
    rng = np.random.default_rng(1)
    true_accuracy, images, draws = 0.8, 200, 300
    covered = 0
    for draw in range(draws):
        correct = rng.random(images) < true_accuracy
        interval = stats.bootstrap_interval(correct, num_resamples=1000, seed=draw)
        assert interval.low <= interval.value <= interval.high
        covered += interval.low <= true_accuracy <= interval.high
    # A 95% interval: about 285 of 300; the percentile bootstrap runs a little short on small sets.
    assert 0.90 * draws <= covered <= draws


def test_the_interval_narrows_with_more_images_and_counts_them():
    rng = np.random.default_rng(0)
    small = stats.bootstrap_interval(rng.random(50) < 0.7)
    large = stats.bootstrap_interval(rng.random(5000) < 0.7)
    assert (large.high - large.low) < (small.high - small.low) / 5
    assert (small.total, large.total) == (50, 5000)
    assert str(stats.bootstrap_interval([True] * 12 + [False])).startswith("92.3% (12 of 13;")


def consistent_improvement(images=600, accuracy=0.7, fixed=20, seed=0):
    """Recipe B gets right everything A does, plus ``fixed`` images A gets wrong."""
    rng = np.random.default_rng(seed)
    a = rng.random(images) < accuracy
    b = a.copy()
    b[rng.choice(np.flatnonzero(~a), fixed, replace=False)] = True
    return a, b


def test_a_paired_test_detects_a_consistent_improvement_that_separate_intervals_miss():
    a, b = consistent_improvement()
    separate_a, separate_b = stats.bootstrap_interval(a), stats.bootstrap_interval(b)
    assert separate_a.overlaps(separate_b)  # side by side, 3 points look like noise
    paired = stats.paired_comparison(a, b)
    assert (paired.only_a, paired.only_b) == (0, 20)
    assert paired.significant and paired.difference.low > 0
    assert paired.p_value == pytest.approx(2 * 0.5**20)
    unpaired = stats.unpaired_difference(a, b)
    assert unpaired.low < 0 < unpaired.high  # resampled as if on different images: not significant
    assert (paired.difference.high - paired.difference.low) < (unpaired.high - unpaired.low) / 2


def test_a_paired_test_calls_noise_noise():
    rng = np.random.default_rng(3)
    truth = rng.random(600) < 0.7
    # Two recipes that each flip a different random 5% of the answers: no real difference.
    a, b = truth ^ (rng.random(600) < 0.05), truth ^ (rng.random(600) < 0.05)
    paired = stats.paired_comparison(a, b)
    assert not paired.significant and paired.p_value > 0.05
    same = stats.paired_comparison(a, a)
    assert (same.only_a, same.only_b, same.p_value, same.difference.value) == (0, 0, 1.0, 0.0)
    assert "within noise" in str(same)


@pytest.mark.parametrize(
    ("only_a", "only_b", "expected"),
    [
        (0, 5, 2 / 32),  # five disagreements, all one way
        (1, 9, 2 * (1 + 10) / 1024),
        (9, 1, 2 * (1 + 10) / 1024),  # symmetric
        (3, 12, 2 * sum(comb(15, i) for i in range(4)) / 2**15),
        (5, 5, 1.0),
        (0, 0, 1.0),
        (40, 60, 2 * sum(comb(100, i) for i in range(41)) / 2**100),
    ],
)
def test_mcnemar_p_values_match_the_exact_binomial_test(only_a, only_b, expected):
    assert stats.mcnemar_p_value(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_stays_finite_for_thousands_of_disagreements():
    p = stats.mcnemar_p_value(1000, 1100)
    # Normal approximation with continuity correction: z = (100 - 1) / sqrt(2100), p about 0.031.
    assert p == pytest.approx(0.031, abs=0.003)


def test_bad_inputs_are_refused_with_a_message():
    with pytest.raises(ValueError, match="different numbers of images"):
        stats.paired_comparison([True, False], [True])
    with pytest.raises(ValueError, match="no images"):
        stats.bootstrap_interval([])
    with pytest.raises(ValueError, match="one right/wrong value per image"):
        stats.bootstrap_interval([[True, False]])


def test_all_right_still_has_an_interval_below_one():
    interval = stats.bootstrap_interval(np.ones(13, dtype=bool))
    assert interval.value == 1.0 and interval.high == 1.0
    assert 0.74 < interval.low < 0.76  # Clopper-Pearson: 0.025 ** (1 / 13)
    assert stats.bootstrap_interval(np.zeros(13, dtype=bool)).high > 0.24
