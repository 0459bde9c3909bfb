"""Exercises of the lesson on trusting a score (10): calibration error and temperature scaling."""

from __future__ import annotations

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, as_float, register

# ---------------------------------------------------------------------------------------------
# expected_calibration_error


def expected_calibration_error(probabilities, labels, num_bins):
    """Expected calibration error: equal-width bins on the top probability, |accuracy - confidence| weighted.

    Taught in notebooks/11_calibration.ipynb.
    """
    import numpy as np

    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)  # a confidence of 1.0 is in the last bin
    error = 0.0
    for b in range(num_bins):
        inside = bins == b
        if inside.any():
            share = inside.mean()  # the bin's share of the images
            error += share * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def _calibration_problem(rng: np.random.Generator, num_classes: int = 10, count: int = 3000):
    """Rows whose low confidences are under-confident and high ones over-confident, plus some at exactly 1.0.

    The rows at exactly 1.0 are over-confident and the highest confidences below 1.0 under-confident, so an
    answer that puts 1.0 in a bin of its own (not in the last bin) gets another error with any number of bins.
    """
    edges = np.concatenate([np.arange(1, m) / m for m in (5, 10, 15)])
    kind = rng.choice(3, size=count, p=[0.4, 0.5, 0.1])
    confidence = np.where(kind == 0, rng.uniform(0.2, 0.6, count), rng.uniform(0.65, 0.99, count))
    confidence[kind == 2] = 1.0
    for _ in range(100):  # keep away from the inner bin edges, where rounding would decide the bin
        near = np.min(np.abs(confidence[:, None] - edges[None, :]), axis=1) < 1e-6
        if not near.any():
            break
        confidence[near] = rng.uniform(0.65, 0.99, int(near.sum()))
    under, over = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.3)
    # high confidences: over-confident, except every other 1/15-wide stretch (so the number of bins matters)
    # and the top one, [14/15, 1), whose gap has the other sign than the rows at 1.0
    stretch = (np.floor(confidence * 15).astype(int) % 2 == 1) | (confidence >= 14 / 15)
    gap = np.where(kind == 0, under, np.where(stretch, 0.5 * under, -over))
    accuracy = np.clip(confidence + gap, 0.0, 1.0)
    accuracy[kind == 2] = 0.7
    correct = rng.random(count) < accuracy
    labels = rng.integers(0, num_classes, size=count)
    top = np.where(correct, labels, (labels + rng.integers(1, num_classes, size=count)) % num_classes)
    rest = np.zeros((count, num_classes - 1))
    todo = confidence < 1.0  # a confidence of 1.0 leaves nothing for the other labels
    while todo.any():  # the other labels share the rest, each below the top probability
        rest[todo] = rng.dirichlet(np.ones(num_classes - 1), size=int(todo.sum())) * (1.0 - confidence[todo, None])
        todo = rest.max(axis=1) >= confidence - 1e-3
    probabilities = np.zeros((count, num_classes))
    others = (top[:, None] + np.arange(1, num_classes)[None, :]) % num_classes
    probabilities[np.arange(count)[:, None], others] = rest
    probabilities[np.arange(count), top] = confidence
    return probabilities, labels


def _binned(values, correct, num_bins, keep=None, one_apart=False) -> list[tuple[int, float]]:
    """(count, accuracy - mean value) of each non-empty bin; rows where ``keep`` is False are left out.

    A value of 1.0 goes in the last bin, or with ``one_apart`` in an extra bin of its own (a mistake).
    """
    index = (values * num_bins).astype(int)
    if not one_apart:
        index = np.minimum(index, num_bins - 1)
    if keep is not None:
        index = np.where(keep, index, -1)
    return [
        (int(np.sum(index == b)), correct[index == b].mean() - values[index == b].mean())
        for b in range(num_bins + 1)
        if np.any(index == b)
    ]


def _groups(index: np.ndarray, keep: np.ndarray | None = None) -> list[np.ndarray]:
    """The rows of each bin number in ``index`` (rows where ``keep`` is False left out)."""
    rows = np.arange(len(index)) if keep is None else np.flatnonzero(keep)
    return [rows[index[rows] == b] for b in np.unique(index[rows])]


def _ece_of_groups(groups, confidence, correct, accuracy=None) -> float:
    """Each group's |accuracy - mean confidence| weighted by its share of all rows (``accuracy`` fixed if given)."""
    return float(
        sum(
            len(g) / len(confidence) * abs((correct[g].mean() if accuracy is None else accuracy) - confidence[g].mean())
            for g in groups
            if len(g)
        )
    )


def _ece_variants(probabilities, labels, num_bins) -> dict[str, float]:
    """What plausible mistakes return, to name the mistake a learner made."""
    n = len(labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    last = np.minimum((confidence * num_bins).astype(int), num_bins - 1)  # the right bin of each row
    bins = _binned(confidence, correct, num_bins)
    dropped = _binned(confidence, correct, num_bins, keep=confidence < 1.0)
    kept = max(1, sum(k for k, _ in dropped))
    true_label = _binned(probabilities[np.arange(n), labels], correct, num_bins)
    return {
        "signed": abs(sum(k / n * g for k, g in bins)),
        "signed_raw": sum(k / n * g for k, g in bins),
        "unweighted": float(np.mean([abs(g) for _, g in bins])),
        "unweighted_all_bins": sum(abs(g) for _, g in bins) / num_bins,
        "true_label": sum(k / n * abs(g) for k, g in true_label),
        "drop_one_total_n": sum(k / n * abs(g) for k, g in dropped),
        "drop_one": sum(k / kept * abs(g) for k, g in dropped),
        "own_bin": sum(k / n * abs(g) for k, g in _binned(confidence, correct, num_bins, one_apart=True)),
        "counts": sum(k * abs(g) for k, g in bins),
        "ten_bins": expected_calibration_error(probabilities, labels, 10),
        "largest": max(abs(g) for _, g in bins),
        "equal_count": _ece_of_groups(np.array_split(np.argsort(confidence), num_bins), confidence, correct),
        "rounded": _ece_of_groups(_groups(np.round(confidence * num_bins)), confidence, correct),
        "last_bin_dropped": _ece_of_groups(_groups(last, keep=last < num_bins - 1), confidence, correct),
        "one_bin_short": _ece_of_groups(
            _groups(np.minimum((confidence * (num_bins - 1)).astype(int), num_bins - 2)), confidence, correct
        ),
        "overall_accuracy": _ece_of_groups(_groups(last), confidence, correct, accuracy=correct.mean()),
    }


_ECE_MESSAGES = {
    "signed": "the over-confident bins (confidence above accuracy) and the under-confident ones (below) cancel "
    "out: take the absolute value of each bin's gap, |accuracy - confidence|, before adding the bins up.",
    "signed_raw": "the over-confident bins (confidence above accuracy) and the under-confident ones (below) cancel "
    "out: take the absolute value of each bin's gap, |accuracy - confidence|, before adding the bins up.",
    "unweighted": "weight each bin's gap by its share of the images (count in the bin / N) instead of averaging "
    "over the bins: a bin with 3 images must count less than a bin with 300.",
    "unweighted_all_bins": "weight each bin's gap by its share of the images (count in the bin / N) instead of "
    "averaging over the bins: a bin with 3 images must count less than a bin with 300.",
    "true_label": "bin on the confidence, the top probability of each row (probabilities.max(axis=1)), not on the "
    "probability of the true label.",
    "drop_one_total_n": "the images with a confidence of exactly 1.0 are missing: they belong in the last bin "
    "(it includes its right edge, 1.0), e.g. bin = min(int(confidence * num_bins), num_bins - 1).",
    "drop_one": "the images with a confidence of exactly 1.0 are missing: they belong in the last bin "
    "(it includes its right edge, 1.0), e.g. bin = min(int(confidence * num_bins), num_bins - 1).",
    "own_bin": "a confidence of exactly 1.0 belongs in the last bin (with 10 bins, [0.9, 1.0]: the last bin "
    "includes its right edge), not in a bin of its own: bin = min(int(confidence * num_bins), num_bins - 1).",
    "counts": "weight each bin's gap by its share of the images (count in the bin / N), not by its count: the "
    "error is a weighted mean of gaps between 0 and 1, so it is never above 1.",
    "ten_bins": "use num_bins equal-width bins, not a fixed number.",
    "largest": "that is the largest gap of any bin (the maximum calibration error). The expected calibration error "
    "adds the gaps up, each weighted by its bin's share of the images.",
    "equal_count": "your bins hold equal numbers of images. The expected calibration error uses num_bins "
    "equal-width bins of confidence, [0, 1/num_bins), [1/num_bins, 2/num_bins), ...: bin = "
    "min(int(confidence * num_bins), num_bins - 1).",
    "rounded": "you rounded confidence * num_bins to the nearest integer, which shifts every bin by half a width "
    "and makes num_bins + 1 bins. Take the floor: bin = min(int(confidence * num_bins), num_bins - 1).",
    "last_bin_dropped": "the images of the last bin (confidence from (num_bins - 1) / num_bins to 1.0) are missing: "
    "an off-by-one in the bin numbers? np.digitize numbers the bins from 1, and range(num_bins) starts at 0.",
    "one_bin_short": "you made num_bins - 1 bins: np.linspace(0, 1, num_bins) gives num_bins edges, which is one "
    "bin fewer. num_bins bins need num_bins + 1 edges, np.linspace(0, 1, num_bins + 1).",
    "overall_accuracy": "each bin's mean confidence was compared with the accuracy over all images; compare it with "
    "the accuracy of the images in that bin.",
}


def _grade_expected_calibration_error(candidate, rng: np.random.Generator) -> None:
    probabilities, labels = _calibration_problem(rng)
    answers, expected, variants = [], [], []
    for num_bins in (10, 5, 15):
        value = as_float(
            candidate(probabilities, labels, num_bins),
            f"expected_calibration_error(probabilities, labels, num_bins={num_bins})",
        )
        answers.append(value)
        expected.append(expected_calibration_error(probabilities, labels, num_bins))
        variants.append(_ece_variants(probabilities, labels, num_bins))
    wrong = [i for i, (a, e) in enumerate(zip(answers, expected, strict=True)) if not np.isclose(a, e, atol=1e-9)]
    if not wrong:
        return
    settings = (10, 5, 15)
    where = (
        f"{len(labels)} images, low confidences under-confident and high ones mostly over-confident, "
        f"{int(np.sum(probabilities.max(axis=1) == 1.0))} of them with a confidence of exactly 1.0"
    )
    first = wrong[0]
    for mistake, message in _ECE_MESSAGES.items():
        if all(np.isclose(a, v[mistake], atol=1e-9) for a, v in zip(answers, variants, strict=True)):
            if mistake == "ten_bins" and first == 0:
                continue
            raise GradingFailure(
                f"with num_bins={settings[first]} your function returned {answers[first]:.4f}; the expected "
                f"calibration error is {expected[first]:.4f} ({where}): {message}"
            )
    returned = (
        f"with num_bins={settings[first]} your function returned {answers[first]:.4f}; the expected calibration "
        f"error is {expected[first]:.4f} ({where})"
    )
    if np.isnan(answers[first]):
        correct = probabilities.argmax(axis=1) == labels
        filled = len(_binned(probabilities.max(axis=1), correct, settings[first]))
        raise GradingFailure(
            f"{returned}. {settings[first] - filled} of the {settings[first]} bins hold no image, and an empty bin "
            f"has no mean (numpy gives nan): skip it (e.g. `if inside.any():`); it adds nothing to the error."
        )
    if answers[first] > 1:
        raise GradingFailure(
            f"{returned}. A calibration error is a weighted mean of gaps between 0 and 1, so it is never above 1: "
            f"weight each bin's |accuracy - mean confidence| by its share of the images (count in the bin / N)."
        )
    raise GradingFailure(
        f"{returned}. Bin each image by its confidence (its top probability) into num_bins equal-width bins over "
        f"[0, 1] (1.0 in the last one); in each bin take |accuracy - mean confidence|; add them up, each weighted "
        f"by the bin's share of the images."
    )


register(
    Exercise(
        name="expected_calibration_error",
        lesson="11_calibration",
        signature="(probabilities [N, C], labels [N], num_bins: int) -> float",
        reference=expected_calibration_error,
        grade=_grade_expected_calibration_error,
    )
)


# ---------------------------------------------------------------------------------------------
# fit_temperature


def fit_temperature(logits, labels):
    """The temperature T > 0 that minimises the mean negative log-likelihood of softmax(logits / T).

    Taught in notebooks/11_calibration.ipynb.
    """
    import math

    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)

    def mean_nll(log_temperature):
        scaled = logits / math.exp(log_temperature)
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_probabilities = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        return -log_probabilities[np.arange(len(labels)), labels].mean()

    # golden-section search on log T in [log 0.001, log 1000]: the NLL has a single minimum along it
    low, high = math.log(1e-3), math.log(1e3)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    nll_a, nll_b = mean_nll(a), mean_nll(b)
    for _ in range(60):  # each step keeps 0.618 of the interval: 60 steps leave about 1e-12
        if nll_a < nll_b:
            high, b, nll_b = b, a, nll_a
            a = high - ratio * (high - low)
            nll_a = mean_nll(a)
        else:
            low, a, nll_a = a, b, nll_b
            b = low + ratio * (high - low)
            nll_b = mean_nll(b)
    return float(math.exp((low + high) / 2))


def _nll(logits, labels, temperature) -> float:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_probabilities = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def _temperature_problem(rng: np.random.Generator, scale: float, count: int = 1000, num_classes: int = 5):
    calibrated = rng.normal(0.0, 1.5, size=(count, num_classes))
    probabilities = np.exp(calibrated) / np.exp(calibrated).sum(axis=1, keepdims=True)
    labels = (rng.random((count, 1)) > np.cumsum(probabilities, axis=1)).sum(axis=1)  # drawn from softmax
    labels = np.minimum(labels, num_classes - 1)
    return calibrated * scale, labels


def _mixed_temperature_problem():
    """A fixed hard case: 300 over-confident rows (logits x 5) and 700 under-confident ones (logits x 0.5).

    One T cannot fit both groups; the likelihood's best T (about 3.5) is far from the T that makes the mean
    confidence equal the accuracy (about 0.9) and from the T of the smallest ECE (about 0.5), so an answer that
    optimises either of those instead of the likelihood fails here on every seed.
    """
    rng = np.random.default_rng(28)
    over, under = _temperature_problem(rng, 5.0, count=300), _temperature_problem(rng, 0.5, count=700)
    return np.concatenate([over[0], under[0]]), np.concatenate([over[1], under[1]])


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = logits / temperature
    scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return scaled / scaled.sum(axis=1, keepdims=True)


def _explain_mixed(found: float, best: float, logits, labels, nll: float, best_nll: float) -> None:
    """Name the objective a wrong temperature on the mixed case optimised, when it is a known one."""
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    mean_confidence = float(_softmax(logits, found).max(axis=1).mean())
    head = (
        f"on a mix of over-confident rows (300) and under-confident ones (700), your T = {found:.3g} gives a mean "
        f"negative log-likelihood of {nll:.4f}; T = {best:.3g} gives {best_nll:.4f}"
    )
    if abs(mean_confidence - accuracy) < 0.01:
        raise GradingFailure(
            f"{head}. Your T makes the mean confidence ({mean_confidence:.3f}) equal the accuracy ({accuracy:.3f}): "
            f"that matches one average, while the over-confident rows stay over-confident and the under-confident "
            f"ones under-confident. Minimise the mean of -log softmax(logits / T)[label] instead."
        )
    grid = np.geomspace(0.05, 20.0, 300)
    one_hot = np.eye(logits.shape[1])[labels]
    scores = {
        "the ECE with 10 bins": [expected_calibration_error(_softmax(logits, t), labels, 10) for t in grid],
        "the ECE with 15 bins": [expected_calibration_error(_softmax(logits, t), labels, 15) for t in grid],
        "the Brier score": [np.mean(np.sum((_softmax(logits, t) - one_hot) ** 2, axis=1)) for t in grid],
    }
    minimisers = {what: float(grid[int(np.argmin(values))]) for what, values in scores.items()}
    if any(abs(np.log(found / t)) < 0.25 for t in minimisers.values()):
        listed = ", ".join(f"{what} at T = {t:.2g}" for what, t in minimisers.items())
        raise GradingFailure(
            f"{head}. Your T is near the minimum of another score ({listed}): did you minimise the calibration "
            f"error or the Brier score? On this case the grader cannot tell which, since both favour the same "
            f"region. Temperature scaling minimises the mean of -log softmax(logits / T)[label], the likelihood "
            f"of each image's own label."
        )


def _grade_fit_temperature(candidate, rng: np.random.Generator) -> None:
    # Under-confident logits need T of about 0.55 to 0.75: there a linear grid in steps of 0.1 (a "fine grid",
    # as the lesson says) lands within the tolerance on every seed; near T = 0.3 a step of 0.1 is a third of T.
    cases = {
        "over-confident": _temperature_problem(rng, rng.uniform(2.0, 3.5)),
        "under-confident": _temperature_problem(rng, rng.uniform(0.55, 0.75)),
        "mixed": _mixed_temperature_problem(),
    }
    found = {}
    for kind, (logits, labels) in cases.items():
        temperature = as_float(candidate(logits, labels), f"the temperature ({kind} logits)")
        if not np.isfinite(temperature) or temperature <= 0:
            raise GradingFailure(f"the temperature should be a positive number, got {temperature} ({kind} logits).")
        found[kind] = temperature
    best = {kind: fit_temperature(*cases[kind]) for kind in cases}
    nll = {kind: _nll(*cases[kind], found[kind]) for kind in cases}
    best_nll = {kind: _nll(*cases[kind], best[kind]) for kind in cases}
    ok = {kind: nll[kind] <= best_nll[kind] + max(3e-3, 3e-3 * best_nll[kind]) for kind in cases}
    if all(ok.values()):
        return
    summary = ", ".join(f"{kind}: yours {found[kind]:.3g}, best {best[kind]:.3g}" for kind in cases)
    if all(abs(_nll(*cases[k], 1.0 / found[k]) - best_nll[k]) < max(3e-3, 3e-3 * best_nll[k]) for k in cases):
        raise GradingFailure(
            f"your temperatures are the inverses of the best ones ({summary}): the logits are divided by T, "
            f"softmax(logits / T), so over-confident logits need T above 1 to soften them."
        )
    if abs(found["over-confident"] - found["under-confident"]) < 1e-6:
        raise GradingFailure(
            f"your function returned T = {found['over-confident']:.3g} for both over-confident logits (best T "
            f"{best['over-confident']:.3g}) and under-confident ones (best T {best['under-confident']:.3g}). "
            f"(If it picks T by accuracy: dividing by T never changes which logit is largest, so accuracy is the "
            f"same for every T.) Minimise the mean negative log-likelihood of each image's true label, "
            f"-log softmax(logits / T)[i, labels[i]]."
        )
    if not ok["under-confident"] and found["under-confident"] >= 1.0 > best["under-confident"]:
        raise GradingFailure(
            f"for under-confident logits the best T is {best['under-confident']:.3g}, below 1 (T < 1 sharpens "
            f"the scores), and your function returned {found['under-confident']:.3g}: search below 1 too, and "
            f"finely enough not to step over the minimum (the grader cannot tell which of the two went wrong), "
            f"e.g. 200 values of T evenly spaced in log T from 0.05 to 20."
        )
    if not ok["mixed"]:
        _explain_mixed(found["mixed"], best["mixed"], *cases["mixed"], nll["mixed"], best_nll["mixed"])
    kind = next(k for k in cases if not ok[k])
    raise GradingFailure(
        f"for {kind} logits your T = {found[kind]:.4g} gives a mean negative log-likelihood of {nll[kind]:.4f}; "
        f"T = {best[kind]:.4g} gives {best_nll[kind]:.4f} ({summary}). This is not a mistake the grader knows, "
        f"so it cannot say which step is off. Find the T > 0 with the smallest mean of -log softmax(logits / "
        f"T)[label]: a fine search over log T, or gradient descent on log T run until it stops moving."
    )


register(
    Exercise(
        name="fit_temperature",
        lesson="11_calibration",
        signature="(logits [N, C], labels [N]) -> float",
        reference=fit_temperature,
        grade=_grade_fit_temperature,
    )
)
