"""Exercises of the core lessons: the split rule (01), the softmax layer and its training (03), top-k (04).

Each exercise is a reference solution (self-contained: ``fill_stubs`` pastes its source into a
lesson) and a grader that tries the inputs where the classic mistakes show.
"""

from __future__ import annotations

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, as_array, as_float, describe, register

# ---------------------------------------------------------------------------------------------
# split_for (01_prepare_dataset)


def split_for(relative, validation_percentage, testing_percentage):
    """The split of an image from its path inside its label folder alone (retrain.py's rule).

    Taught in notebooks/01_prepare_dataset.ipynb.
    """
    import hashlib
    import re

    max_images_per_class = 2**27 - 1  # the resolution of the hash position, as in retrain.py
    hash_name = re.sub(r"_nohash_.*$", "", relative)  # 'cat_nohash_2.jpg' and 'cat_nohash_5.jpg' share a split
    digest = int(hashlib.sha1(hash_name.encode("utf-8")).hexdigest(), 16)
    position = (digest % (max_images_per_class + 1)) * (100.0 / max_images_per_class)  # in [0, 100]
    if position < validation_percentage:
        return "validation"
    if position < validation_percentage + testing_percentage:
        return "test"
    return "train"


_SPLITS = ("train", "validation", "test")
_STEMS = ("IMG", "DSC", "photo", "img", "scan", "Café", "cat", "bird", "flower", "rose petal", "ÉTÉ")
_FOLDERS = ("2019", "trip/day 2", "raw", "été", "a/b/c")
_EXTENSIONS = (".jpg", ".JPG", ".png", ".jpeg", ".webp", "")


def _random_names(rng: np.random.Generator, count: int) -> list[str]:
    names = set()
    while len(names) < count:
        stem = _STEMS[rng.integers(len(_STEMS))]
        name = f"{stem}_{rng.integers(0, 10**6):06d}{_EXTENSIONS[rng.integers(len(_EXTENSIONS))]}"
        if rng.random() < 0.3:
            name = f"{_FOLDERS[rng.integers(len(_FOLDERS))]}/{name}"
        names.add(name)
    return sorted(names, key=lambda _: rng.random())


def _position(relative: str) -> float:
    import hashlib
    import re

    hash_name = re.sub(r"_nohash_.*$", "", relative)
    digest = int(hashlib.sha1(hash_name.encode("utf-8")).hexdigest(), 16)
    return (digest % 2**27) * (100.0 / (2**27 - 1))


def _grade_split_for(candidate, rng: np.random.Generator) -> None:
    names = _random_names(rng, 1500)
    stems = [f"{_STEMS[rng.integers(len(_STEMS))]}_{rng.integers(10**6)}" for _ in range(60)]
    nohash_groups = [[f"{stem}_nohash_{k}{'.jpg' if k % 2 else '.png'}" for k in range(4)] for stem in stems]
    for validation, testing in ((20.0, 5.0), (10.0, 10.0), (0.0, 30.0), (33.3, 12.5)):
        answers = {}
        for name in names + [n for group in nohash_groups for n in group]:
            answer = candidate(name, validation, testing)
            if not isinstance(answer, str) or answer not in _SPLITS:
                raise GradingFailure(
                    f"split_for({name!r}, {validation}, {testing}) returned {describe(answer)}: "
                    f"return one of the strings 'train', 'validation', 'test'."
                )
            answers[name] = answer
        expected = {name: split_for(name, validation, testing) for name in answers}
        if all(answers[name] == expected[name] for name in answers):
            continue
        share = {s: sum(answers[n] == s for n in names) / len(names) for s in _SPLITS}
        setting = f"validation_percentage={validation:g} and testing_percentage={testing:g}"
        shares = (
            f"your function sent {share['validation']:.1%} of {len(names):,} names to validation and "
            f"{share['test']:.1%} to test (the rule sends about {validation:g}% and {testing:g}%)"
        )
        if validation + testing > 0 and (share["train"] > 0.97 or share["validation"] > 0.97 or share["test"] > 0.97):
            raise GradingFailure(
                f"With {setting}, {shares}. The percentages are percentages: {validation:g} means {validation:g} "
                f"in 100. The hash position runs from 0 to 100 ((digest % 2**27) * 100.0 / (2**27 - 1)); compare it "
                f"with the percentages as they are given, not divided by 100."
            )
        swapped = {"validation": "test", "test": "validation", "train": "train"}
        if validation != testing and np.mean([answers[n] == swapped[expected[n]] for n in names]) > 0.9:
            raise GradingFailure(
                f"With {setting}, {shares}: validation and test are swapped. Validation comes first: a position "
                f"below validation_percentage is 'validation', then below validation_percentage + "
                f"testing_percentage it is 'test', and the rest is 'train'."
            )
        for group in nohash_groups:
            if len({answers[n] for n in group}) > 1:
                listed = ", ".join(f"{n!r} -> {answers[n]!r}" for n in group)
                raise GradingFailure(
                    f"Images of one group went to different splits ({listed}). Everything from '_nohash_' to the "
                    f"end of the name is left out of the hash (re.sub(r'_nohash_.*$', '', relative)), so photos "
                    f"of one subject stay together in one split."
                )
        nested = [n for n in names if "/" in n]
        basename = [split_for(n.rsplit("/", 1)[1], validation, testing) for n in nested]
        if np.mean([answers[n] == b for n, b in zip(nested, basename, strict=True)]) > 0.95 and any(
            answers[n] != expected[n] for n in nested
        ):
            raise GradingFailure(
                "Names inside sub-folders go to the split of their file name alone. Hash the whole path inside "
                "the label folder as given (e.g. 'trip/day 2/IMG_1.jpg'), not only its last part."
            )
        wrong = next(n for n in answers if answers[n] != expected[n])
        raise GradingFailure(
            f"split_for({wrong!r}, {validation:g}, {testing:g}) returned {answers[wrong]!r}; the course's rule gives "
            f"{expected[wrong]!r} (its hash position is {_position(wrong):.4f}). "
            + (f"With {setting}, {shares}. " if abs(share["validation"] * 100 - validation) > 5 else "")
            + "The rule: remove '_nohash_' and what follows it, hash the name's UTF-8 bytes with SHA-1, read the hex "
            "digest as an integer, take it modulo 2**27 and scale it by 100.0 / (2**27 - 1) to a position in "
            "[0, 100]; below validation_percentage is validation, below validation_percentage + "
            "testing_percentage is test, the rest train."
        )


register(
    Exercise(
        name="split_for",
        lesson="01_prepare_dataset",
        signature="(relative: str, validation_percentage: float, testing_percentage: float) -> str",
        reference=split_for,
        grade=_grade_split_for,
    )
)


# ---------------------------------------------------------------------------------------------
# softmax_cross_entropy (03_retrain)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    Taught in notebooks/03_retrain.ipynb.
    """
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    shifted = logits - logits.max(axis=1, keepdims=True)  # softmax is unchanged, and exp cannot overflow
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probabilities[rows, labels].mean()
    grad = np.exp(log_probabilities)  # softmax
    grad[rows, labels] -= 1.0  # minus the one-hot labels
    grad /= len(labels)  # the loss is a mean over the batch
    return float(loss), grad


def _loss_and_grad(candidate, logits, labels, where: str):
    result = candidate(logits, labels)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GradingFailure(
            f"softmax_cross_entropy should return a pair (loss, grad), got {describe(result)} ({where})."
        )
    loss = as_float(result[0], f"the loss (first of the pair, {where})")
    grad = as_array(result[1], f"the gradient (second of the pair, {where})")
    if grad.shape != logits.shape:
        raise GradingFailure(
            f"the gradient should have the shape of the logits, {list(logits.shape)} ({where}), "
            f"got {list(grad.shape)}: one derivative per logit."
        )
    return loss, grad.astype(np.float64)


def _numerical_gradient(function, logits, labels, h=1e-5):
    numerical = np.zeros_like(logits)
    for index in np.ndindex(*logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[index] += h
        minus[index] -= h
        numerical[index] = (function(plus, labels) - function(minus, labels)) / (2 * h)
    return numerical


def _relative_error(a, b) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def _grade_softmax_cross_entropy(candidate, rng: np.random.Generator) -> None:
    for n, c in ((8, 5), (1, 3), (17, 4)):
        logits = rng.normal(0.0, 2.0, size=(n, c))
        labels = rng.integers(0, c, size=n)
        where = f"logits of shape [{n}, {c}] around ±2"
        loss, grad = _loss_and_grad(candidate, logits, labels, where)
        ref_loss, ref_grad = softmax_cross_entropy(logits, labels)
        if not np.isfinite(loss) or not np.all(np.isfinite(grad)):
            raise GradingFailure(f"the loss or gradient is not finite ({where}): loss {loss}.")
        if not np.isclose(loss, ref_loss, rtol=1e-6, atol=1e-9):
            if n > 1 and np.isclose(loss, ref_loss * n, rtol=1e-6):
                raise GradingFailure(
                    f"the loss is {n} times the right one for a batch of {n} ({where}): you summed over the batch. "
                    f"The loss is the mean over the images, so it does not grow with the batch size."
                )
            if np.isclose(loss, -ref_loss, rtol=1e-6):
                raise GradingFailure(
                    f"the loss is {loss:.4f}, the right one is {ref_loss:.4f} ({where}): the sign is flipped. "
                    f"Cross-entropy is minus the mean log-probability of each image's own label."
                )
            raise GradingFailure(
                f"the loss is {loss:.6f}, the right one is {ref_loss:.6f} ({where}, labels {labels.tolist()}). "
                f"The loss is the mean over the images of -log softmax(logits)[i, labels[i]]: pick each row's own "
                f"label, e.g. log_probabilities[np.arange(N), labels]."
            )
        if np.allclose(grad, ref_grad, rtol=1e-5, atol=1e-9):
            continue
        if np.allclose(grad, -ref_grad, rtol=1e-5, atol=1e-9):
            raise GradingFailure(
                f"the gradient has the wrong sign ({where}): d loss / d logits = (softmax(logits) - one_hot(labels)) "
                f"/ N. Raising the logit of the right label lowers the loss, so its derivative is negative."
            )
        if n > 1 and np.allclose(grad, ref_grad * n, rtol=1e-5, atol=1e-9):
            raise GradingFailure(
                f"the loss is right but the gradient is {n} times too big for a batch of {n} ({where}): "
                f"the loss is a mean over N images, so each row of the gradient is divided by N too."
            )
        numerical = _numerical_gradient(lambda x, y: softmax_cross_entropy(x, y)[0], logits, labels)
        error = _relative_error(grad, numerical)
        rows = grad.sum(axis=1)
        hint = (
            " Each row of the gradient should sum to 0 (the softmax sums to 1, and so does the one-hot row), yours "
            f"sum to {np.array2string(rows[:4], precision=3)}...: is the one-hot built from each row's own label?"
            if np.max(np.abs(rows)) > 1e-6
            else ""
        )
        raise GradingFailure(
            f"the loss is right but the gradient check fails ({where}): your gradient and the numerical gradient "
            f"of the loss (centred differences (L(x + h) - L(x - h)) / 2h with h = 1e-5) differ by a relative error "
            f"of {error:.1e}; a correct gradient gives below 1e-6. The gradient is (softmax(logits) - one_hot(labels)) "
            f"/ N.{hint}"
        )
    # logits in the thousands: exp overflows unless each row's maximum is subtracted first
    logits = rng.uniform(-3000.0, 3000.0, size=(6, 5))
    labels = rng.integers(0, 5, size=6)
    labels[0] = int(np.argmin(logits[0]))  # one label far below its row's maximum: its probability underflows
    where = "logits in the thousands, e.g. " + np.array2string(logits[0], precision=1, separator=", ")
    result = candidate(logits, labels)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GradingFailure(f"softmax_cross_entropy should return a pair (loss, grad), got {describe(result)}.")
    loss = as_float(result[0], "the loss")
    grad = as_array(result[1], "the gradient", logits.shape).astype(np.float64)
    ref_loss, ref_grad = softmax_cross_entropy(logits, labels)
    if not np.all(np.isfinite(grad)) or (np.isnan(loss)):
        raise GradingFailure(
            f"the loss is {loss} and the gradient holds {np.sum(~np.isfinite(grad))} non-finite values for {where}: "
            f"exp(1000) overflows. Subtract each row's maximum before exp: softmax does not change when a whole row "
            f"is shifted, and then the largest exp is exp(0) = 1."
        )
    if not np.isfinite(loss):
        raise GradingFailure(
            f"the loss is {loss} for {where}: the probability of a label far below its row's maximum rounds to 0, "
            f"and log(0) = -inf. Compute the log-probabilities directly, shifted - log(sum(exp(shifted))), rather "
            f"than the log of the softmax."
        )
    if not np.isclose(loss, ref_loss, rtol=1e-6) or not np.allclose(grad, ref_grad, rtol=1e-5, atol=1e-9):
        raise GradingFailure(
            f"for {where} the loss is {loss:.6g} (the right one is {ref_loss:.6g}) or the gradient differs: "
            f"subtract each row's maximum before exp, and take the log-probabilities as shifted - "
            f"log(sum(exp(shifted)))."
        )


register(
    Exercise(
        name="softmax_cross_entropy",
        lesson="03_retrain",
        signature="(logits, labels) -> (loss: float, grad [N, C])",
        reference=softmax_cross_entropy,
        grade=_grade_softmax_cross_entropy,
    )
)
