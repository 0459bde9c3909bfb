"""Exercises of the core lessons: the split rule (01), the ImageNet layer by hand (02), the softmax layer and
its training (03), top-k (04).

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


def _test_first(position: float, validation_percentage: float, testing_percentage: float) -> str:
    if position < testing_percentage:
        return "test"
    return "validation" if position < validation_percentage + testing_percentage else "train"


def _grade_split_for(candidate, rng: np.random.Generator) -> None:
    names = _random_names(rng, 600)
    stems = [f"{_STEMS[rng.integers(len(_STEMS))]}_{rng.integers(10**6)}" for _ in range(40)]
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
        for group in nohash_groups:
            if len({answers[n] for n in group}) > 1:
                listed = ", ".join(f"{n!r} -> {answers[n]!r}" for n in group)
                raise GradingFailure(
                    f"Images of one group went to different splits ({listed}). Everything from '_nohash_' to the "
                    f"end of the name is left out of the hash (re.sub(r'_nohash_.*$', '', relative)), so photos "
                    f"of one subject stay together in one split."
                )
        swapped = {"validation": "test", "test": "validation", "train": "train"}
        test_first = {n: _test_first(_position(n), validation, testing) for n in names}
        for variant in ({n: swapped[expected[n]] for n in names}, test_first):
            differ = [n for n in names if variant[n] != expected[n]]
            if validation != testing and differ and np.mean([answers[n] == variant[n] for n in differ]) > 0.9:
                raise GradingFailure(
                    f"With {setting}, {shares}: validation and test are swapped. Validation comes first: a "
                    f"position below validation_percentage is 'validation', then below validation_percentage + "
                    f"testing_percentage it is 'test', and the rest is 'train'."
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
            + "The grader cannot tell which step differs from the rule. The rule: remove '_nohash_' and what "
            "follows it, hash the name's UTF-8 bytes with SHA-1, read the hex "
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
# imagenet_probabilities (02_cache_bottlenecks)


def imagenet_probabilities(feature_map, weights, biases):
    """The bottleneck of a feature map (its average over the positions) and the ImageNet layer's probabilities.

    Taught in notebooks/02_cache_bottlenecks.ipynb.
    """
    import numpy as np

    bottleneck = np.asarray(feature_map, dtype=np.float64).mean(axis=(0, 1))  # one number per channel
    scores = bottleneck @ weights + biases
    probabilities = np.exp(scores - scores.max())  # softmax; the shift keeps exp finite
    return bottleneck, probabilities / probabilities.sum()


def _imagenet_variants(feature_map, weights, biases) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What plausible mistakes return, to name the mistake a learner made."""

    def layer(bottleneck, with_biases=True):
        scores = bottleneck @ weights + (biases if with_biases else 0.0)
        exp = np.exp(scores - scores.max())
        return exp / exp.sum()

    mean = feature_map.mean(axis=(0, 1))
    return {
        "max": (feature_map.max(axis=(0, 1)), layer(feature_map.max(axis=(0, 1)))),
        "sum": (feature_map.sum(axis=(0, 1)), layer(feature_map.sum(axis=(0, 1)))),
        "no_biases": (mean, layer(mean, with_biases=False)),
    }


_IMAGENET_MESSAGES = {
    "max": "you took each channel's maximum over the positions (max pooling); the bottleneck is its average, "
    "feature_map.mean(axis=(0, 1)).",
    "sum": "you added up the positions instead of averaging them: divide by their number (7 x 7 = 49 here), "
    "feature_map.mean(axis=(0, 1)).",
    "no_biases": "the bottleneck is right but the biases are missing: scores = bottleneck @ weights + biases.",
}


def _grade_imagenet_probabilities(candidate, rng: np.random.Generator) -> None:
    cases = []
    # the last layer's scores reach the thousands: exp overflows unless the largest score is subtracted first
    for side, channels, classes, weight_scale in ((7, 40, 25, 0.025), (5, 16, 10, 0.06), (7, 32, 12, 300.0)):
        feature_map = np.minimum(np.maximum(rng.normal(0.0, 2.5, size=(side, side, channels)), 0.0), 6.0)
        weights = rng.normal(0.0, weight_scale, size=(channels, classes))
        cases.append((feature_map, weights, rng.normal(0.0, 1.0, size=classes)))
    for feature_map, weights, biases in cases:
        side, _, channels = feature_map.shape
        classes = weights.shape[1]
        where = f"a {side}x{side} feature map of {channels} channels and a layer to {classes} classes"
        result = candidate(feature_map, weights, biases)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GradingFailure(
                f"imagenet_probabilities should return a pair (bottleneck, probabilities), got {describe(result)}."
            )
        bottleneck = as_array(result[0], f"the bottleneck ({where})").astype(np.float64)
        if bottleneck.shape != (channels,):
            raise GradingFailure(
                f"the bottleneck has shape {list(bottleneck.shape)} for {where}: it holds one number per channel, "
                f"[{channels}]. Average over the positions, axes 0 and 1 (rows and columns), not over the "
                f"channels: feature_map.mean(axis=(0, 1))."
            )
        probabilities = as_array(result[1], f"the probabilities ({where})", (classes,)).astype(np.float64)
        ref_bottleneck, ref_probabilities = imagenet_probabilities(feature_map, weights, biases)
        if np.allclose(bottleneck, ref_bottleneck, rtol=1e-6, atol=1e-9) and np.allclose(
            probabilities, ref_probabilities, rtol=1e-5, atol=1e-9
        ):
            continue
        scores = ref_bottleneck @ weights + biases
        if not np.all(np.isfinite(probabilities)):
            raise GradingFailure(
                f"the probabilities hold nan or inf for {where}, whose scores reach {scores.max():.0f}: exp of "
                f"such a score overflows. Subtract the largest score before exp (the softmax does not change)."
            )
        for mistake, (variant_bottleneck, variant_probabilities) in _imagenet_variants(
            feature_map, weights, biases
        ).items():
            if np.allclose(bottleneck, variant_bottleneck, rtol=1e-6) and np.allclose(
                probabilities, variant_probabilities, rtol=1e-5, atol=1e-9
            ):
                raise GradingFailure(f"for {where}: {_IMAGENET_MESSAGES[mistake]}")
        if not np.allclose(bottleneck, ref_bottleneck, rtol=1e-6, atol=1e-9):
            raise GradingFailure(
                f"the bottleneck differs for {where} (yours starts {np.array2string(bottleneck[:3], precision=4)}, "
                f"the average of each channel over the positions starts "
                f"{np.array2string(ref_bottleneck[:3], precision=4)}). The grader cannot tell which step is off: "
                f"the bottleneck is feature_map.mean(axis=(0, 1))."
            )
        if not np.isclose(probabilities.sum(), 1.0, atol=1e-6):
            raise GradingFailure(
                f"the bottleneck is right, but the probabilities add up to {probabilities.sum():.4g} for {where}: "
                f"turn the scores into probabilities with a softmax, exp(scores - max) / sum(exp(scores - max))."
            )
        raise GradingFailure(
            f"the bottleneck is right, but the probabilities differ for {where} (the largest of yours "
            f"{probabilities.max():.4f}, the layer's {ref_probabilities.max():.4f}). The grader cannot tell which "
            f"step is off: scores = bottleneck @ weights + biases, then a softmax over the classes."
        )


register(
    Exercise(
        name="imagenet_probabilities",
        lesson="02_cache_bottlenecks",
        signature="(feature_map [H, W, C], weights [C, K], biases [K]) -> (bottleneck [C], probabilities [K])",
        reference=imagenet_probabilities,
        grade=_grade_imagenet_probabilities,
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


def _loss_variants(logits, labels) -> dict[str, float]:
    """What plausible mistakes return as the loss, to name the mistake a learner made."""
    n, c = logits.shape
    loss = softmax_cross_entropy(logits, labels)[0]
    by_column = logits - logits.max(axis=0, keepdims=True)
    by_column = by_column - np.log(np.exp(by_column).sum(axis=0, keepdims=True))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {
        "sum": loss * n,
        "sign": -loss,
        "every_entry": loss / c,
        "columns": float(-by_column[np.arange(n), labels].mean()),
        "labels_as_columns": float(-log_probabilities[:, labels].mean()),
    }


_LOSS_MESSAGES = {
    "sum": "you summed over the batch. The loss is the mean over the images, so it does not grow with the batch size.",
    "sign": "the sign is flipped. Cross-entropy is minus the mean log-probability of each image's own label.",
    "every_entry": "that is the right loss divided by the number of labels C: you averaged over all N x C entries of "
    "one_hot * log_probabilities, zeros included. Sum over the labels (one term per image), then take the mean over "
    "the N images.",
    "columns": "your softmax normalised each column (over the images) instead of each row (over the labels): "
    "each image's probabilities sum to 1 along axis=1.",
    "labels_as_columns": "log_probabilities[:, labels] takes, for every image, the columns of every image's label "
    "(an N x N block). Pick each row's own label: log_probabilities[np.arange(N), labels].",
}


def _explain_loss(loss: float, ref_loss: float, logits, labels, where: str) -> None:
    found = f"the loss is {loss:.6f}, the right one is {ref_loss:.6f} ({where}, labels {labels.tolist()})"
    for mistake, value in _loss_variants(logits, labels).items():
        if len(labels) > 1 and np.isclose(loss, value, rtol=1e-6, atol=1e-9):
            raise GradingFailure(f"{found}: {_LOSS_MESSAGES[mistake]}")
    raise GradingFailure(
        f"{found}. This is not one of the mistakes the grader knows, so it cannot tell you which step is off. The "
        f"loss is the mean over the N images of -log softmax(logits)[i, labels[i]], the softmax taken along each "
        f"row; print your log-probabilities for one row and check that their exp sums to 1."
    )


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
            _explain_loss(loss, ref_loss, logits, labels, where)
        if np.allclose(grad, ref_grad, rtol=1e-5, atol=1e-9):
            continue
        if np.allclose(grad, -ref_grad, rtol=1e-5, atol=1e-9):
            raise GradingFailure(
                f"the gradient has the wrong sign ({where}): it is exactly minus the numerical gradient. Raising the "
                f"logit of the right label lowers the loss, so its derivative must be negative: check the sign of "
                f"each term of your derivation of -logit_y + log(sum_j exp(logit_j))."
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
            " Each row of the gradient should sum to 0 (adding the same number to every logit of a row leaves the "
            f"softmax, so the loss, unchanged), yours sum to {np.array2string(rows[:4], precision=3)}...."
            if np.max(np.abs(rows)) > 1e-6
            else ""
        )
        raise GradingFailure(
            f"the loss is right but the gradient check fails ({where}): your gradient and the numerical gradient "
            f"of the loss (centred differences (L(x + h) - L(x - h)) / 2h with h = 1e-5) differ by a relative error "
            f"of {error:.1e}; a correct gradient gives below 1e-6.{hint} The grader cannot tell which step of "
            f"your derivation is off: differentiate -logit_y + log(sum_j exp(logit_j)) with respect to logit_c, once "
            f"for c = y and once for c != y, then divide by N for the mean (lesson 03 has the derivation in a "
            f"collapsed cell)."
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
            f"exp(1000) overflows: subtract each row's maximum before exp (softmax does not change when a whole row "
            f"is shifted, and then the largest exp is exp(0) = 1)."
        )
    if not np.isfinite(loss):
        raise GradingFailure(
            f"the loss is {loss} for {where}: the probability of a label far below its row's maximum rounds to 0, "
            f"and log(0) = -inf. Compute the log-probabilities directly, shifted - log(sum(exp(shifted))), rather "
            f"than the log of the softmax."
        )
    if loss < ref_loss * (1 - 1e-3):
        raise GradingFailure(
            f"the loss is {loss:.6g} for {where}, but the right one is {ref_loss:.6g}: the probability of a label far "
            f"below its row's maximum is about exp(-{-float(np.min(logits[0] - logits[0].max())):.0f}), which rounds "
            f"to 0, and clipping it (np.clip(p, 1e-7, 1), or log(p + epsilon)) caps that image's loss (at -log(1e-7) "
            f"= 16 for a clip at 1e-7) instead of thousands. Compute the log-probabilities directly, shifted - "
            f"log(sum(exp(shifted))), so that no probability is rounded before its log is taken."
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


# ---------------------------------------------------------------------------------------------
# balanced_batch (03_retrain)


def balanced_batch(labels, batch_size, rng):
    """Indices of a class-balanced batch: each draw picks a label uniformly, then one of its images.

    Taught in notebooks/03_retrain.ipynb.
    """
    import numpy as np

    labels = np.asarray(labels)
    present, counts = np.unique(labels, return_counts=True)  # only the labels that have images
    by_label = np.argsort(labels, kind="stable")  # image indices grouped by label, in label order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    chosen = rng.integers(0, len(present), size=batch_size)  # a label for each draw, uniformly
    offsets = rng.integers(0, counts[chosen])  # then an image of that label, uniformly
    return by_label[starts[chosen] + offsets].astype(np.int64)


def _unbalanced_labels(rng: np.random.Generator, counts, values) -> np.ndarray:
    labels = np.concatenate([np.full(count, value) for count, value in zip(counts, values, strict=True)])
    return labels[rng.permutation(len(labels))].astype(np.int64)


def _indices(candidate, labels, batch_size, rng, where) -> np.ndarray:
    result = candidate(labels, batch_size, rng)
    batch = as_array(result, f"the batch ({where})")
    if batch.shape != (batch_size,):
        raise GradingFailure(
            f"balanced_batch(labels, {batch_size}, rng) returned shape {list(batch.shape)} ({where}): "
            f"it should return {batch_size} indices, one per draw."
        )
    if not np.issubdtype(batch.dtype, np.integer):
        raise GradingFailure(
            f"the batch holds {batch.dtype} values ({where}): return integer indices into labels "
            f"(e.g. np.array(indices, dtype=np.int64)), which the lesson uses as bottlenecks[batch]."
        )
    if batch.size and (batch.min() < 0 or batch.max() >= len(labels)):
        raise GradingFailure(
            f"the batch holds {int(batch.min())} .. {int(batch.max())} ({where}), but there are {len(labels)} "
            f"images: return positions in labels (0 .. {len(labels) - 1}), not label values."
        )
    return batch


def _check_balance(labels: np.ndarray, batch: np.ndarray, where: str) -> None:
    """Fail unless the drawn indices ``batch`` pick each label present about equally, then its images evenly."""
    values, sizes = np.unique(labels, return_counts=True)
    draws = len(batch)
    if len(np.unique(batch)) <= len(values) and set(batch.tolist()) <= set(values.tolist()) and draws > 50:
        raise GradingFailure(
            f"in {draws:,} draws ({where}) only the numbers {sorted(set(batch.tolist()))} came up: those are label "
            f"values. Return positions in labels (indices of images, 0 .. {len(labels) - 1}): pick a label, then "
            f"one of the images that have it, e.g. rng.choice(np.flatnonzero(labels == label))."
        )
    drawn = labels[batch]
    frequency = {int(v): float(np.mean(drawn == v)) for v in values}
    size = {int(v): int(n) for v, n in zip(values, sizes, strict=True)}
    listed = ", ".join(f"label {v} ({size[v]} image{'s' * (size[v] > 1)}): {frequency[v]:.1%}" for v in size)
    share = 1 / len(values)
    if max(abs(f - share) for f in frequency.values()) > 0.03:
        never = [v for v in size if frequency[v] == 0]
        if never and all(abs(frequency[v] - 1 / (len(values) - len(never))) < 0.03 for v in size if v not in never):
            raise GradingFailure(
                f"label {never[-1]} was never drawn in {draws:,} draws ({listed}). Every label present must come up "
                f"about equally often. An off-by-one? rng.integers(low, high) never returns high."
            )
        if all(abs(frequency[v] - size[v] / len(labels)) < 0.03 for v in size):
            raise GradingFailure(
                f"each label was drawn as often as it has images ({listed}): a label with 1,000 images "
                f"would be drawn 100x more often than one with 10, so the model learns to ignore the small one. "
                f"Pick the label first, uniformly among the labels present, then an image of that label uniformly "
                f"(balanced_batch)."
            )
        raise GradingFailure(
            f"in {draws:,} draws ({where}) each of the {len(values)} labels should come up about {share:.0%} of the "
            f"time; yours: {listed}. Pick the label first, uniformly among the labels present, then an image of "
            f"that label."
        )
    for value in values:
        members = np.flatnonzero(labels == value)
        if len(members) < 2:
            continue
        picked = batch[drawn == value]
        per_image = np.array([np.sum(picked == m) for m in members])
        expected = len(picked) / len(members)
        never = np.flatnonzero(per_image == 0)
        if expected >= 20 and len(never) == 1:
            last = " (the last of them: an off-by-one? rng.integers(0, n) already covers 0 .. n - 1)" * (
                bool(never[0] == len(members) - 1)
            )
            raise GradingFailure(
                f"image {int(members[never[0]])}, one of the {len(members)} images of label {value}, was never drawn "
                f"in {len(picked):,} draws of that label{last}. Within a label, every image must have the same chance."
            )
        if expected >= 20 and len(never) > 1:
            raise GradingFailure(
                f"only {len(members) - len(never)} of the {len(members)} images of label {value} were ever drawn in "
                f"{len(picked):,} draws of that label. Within a label, every image must have the same chance: pick "
                f"one of them uniformly, e.g. rng.choice(np.flatnonzero(labels == label))."
            )
        chi_square = float(np.sum((per_image - expected) ** 2 / expected))
        dof = len(members) - 1
        if chi_square > dof + 8 * np.sqrt(2 * dof):
            raise GradingFailure(
                f"within label {value} ({len(members)} images, {len(picked):,} draws) the images were not drawn "
                f"evenly: the most drawn came up {int(per_image.max())} times, the least {int(per_image.min())}, "
                f"against about {expected:.0f} each. Within a label, every image must have the same chance."
            )


def _grade_balanced_batch(candidate, rng: np.random.Generator) -> None:
    labels = _unbalanced_labels(rng, [1, 500, 20, 3], [int(v) for v in rng.permutation(4)])
    where = "labels with 1, 500, 20 and 3 images"
    batch = _indices(candidate, labels, 6000, np.random.default_rng(int(rng.integers(2**31))), where)
    _check_balance(labels, batch, where)
    # the generator given is the only source of randomness: equal seeds, equal batches
    seed = int(rng.integers(2**31))
    first = _indices(candidate, labels, 50, np.random.default_rng(seed), where)
    again = _indices(candidate, labels, 50, np.random.default_rng(seed), where)
    other = _indices(candidate, labels, 50, np.random.default_rng(seed + 1), where)
    if not np.array_equal(first, again) or np.array_equal(first, other):
        raise GradingFailure(
            "two generators made with the same seed gave "
            + ("different batches" if not np.array_equal(first, again) else "the same batch as another seed")
            + ": draw everything from the rng you are given (rng.integers, rng.choice), not from np.random or "
            "a generator of your own, so that a training run can be repeated exactly."
        )
    one = _indices(candidate, labels, 1, np.random.default_rng(seed), where)
    assert one.shape == (1,)
    # labels with a gap: no image has the label in the middle
    gap = _unbalanced_labels(rng, [30, 5, 12, 40], [0, 1, 3, 4])
    try:
        batch = _indices(candidate, gap, 4000, np.random.default_rng(seed), "labels 0, 1, 3 and 4; none is 2")
    except GradingFailure:
        raise
    except Exception as error:
        raise GradingFailure(
            f"with labels 0, 1, 3 and 4 (no image has label 2) your function failed ({error}). Choose among the "
            f"labels present (np.unique(labels)), not every number up to the largest label."
        ) from None
    frequency = [float(np.mean(gap[batch] == v)) for v in (0, 1, 3, 4)]
    if max(abs(f - 0.25) for f in frequency) > 0.04:
        raise GradingFailure(
            f"with labels 0, 1, 3 and 4 (no image has label 2) they came up "
            f"{', '.join(f'{f:.0%}' for f in frequency)} of the time instead of about 25% each: choose among the "
            f"labels present (np.unique(labels))."
        )


register(
    Exercise(
        name="balanced_batch",
        lesson="03_retrain",
        signature="(labels, batch_size: int, rng: numpy.random.Generator) -> indices [batch_size]",
        reference=balanced_batch,
        grade=_grade_balanced_batch,
    )
)


# ---------------------------------------------------------------------------------------------
# train_softmax_layer (03_retrain)


def train_softmax_layer(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    """A new softmax layer on cached bottlenecks, trained by plain SGD on class-balanced batches.

    Taught in notebooks/03_retrain.ipynb.
    """
    import numpy as np

    bottlenecks = np.asarray(bottlenecks, dtype=np.float64)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    weights = np.zeros((bottlenecks.shape[1], num_classes))
    biases = np.zeros(num_classes)
    present, counts = np.unique(labels, return_counts=True)
    by_label = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for _ in range(steps):
        chosen = rng.integers(0, len(present), size=batch_size)  # a balanced batch: a label, then an image
        batch = by_label[starts[chosen] + rng.integers(0, counts[chosen])]
        x, y = bottlenecks[batch], labels[batch]
        logits = x @ weights + biases
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        grad = probabilities
        grad[np.arange(batch_size), y] -= 1.0
        grad /= batch_size  # d mean cross-entropy / d logits
        weights -= learning_rate * (x.T @ grad)
        biases -= learning_rate * grad.sum(axis=0)
    return weights, biases


def _blobs(rng: np.random.Generator, means: np.ndarray, counts) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.full(count, c) for c, count in enumerate(counts)])
    vectors = means[labels] + rng.normal(0.0, 1.0, size=(len(labels), means.shape[1]))
    order = rng.permutation(len(labels))
    return vectors[order], labels[order].astype(np.int64)


def _mean_cross_entropy(weights, biases, vectors, labels) -> float:
    logits = vectors @ weights + biases
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def _layer(candidate, vectors, labels, num_classes, steps, learning_rate, batch_size, seed):
    where = f"steps={steps}, learning_rate={learning_rate}, batch_size={batch_size}, seed={seed}"
    result = candidate(vectors, labels, num_classes, steps, learning_rate, batch_size, seed)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GradingFailure(f"train_softmax_layer should return a pair (weights, biases), got {describe(result)}.")
    dim = vectors.shape[1]
    weights = as_array(result[0], f"the weights ({where})", (dim, num_classes)).astype(np.float64)
    biases = as_array(result[1], f"the biases ({where})", (num_classes,)).astype(np.float64)
    if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(biases))):
        raise GradingFailure(
            f"the weights or biases hold nan or inf after training ({where}): is the loss computed stably?"
        )
    return weights, biases


def _grade_train_softmax_layer(candidate, rng: np.random.Generator) -> None:
    num_classes, dim = 5, 32
    counts = [int(c) for c in rng.permutation([150, 60, 30, 15, 8])]
    means = rng.normal(0.0, 0.45, size=(num_classes, dim)) + rng.normal(0.0, 1.0, size=dim)
    vectors, labels = _blobs(rng, means, counts)
    test_vectors, test_labels = _blobs(rng, means, [80] * num_classes)
    steps, learning_rate, batch_size, seed = 150, 0.1, 32, int(rng.integers(10**6))
    sizes = ", ".join(str(c) for c in counts)
    problem = f"{num_classes} classes of {dim}-d points ({sizes} per class)"

    initial_w, initial_b = _layer(candidate, vectors, labels, num_classes, 0, learning_rate, batch_size, seed)
    if np.abs(initial_w).max() > 0.1 or np.abs(initial_b).max() > 0.1:
        raise GradingFailure(
            f"with steps=0 the layer should come back as initialised (zeros or small values), but its largest "
            f"weight is {np.abs(initial_w).max():.3g}: is `steps` the number of SGD steps you take?"
        )
    weights, biases = _layer(candidate, vectors, labels, num_classes, steps, learning_rate, batch_size, seed)
    again = _layer(candidate, vectors, labels, num_classes, steps, learning_rate, batch_size, seed)
    if not (np.array_equal(again[0], weights) and np.array_equal(again[1], biases)):
        raise GradingFailure(
            f"two runs with the same seed ({seed}) gave different layers: draw the batches from one generator, "
            f"rng = np.random.default_rng(seed), so that a training run can be repeated."
        )
    frozen_w, frozen_b = _layer(candidate, vectors, labels, num_classes, 50, 0.0, batch_size, seed)
    if not (np.allclose(frozen_w, initial_w) and np.allclose(frozen_b, initial_b)):
        raise GradingFailure(
            "with learning_rate=0 the layer still changed: each step should move the weights by learning_rate "
            "times the gradient, so a learning rate of 0 leaves them as they started."
        )
    _check_one_step(candidate, rng)
    _check_fresh_batches(candidate, rng)
    start = _mean_cross_entropy(initial_w, initial_b, vectors, labels)
    end = _mean_cross_entropy(weights, biases, vectors, labels)
    where = f"{problem}, {steps} steps, learning_rate={learning_rate}, batch_size={batch_size}"
    ref_w, ref_b = train_softmax_layer(vectors, labels, num_classes, steps, learning_rate, batch_size, seed)
    ref_end = _mean_cross_entropy(ref_w, ref_b, vectors, labels)
    accuracy = float(np.mean(np.argmax(test_vectors @ weights + biases, axis=1) == test_labels))
    ref_accuracy = float(np.mean(np.argmax(test_vectors @ ref_w + ref_b, axis=1) == test_labels))
    recipe = (
        "Each step: a balanced batch, logits = x @ weights + biases, the gradient of the mean cross-entropy "
        "(softmax - one_hot) / batch_size, then weights -= learning_rate * x.T @ gradient and biases -= "
        "learning_rate * gradient.sum(axis=0)."
    )
    if accuracy < ref_accuracy - 0.12:
        raise GradingFailure(
            f"after training ({where}) your layer labels {accuracy:.0%} of {len(test_labels)} held-out points right; "
            f"the course's layer reaches {ref_accuracy:.0%}. {recipe}"
        )
    if end > start - 0.5 * (start - ref_end):
        raise GradingFailure(
            f"after training ({where}) your training loss went from {start:.3f} to {end:.3f}; the course's layer "
            f"reaches {ref_end:.3f} in the same steps (your held-out accuracy, {accuracy:.0%} against "
            f"{ref_accuracy:.0%}, is not the problem: the loss is what SGD minimises, and yours fell less than "
            f"half as far, so your steps are too small). {recipe}"
        )


# The hard cases: one image per input dimension (bottlenecks = the identity matrix), so that after one step
# from a known start each image's row of the weights shows how many times it was in the batch, and the labels
# 500 images beside 5, where uniform draws or full-batch steps all but ignore the small label.
_HARD_COUNTS = (500, 5, 40, 15)


def _identity_problem(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = _unbalanced_labels(rng, _HARD_COUNTS, [int(v) for v in rng.permutation(len(_HARD_COUNTS))])
    return np.eye(len(labels)), labels


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _check_one_step(candidate, rng: np.random.Generator) -> None:
    """One SGD step on identity bottlenecks: each image's weight row moved by -lr * (its draws) * grad_i / batch."""
    vectors, labels = _identity_problem(rng)
    num_classes, batch_size, learning_rate, seed = len(_HARD_COUNTS), 4000, 1.0, int(rng.integers(10**6))
    where = (
        f"one step with batch_size={batch_size}, learning_rate={learning_rate}, on {len(labels)} images "
        f"({', '.join(map(str, _HARD_COUNTS))} per label) whose bottlenecks are the rows of the identity matrix"
    )
    w0, b0 = _layer(candidate, vectors, labels, num_classes, 0, learning_rate, batch_size, seed)
    w1, b1 = _layer(candidate, vectors, labels, num_classes, 1, learning_rate, batch_size, seed)
    grad = _softmax_rows(w0 + b0)  # image i's logits are its own row of the weights plus the biases
    grad[np.arange(len(labels)), labels] -= 1.0
    moved = w1 - w0
    draws = -(batch_size / learning_rate) * np.sum(moved * grad, axis=1) / np.sum(grad * grad, axis=1)
    residual = moved + learning_rate * draws[:, None] * grad / batch_size
    if np.abs(residual).max() > 1e-4 * max(np.abs(moved).max(), 1e-12):
        raise GradingFailure(
            f"after {where}, the weights of image i (row i, since its bottleneck is the i-th unit vector) should "
            f"move against (softmax(logits_i) - one_hot(label_i)), times the number of times i was drawn, times "
            f"learning_rate / batch_size; yours moved in another direction. weights -= learning_rate * x.T @ grad, "
            f"with grad = (softmax - one_hot) / batch_size from softmax_cross_entropy."
        )
    total = float(draws.sum())
    if abs(total + batch_size) < 1e-3 * batch_size:
        raise GradingFailure(
            f"after {where}, the weights moved up the gradient, so the loss rises: step against the gradient, "
            f"weights -= learning_rate * x.T @ grad (and the same for the biases)."
        )
    whole = np.abs(draws - np.round(draws)).max() < 1e-3
    if whole and round(total) != batch_size:
        raise GradingFailure(
            f"after {where}, the step used a batch of {round(total)} images: the batch holds batch_size images, "
            f"balanced_batch(labels, batch_size, rng), and the gradient of their mean loss."
        )
    if abs(total - 1.0) < 1e-3:
        raise GradingFailure(
            f"after {where}, the weights moved {batch_size} times less than one SGD step moves them: the gradient "
            f"was divided by the batch size twice. softmax_cross_entropy already returns the gradient of the mean "
            f"(it carries the 1 / batch_size): use weights -= learning_rate * x.T @ grad as it is."
        )
    if abs(total - batch_size**2) < 1e-3 * batch_size**2:
        raise GradingFailure(
            f"after {where}, the weights moved {batch_size} times more than one SGD step moves them: the gradient of "
            f"the mean loss carries a 1 / batch_size (softmax_cross_entropy returns it that way)."
        )
    if abs(total - batch_size) > 1e-3 * batch_size:
        raise GradingFailure(
            f"after {where}, the weights moved {total / batch_size:.3g} times as far as one SGD step of size "
            f"learning_rate: weights -= learning_rate * x.T @ grad, once per step, nothing more."
        )
    if np.abs(draws - draws.mean()).max() < 1e-3 * draws.mean():
        raise GradingFailure(
            f"after {where}, every one of the {len(labels)} images moved the weights by the same amount: that is a "
            f"step on the whole training set (full-batch gradient descent), not on a batch of batch_size images "
            f"drawn by balanced_batch. The small label (5 images) then weighs 100x less than the big one (500) and "
            f"is hardly ever predicted."
        )
    if not whole or draws.min() < -1e-3:
        raise GradingFailure(
            f"after {where}, the weights moved as if images had been drawn fractional numbers of times (from "
            f"{draws.min():.3g} to {draws.max():.3g}): one step is one batch of batch_size images from "
            f"balanced_batch(labels, batch_size, rng), logits = x @ weights + biases, and weights -= learning_rate "
            f"* x.T @ grad."
        )
    counts = np.round(draws).astype(np.int64)
    common = int(np.gcd.reduce(counts))
    if common > 1:
        raise GradingFailure(
            f"after {where}, every image drawn counted a multiple of {common} times: the step looks like a batch of "
            f"{batch_size // common} images, not batch_size={batch_size}. Draw batch_size images, "
            f"balanced_batch(labels, batch_size, rng)."
        )
    bias_step = -learning_rate * (counts[:, None] * grad).sum(axis=0) / batch_size
    if np.array_equal(b1, b0):
        raise GradingFailure(
            f"after {where}, the weights moved but the biases never changed: update them too, biases -= "
            f"learning_rate * grad.sum(axis=0) (the gradient with respect to the logits, summed over the batch)."
        )
    if not np.allclose(b1 - b0, bias_step, rtol=1e-4, atol=1e-9 + 1e-4 * np.abs(bias_step).max()):
        if np.allclose(b1 - b0, bias_step / batch_size, rtol=1e-4, atol=1e-12):
            raise GradingFailure(
                f"after {where}, the weights moved right but the biases moved {batch_size} times too little: the "
                f"bias gradient was divided by the batch size twice (e.g. grad.mean(axis=0) of a grad that already "
                f"carries 1 / batch_size). d loss / d biases = grad.sum(axis=0)."
            )
        ratio = float(np.linalg.norm(b1 - b0) / max(np.linalg.norm(bias_step), 1e-12))
        raise GradingFailure(
            f"after {where}, the weights moved right but the biases moved {ratio:.3g} times as far as they should "
            f"(or in another direction): d loss / d biases = grad.sum(axis=0), so biases -= learning_rate * "
            f"grad.sum(axis=0)."
        )
    _check_balance(labels, np.repeat(np.arange(len(labels)), counts), f"the batch of {where}")


def _check_fresh_batches(candidate, rng: np.random.Generator) -> None:
    vectors, labels = _identity_problem(rng)
    steps, batch_size, seed = 30, 8, int(rng.integers(10**6))
    w0, _ = _layer(candidate, vectors, labels, len(_HARD_COUNTS), 0, 1.0, batch_size, seed)
    w, _ = _layer(candidate, vectors, labels, len(_HARD_COUNTS), steps, 1.0, batch_size, seed)
    touched = int(np.sum(np.any(w != w0, axis=1)))  # an image's row moves only when it is in a batch
    if touched <= batch_size:
        raise GradingFailure(
            f"in {steps} steps of batch_size={batch_size} on {len(labels)} images, only {touched} different images "
            f"were ever in a batch: every step trained on the same batch. Make the generator once, "
            f"rng = np.random.default_rng(seed), before the loop, and draw each step's batch from it."
        )


register(
    Exercise(
        name="train_softmax_layer",
        lesson="03_retrain",
        signature=(
            "(bottlenecks, labels, num_classes: int, steps: int, learning_rate: float, batch_size: int, seed: int) "
            "-> (weights [D, C], biases [C])"
        ),
        reference=train_softmax_layer,
        grade=_grade_train_softmax_layer,
    )
)


# ---------------------------------------------------------------------------------------------
# top_k_accuracy (05_label_new_images)


def top_k_accuracy(probabilities, labels, k):
    """The share of images whose true label is among the k most probable.

    Taught in notebooks/05_label_new_images.ipynb.
    """
    import numpy as np

    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    true = probabilities[np.arange(len(labels)), labels]
    rank = (probabilities > true[:, None]).sum(axis=1)  # how many labels score above the true one
    return float(np.mean(rank < k))


def _top_k_variants(probabilities, labels, k) -> dict[str, float]:
    """What plausible mistakes return, to name the mistake a learner made."""
    true = probabilities[np.arange(len(labels)), labels]
    by_column = np.argsort(-probabilities, axis=0)  # each column sorted: the wrong axis
    return {
        "k_plus_one": top_k_accuracy(probabilities, labels, k + 1),
        "k_minus_one": top_k_accuracy(probabilities, labels, k - 1),
        "smallest": float(np.mean((probabilities < true[:, None]).sum(axis=1) < k)),
        "axis": float(np.mean((by_column[:, :k] == labels[:, None]).any(axis=1))),
        "percent": 100.0 * top_k_accuracy(probabilities, labels, k),
        "count": len(labels) * top_k_accuracy(probabilities, labels, k),
        "top_one": top_k_accuracy(probabilities, labels, 1),
    }


_TOP_K_MESSAGES = {
    "k_plus_one": "you count the k + 1 most probable labels: [:k] already takes k of them (0 .. k - 1).",
    "k_minus_one": "you count only k - 1 labels: the top k are the k largest probabilities, positions 0 .. k - 1 "
    "of a descending order.",
    "smallest": "you take the k *least* probable labels: np.argsort sorts in ascending order, so take the last k "
    "(or sort -probabilities).",
    "axis": "the top k must be taken along each row (axis=1): a row is one image's probabilities over the labels, "
    "a column is one label over all images.",
    "percent": "return a fraction between 0 and 1, not a percentage.",
    "count": "that is the number of images whose label is in their top k: return the share, divided by N.",
    "top_one": "your function gives the top-1 accuracy whatever k is: count an image when its label is among the "
    "k most probable, e.g. np.argsort(-probabilities, axis=1)[:, :k].",
}


def _grade_top_k_accuracy(candidate, rng: np.random.Generator) -> None:
    cases = []
    for n, c, ks in ((300, 10, (1, 2, 3, 5, 10)), (40, 4, (1, 3, 4)), (25, 6, (2,))):
        labels = rng.integers(0, c, size=n)
        logits = rng.normal(0.0, 1.5, size=(n, c))
        logits[np.arange(n), labels] += rng.uniform(0.0, 2.5, size=n)  # the true label is often near the top
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        cases += [(probabilities, labels, k) for k in ks]
    answers = []
    for probabilities, labels, k in cases:
        value = as_float(candidate(probabilities, labels, k), f"top_k_accuracy(probabilities, labels, k={k})")
        answers.append(value)
    expected = [top_k_accuracy(p, y, k) for p, y, k in cases]
    wrong = [i for i, (a, e) in enumerate(zip(answers, expected, strict=True)) if not np.isclose(a, e, atol=1e-9)]
    if not wrong:
        return
    variants = [_top_k_variants(p, y, k) for p, y, k in cases]
    for mistake, message in _TOP_K_MESSAGES.items():
        if all(np.isclose(a, v[mistake], atol=1e-9) for a, v in zip(answers, variants, strict=True)):
            probabilities, labels, k = cases[wrong[0]]
            raise GradingFailure(
                f"top_k_accuracy(probabilities {list(probabilities.shape)}, labels, k={k}) returned "
                f"{answers[wrong[0]]:.4f}; the right value is {expected[wrong[0]]:.4f}: {message}"
            )
    probabilities, labels, k = cases[wrong[0]]
    raise GradingFailure(
        f"top_k_accuracy(probabilities {list(probabilities.shape)}, labels, k={k}) returned {answers[wrong[0]]:.4f}; "
        f"the right value is {expected[wrong[0]]:.4f}. This is not a mistake the grader knows, so it cannot say "
        f"which step is off. An image counts when its true label (a column index) is among the positions of the k "
        f"largest probabilities of its row; the result is the share of such images."
    )


register(
    Exercise(
        name="top_k_accuracy",
        lesson="05_label_new_images",
        signature="(probabilities, labels, k: int) -> float",
        reference=top_k_accuracy,
        grade=_grade_top_k_accuracy,
    )
)


# ---------------------------------------------------------------------------------------------
# balanced_accuracy (05_label_new_images): class imbalance measured per label


def balanced_accuracy(labels, predictions):
    """The mean, over the labels that have images, of each label's recall (the share of its images predicted right).

    Taught in notebooks/05_label_new_images.ipynb.
    """
    import numpy as np

    labels, predictions = np.asarray(labels), np.asarray(predictions)
    recalls = [np.mean(predictions[labels == label] == label) for label in np.unique(labels)]
    return float(np.mean(recalls))


def _balanced_variants(labels, predictions) -> dict[str, float]:
    """What plausible mistakes return, to name the mistake a learner made."""
    present = np.unique(labels)
    either = np.union1d(present, np.unique(predictions))
    recall = {v: float(np.mean(predictions[labels == v] == v)) if np.any(labels == v) else 0.0 for v in either}
    precision = {v: float(np.mean(labels[predictions == v] == v)) for v in np.unique(predictions)}
    f1 = [
        2 * precision.get(v, 0.0) * recall[v] / (precision.get(v, 0.0) + recall[v])
        if precision.get(v, 0.0) + recall[v]
        else 0.0
        for v in present
    ]
    return {
        "accuracy": float(np.mean(labels == predictions)),
        "precision": float(np.mean(list(precision.values()))),
        "union": float(np.mean([recall[v] for v in either])),
        "f1": float(np.mean(f1)),
        "percent": 100 * balanced_accuracy(labels, predictions),
    }


_BALANCED_MESSAGES = {
    "accuracy": "that is the plain accuracy: every image counts once, so the big label decides it. Take each "
    "label's recall (the share of its images predicted right), then the mean over the labels.",
    "precision": "that is the mean precision (of the images predicted as a label, the share that have it). "
    "Balanced accuracy averages recall: of the images that have a label, the share predicted as it.",
    "union": "you averaged over every label that appears in labels or in predictions; a label no image has "
    "has no recall. Average over the labels present in `labels` (np.unique(labels)).",
    "f1": "that is the macro F1 score, which mixes precision in. Balanced accuracy is the mean recall.",
    "percent": "return a fraction between 0 and 1, not a percentage.",
}


def _grade_balanced_accuracy(candidate, rng: np.random.Generator) -> None:
    cases = []
    # a fixed hard case: a model that always answers the big label is 95% accurate and 1/3 balanced
    big = np.concatenate([np.zeros(500, int), np.ones(5, int), np.full(20, 2)])
    cases.append((big, np.zeros_like(big), "500, 5 and 20 images of labels 0, 1, 2, every prediction label 0"))
    for _ in range(3):
        values = rng.choice(12, size=4, replace=False)  # labels need not be 0 .. C - 1: some numbers are unused
        counts = rng.permutation([300, 40, 9, 3])
        labels = np.repeat(values, counts)[rng.permutation(int(counts.sum()))]
        predictions = np.where(rng.random(len(labels)) < 0.7, labels, rng.choice(np.append(values, 12), len(labels)))
        where = f"{len(labels)} images of labels {sorted(values.tolist())} ({', '.join(map(str, counts))} each)"
        cases.append((labels, predictions, where + "; some predictions name label 12, which no image has"))
    answers = []
    for labels, predictions, where in cases:
        answer = as_float(candidate(labels, predictions), f"balanced_accuracy(labels, predictions) ({where})")
        if np.isnan(answer):
            raise GradingFailure(
                f"balanced_accuracy returned nan ({where}): a label with no image has no recall (0 / 0). Average "
                f"over the labels present in `labels` only."
            )
        answers.append(answer)
    expected = [balanced_accuracy(labels, predictions) for labels, predictions, _ in cases]
    wrong = [i for i, (a, e) in enumerate(zip(answers, expected, strict=True)) if not np.isclose(a, e, atol=1e-9)]
    if not wrong:
        return
    first = wrong[0]
    found = (
        f"balanced_accuracy returned {answers[first]:.4f}, the right value is {expected[first]:.4f} ({cases[first][2]})"
    )
    variants = [_balanced_variants(labels, predictions) for labels, predictions, _ in cases]
    for mistake, message in _BALANCED_MESSAGES.items():  # a mistake is named only if it explains every case
        if all(np.isclose(a, v[mistake], atol=1e-9) for a, v in zip(answers, variants, strict=True)):
            raise GradingFailure(f"{found}: {message}")
    raise GradingFailure(
        f"{found}. This is not a mistake the grader knows, so it cannot say which step is off. For each label "
        f"present in `labels`, the share of its images whose prediction is that label; then their mean."
    )


register(
    Exercise(
        name="balanced_accuracy",
        lesson="05_label_new_images",
        signature="(labels [N], predictions [N]) -> float",
        reference=balanced_accuracy,
        grade=_grade_balanced_accuracy,
    )
)
