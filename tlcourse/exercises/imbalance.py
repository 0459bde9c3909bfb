"""Exercise of lesson 05 on class imbalance: correcting a model's probabilities for a new label prior.

A model learns p(y | x) under the label frequencies it was trained with, p(y). Where the frequencies are
q(y) instead, Bayes' rule gives p(y | x) * q(y) / p(y), renormalised over the labels (Saerens et al., 2002).
"""

from __future__ import annotations

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, as_array, describe, register


def adjust_for_prior(probabilities, training_counts, new_counts):
    """Each row of ``probabilities`` moved from the training label frequencies to the new ones.

    The probabilities are multiplied by new frequency / training frequency, label by label, and each row
    renormalised to add up to 1. Frequencies or counts give the same answer: a constant factor cancels in
    the renormalisation. Taught in notebooks/05_label_new_images.ipynb.
    """
    import numpy as np

    probabilities = np.asarray(probabilities, dtype=np.float64)
    training = np.asarray(training_counts, dtype=np.float64) / np.sum(training_counts)
    new = np.asarray(new_counts, dtype=np.float64) / np.sum(new_counts)
    adjusted = probabilities * (new / training)  # Bayes' rule, label by label (a column each)
    return adjusted / adjusted.sum(axis=1, keepdims=True)  # each image's probabilities add up to 1 again


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _rows(array: np.ndarray) -> np.ndarray:
    return array / array.sum(axis=1, keepdims=True)


def _prior_variants(probabilities, training_counts, new_counts) -> dict[str, np.ndarray]:
    """What plausible mistakes return, to name the mistake a learner made."""
    p, train_counts, counts = probabilities, np.asarray(training_counts, float), np.asarray(new_counts, float)
    training, new = train_counts / train_counts.sum(), counts / counts.sum()
    return {
        "unchanged": p,
        "not renormalised": p * new / training,
        "counts, not renormalised": p * counts / train_counts,
        "wrong way round": _rows(p * training / new),
        "new prior only": _rows(p * new),
        "training prior only": _rows(p / training),
        "columns": (p * new / training) / (p * new / training).sum(axis=0, keepdims=True),
        "ratio added to log": _softmax(np.log(p) + new / training),
        "log multiplied": _softmax(np.log(p) * new / training),
        "added": _rows(np.maximum(p + new - training, 0.0)),
    }


_PRIOR_MESSAGES = {
    "unchanged": "the probabilities came back unchanged: multiply each label's probability by new frequency / "
    "training frequency, then renormalise each row.",
    "not renormalised": "the ratios are right but the rows no longer add up to 1: divide each row by its sum. "
    "Bayes' rule gives p(y | x) * q(y) / p(y) only up to a factor that is the same for every label of an image.",
    "counts, not renormalised": "it multiplied by new count / training count and stopped there: the rows add up "
    "to anything. Renormalise each row to 1 (then counts or frequencies give the same answer: the factor "
    "between them cancels).",
    "wrong way round": "the ratio is upside down: multiply by new frequency / training frequency. A label that is "
    "more common where the model is used than in training should gain probability, not lose it.",
    "new prior only": "it multiplied by the new frequencies but did not divide by the training ones: the model's "
    "probabilities already hold the training frequencies, which must be taken out before the new ones go in.",
    "training prior only": "it divided by the training frequencies but never multiplied by the new ones: that gives "
    "a model for balanced labels, not for the new frequencies.",
    "columns": "each column (a label over all images) was renormalised; it is each row (one image over the labels) "
    "that must add up to 1: sum over axis=1.",
    "ratio added to log": "it added the ratio q / p to the log-probabilities (or logits). On the log scale the "
    "correction is an addition of logs: log p(y | x) + log q(y) - log p(y), then a softmax.",
    "log multiplied": "it multiplied the log-probabilities (or logits) by the ratio. On the log scale the "
    "correction is an addition: log p(y | x) + log q(y) - log p(y), then a softmax.",
    "added": "it added and subtracted the frequencies. Bayes' rule multiplies: p(y | x) * q(y) / p(y).",
}


def _case(rng: np.random.Generator, num_images: int, training_counts, new_counts):
    num_labels = len(training_counts)
    logits = rng.normal(0.0, 2.0, (num_images, num_labels))
    return _softmax(logits), np.array(training_counts), np.array(new_counts)


def _grade_adjust_for_prior(candidate, rng: np.random.Generator) -> None:
    cases = [
        # a 500-beside-5 training set, moved to the opposite frequencies: every mistake shows
        (
            _case(rng, 30, [500, 60, 5, 120], [20, 200, 150, 30]),
            "training counts [500, 60, 5, 120], new [20, 200, 150, 30]",
        ),
        # balanced training batches (the course's): the training prior is uniform
        (_case(rng, 20, [25, 25, 25], [70, 20, 10]), "training counts [25, 25, 25] (balanced), new [70, 20, 10]"),
    ]
    for _ in range(2):
        num_labels = int(rng.integers(3, 8))
        training, new = rng.integers(5, 400, num_labels), rng.integers(5, 400, num_labels)
        cases.append(
            (
                _case(rng, int(rng.integers(10, 40)), training, new),
                f"training counts {training.tolist()}, new {new.tolist()}",
            )
        )
    answers = []
    for (probabilities, training, new), where in cases:
        result = candidate(probabilities, training, new)
        shape = probabilities.shape
        answer = as_array(result, f"adjust_for_prior's result ({where})").astype(np.float64)
        if answer.shape != shape:
            raise GradingFailure(
                f"adjust_for_prior returned {describe(result)} for probabilities of shape {list(shape)} ({where}): "
                f"return the adjusted probabilities, one row per image and one column per label, the same shape."
            )
        if not np.all(np.isfinite(answer)):
            raise GradingFailure(f"adjust_for_prior returned nan or inf ({where}).")
        answers.append(answer)
    expected = [adjust_for_prior(*case) for case, _ in cases]
    wrong = [i for i, (a, e) in enumerate(zip(answers, expected, strict=True)) if not np.allclose(a, e, atol=1e-6)]
    if not wrong:
        return
    first = wrong[0]
    found = f"For {cases[first][1]}, the first image's adjusted probabilities came out "
    found += np.array2string(answers[first][0], precision=3)
    found += f" instead of {np.array2string(expected[first][0], precision=3)}"
    variants = [_prior_variants(*case) for case, _ in cases]
    for mistake, message in _PRIOR_MESSAGES.items():  # named only if it explains every case
        if all(np.allclose(a, v[mistake], atol=1e-6) for a, v in zip(answers, variants, strict=True)):
            raise GradingFailure(f"{found}: {message}")
    sums = answers[first].sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        raise GradingFailure(
            f"{found}, and its rows add up to {describe(sums)}. The grader cannot tell which step is off; each row "
            f"must add up to 1: multiply by new frequency / training frequency, then divide each row by its sum."
        )
    raise GradingFailure(
        f"{found}. This is not a mistake the grader knows, so it cannot say which step is off. Label by label: "
        f"p(y | x) * q(y) / p(y) with q and p the new and the training frequencies; then each row divided by its sum."
    )


register(
    Exercise(
        name="adjust_for_prior",
        lesson="05_label_new_images",
        signature="(probabilities [N, C], training_counts [C], new_counts [C]) -> probabilities [N, C]",
        reference=adjust_for_prior,
        grade=_grade_adjust_for_prior,
    )
)
