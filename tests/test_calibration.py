"""tlc.calibration: reliability bins and ECE, temperature scaling of a head, thresholds for unknowns."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest

from tlcourse import calibration, train
from tlcourse.data import Dataset, ImageRecord

matplotlib.use("Agg")


def two_class(confidences, correct):
    """Probabilities [N, 2] whose top probability is ``confidence``; label 0 when correct, 1 when not."""
    confidences = np.asarray(confidences, float)
    probabilities = np.stack([confidences, 1 - confidences], axis=1)
    labels = np.where(correct, 0, 1)
    return probabilities, labels


def test_a_calibrated_set_has_no_gap_and_bins_are_left_closed():
    # 10 images at 0.85 with 8 right, 10 at 0.65 with 7 right: each bin is 0.05 over-confident.
    probabilities, labels = two_class([0.85] * 10 + [0.65] * 10, [True] * 8 + [False] * 2 + [True] * 7 + [False] * 3)
    bins = calibration.reliability_bins(probabilities, labels, num_bins=10)
    assert bins.counts[8] == 10 and bins.counts[6] == 10  # 0.85 lies in [0.8, 0.9), 0.65 in [0.6, 0.7)
    assert calibration.expected_calibration_error(probabilities, labels, 10) == pytest.approx(0.05)
    probabilities, labels = two_class([0.8] * 10, [True] * 8 + [False] * 2)
    assert calibration.expected_calibration_error(probabilities, labels, 10) == pytest.approx(0.0, abs=1e-12)
    assert list(calibration.bin_index([0.0, 0.0999, 0.1, 1.0], 10)) == [0, 0, 1, 9]


def test_over_and_under_confident_bins_do_not_cancel():
    # 10 images at 0.95 with 5 right (gap 0.45), 10 at 0.55 with 10 right (gap 0.45 the other way).
    probabilities, labels = two_class([0.95] * 10 + [0.55] * 10, [True] * 5 + [False] * 5 + [True] * 10)
    ece = calibration.expected_calibration_error(probabilities, labels, num_bins=10)
    assert ece == pytest.approx(0.45)
    one_bin = calibration.expected_calibration_error(probabilities, labels, num_bins=1)
    assert one_bin == pytest.approx(abs(0.75 - 0.75))  # one bin hides both gaps
    bins = calibration.reliability_bins(probabilities, labels, 10)
    assert np.isnan(bins.accuracy[0]) and bins.counts.sum() == 20


def test_the_library_agrees_with_the_lessons_exercise_references():
    from tlcourse.exercises import confidence

    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, size=(500, 6))
    probabilities = calibration.softmax(logits)
    labels = np.array([rng.choice(6, p=row) for row in calibration.softmax(logits, 2.0)])
    for num_bins in (5, 10, 15):
        assert calibration.expected_calibration_error(probabilities, labels, num_bins) == pytest.approx(
            confidence.expected_calibration_error(probabilities, labels, num_bins)
        )
    assert calibration.fit_temperature(logits, labels) == pytest.approx(
        confidence.fit_temperature(logits, labels), rel=1e-3
    )


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(4000, 5))
    true_temperature = 2.5
    probabilities = calibration.softmax(logits, true_temperature)
    labels = np.array([rng.choice(5, p=row) for row in probabilities])
    fitted = calibration.fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    nll = calibration.negative_log_likelihood
    assert nll(logits, labels, fitted) < nll(logits, labels, 1.0)
    assert np.isfinite(nll(logits * 1000, labels, 1.0))  # huge logits stay finite


def test_a_temperature_scaled_head_gives_the_same_answers_with_softer_scores():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    standardize = (vectors.mean(axis=0), vectors.var(axis=0))
    head = train.new_head(8, 4, standardize=standardize)
    head.layers[-1].set_weights([rng.normal(0, 2, (8, 4)).astype(np.float32), np.zeros(4, np.float32)])
    logits = calibration.head_logits(head, vectors)
    np.testing.assert_allclose(calibration.softmax(logits), head(vectors).numpy(), atol=1e-5)
    scaled = calibration.with_temperature(head, 2.0)
    scores = scaled(vectors).numpy()
    np.testing.assert_allclose(scores, calibration.softmax(logits, 2.0), atol=1e-5)
    assert (scores.argmax(axis=1) == logits.argmax(axis=1)).all()
    assert scores.max(axis=1).mean() < head(vectors).numpy().max(axis=1).mean()
    assert scaled.layers[-1].name == head.layers[-1].name  # exports under the same output name
    np.testing.assert_allclose(calibration.head_logits(head, vectors), logits)  # the original is untouched
    with pytest.raises(ValueError, match="positive"):
        calibration.with_temperature(head, 0.0)


def test_thresholds_keep_above_and_reject_at_or_below():
    known, unknown = np.array([0.9, 0.8, 0.95, 0.5]), np.array([0.3, 0.45, 0.6, 0.2])
    threshold = calibration.choose_threshold(known, unknown)
    assert 0.45 < threshold < 0.5  # loses no known image, rejects 3 of 4 unknown ones
    counts = calibration.threshold_counts(threshold, known, unknown)
    assert (counts.known_lost, counts.unknown_rejected) == (0, 3)
    assert "rejects 3 of 4 unknown images, loses 0 of 4 known ones" in str(counts)
    assert calibration.threshold_counts(0.0, known, unknown).unknown_rejected == 0
    everything = calibration.threshold_counts(1.0, [1.0, 0.7], unknown)
    assert (everything.known_lost, everything.unknown_rejected) == (2, 4)
    separable = calibration.choose_threshold([0.9, 0.95], [0.2, 0.3])
    assert 0.3 < separable < 0.9


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "high", None])
def test_a_bad_threshold_is_refused_with_a_message(bad):
    with pytest.raises(ValueError, match="probability between 0 and 1"):
        calibration.check_threshold(bad)


def record(label, split, name="x.jpg"):
    return ImageRecord(Path(f"/data/{label}/{name}"), label, name, f"{label}{name}", split)


def test_unknown_images_belong_to_none_of_the_stamps_subjects():
    names = ["clipart-animals_birds", "clipart-computer", "clipart-food_fruit", "photo-food_fruit", "photo-clothes"]
    dataset = Dataset(Path("/data"), names, [record(n, s) for n in names for s in ("validation", "test")])
    photos = calibration.unknown_records(dataset, "test", "photo")
    clipart = calibration.unknown_records(dataset, "validation", "clipart")
    assert [r.label for r in photos] == ["photo-clothes"] and all(r.split == "test" for r in photos)
    assert [r.label for r in clipart] == ["clipart-computer"]
    assert calibration.subsample(list(range(10)), 3) == sorted(calibration.subsample(list(range(10)), 3))
    assert len(calibration.subsample(list(range(10)), 3)) == 3 and calibration.subsample([1, 2], None) == [1, 2]


def test_the_figures_draw():
    probabilities, labels = two_class([0.95] * 10 + [0.55] * 10, [True] * 5 + [False] * 5 + [True] * 10)
    bins = calibration.reliability_bins(probabilities, labels)
    figure = calibration.plot_reliability({"a": bins, "b": bins})
    assert len(figure.axes) == 2
    figure = calibration.plot_top_probability({"known": np.array([0.9, 0.8]), "unknown": np.array([0.3])}, 0.5)
    assert len(figure.axes) == 2
    figure.canvas.draw()
    for axis in figure.axes:  # counts of images: whole numbers on the y axis, never 0.5
        assert all(float(tick).is_integer() for tick in axis.get_yticks())


def test_an_ece_difference_carries_its_paired_interval():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, size=(400, 5))
    labels = np.array([rng.choice(5, p=row) for row in calibration.softmax(logits)])
    calibrated, sharpened = calibration.softmax(logits), calibration.softmax(logits, 0.4)
    worse = calibration.ece_difference(calibrated, sharpened, labels, num_resamples=200)
    assert worse.value > 0 and worse.significant and "a real difference" in str(worse)
    same = calibration.ece_difference(calibrated, calibrated, labels, num_resamples=50)
    assert same.value == 0 and not same.significant
