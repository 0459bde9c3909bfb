"""Plausible wrong answers to the graded exercises, each with a piece of the message meant for it.

``MISTAKES[name]`` lists ``(wrong_function, expected_message_substring)``; tests/test_exercises.py
proves each grader fails each of them with that message.
"""

import hashlib
import re

import numpy as np

from tlcourse.exercises import basics, confidence

MAX = 2**27 - 1


def _position(name: str) -> float:
    return (int(hashlib.sha1(name.encode("utf-8")).hexdigest(), 16) % (MAX + 1)) * (100.0 / MAX)


def _by_position(position, validation_percentage, testing_percentage):
    if position < validation_percentage:
        return "validation"
    if position < validation_percentage + testing_percentage:
        return "test"
    return "train"


# ---------------------------------------------------------------------------------------------- split_for


def split_keeps_nohash(relative, validation_percentage, testing_percentage):
    return _by_position(_position(relative), validation_percentage, testing_percentage)


def split_fraction_position(relative, validation_percentage, testing_percentage):
    name = re.sub(r"_nohash_.*$", "", relative)
    position = (int(hashlib.sha1(name.encode()).hexdigest(), 16) % (MAX + 1)) / MAX  # in [0, 1]
    return _by_position(position, validation_percentage, testing_percentage)


def split_divides_percentages(relative, validation_percentage, testing_percentage):
    name = re.sub(r"_nohash_.*$", "", relative)
    return _by_position(_position(name), validation_percentage / 100, testing_percentage / 100)


def split_test_first(relative, validation_percentage, testing_percentage):
    position = _position(re.sub(r"_nohash_.*$", "", relative))
    if position < testing_percentage:
        return "test"
    if position < validation_percentage + testing_percentage:
        return "validation"
    return "train"


def split_md5(relative, validation_percentage, testing_percentage):
    name = re.sub(r"_nohash_.*$", "", relative)
    position = (int(hashlib.md5(name.encode()).hexdigest(), 16) % (MAX + 1)) * (100.0 / MAX)
    return _by_position(position, validation_percentage, testing_percentage)


def split_file_name_only(relative, validation_percentage, testing_percentage):
    name = re.sub(r"_nohash_.*$", "", relative.rsplit("/", 1)[-1])
    return _by_position(_position(name), validation_percentage, testing_percentage)


def split_returns_index(relative, validation_percentage, testing_percentage):
    return ("train", "validation", "test").index(basics.split_for(relative, validation_percentage, testing_percentage))


# ---------------------------------------------------------------------------------- softmax_cross_entropy


def _plain_softmax(logits):
    exps = np.exp(logits)
    return exps / exps.sum(axis=1, keepdims=True)


def sce_no_max_subtraction(logits, labels):
    n = len(labels)
    probabilities = _plain_softmax(logits)
    grad = probabilities.copy()
    grad[np.arange(n), labels] -= 1
    return -np.log(probabilities[np.arange(n), labels]).mean(), grad / n


def sce_log_of_softmax(logits, labels):
    n = len(labels)
    probabilities = _plain_softmax(logits - logits.max(axis=1, keepdims=True))
    grad = probabilities.copy()
    grad[np.arange(n), labels] -= 1
    return -np.log(probabilities[np.arange(n), labels]).mean(), grad / n


def sce_sum_not_mean(logits, labels):
    loss, grad = basics.softmax_cross_entropy(logits, labels)
    return loss * len(labels), grad * len(labels)


def sce_grad_without_1_over_n(logits, labels):
    loss, grad = basics.softmax_cross_entropy(logits, labels)
    return loss, grad * len(labels)


def sce_grad_sign_flipped(logits, labels):
    loss, grad = basics.softmax_cross_entropy(logits, labels)
    return loss, -grad


def sce_labels_as_columns(logits, labels):
    n = len(labels)
    probabilities = _plain_softmax(logits - logits.max(axis=1, keepdims=True))
    grad = probabilities.copy()
    grad[:, labels] -= 1
    return -np.log(probabilities[:, labels]).mean(), grad / n


def sce_forgets_one_hot(logits, labels):
    loss, _ = basics.softmax_cross_entropy(logits, labels)
    return loss, _plain_softmax(logits - logits.max(axis=1, keepdims=True)) / len(labels)


def sce_shifts_in_place(logits, labels):
    logits -= logits.max(axis=1, keepdims=True)
    return basics.softmax_cross_entropy(logits, labels)


# ----------------------------------------------------------------------------------------- balanced_batch


def batch_uniform_over_images(labels, batch_size, rng):
    return rng.integers(0, len(labels), size=batch_size)


def batch_labels_by_count(labels, batch_size, rng):
    present, counts = np.unique(labels, return_counts=True)
    chosen = rng.choice(present, size=batch_size, p=counts / counts.sum())
    return np.array([rng.choice(np.flatnonzero(labels == label)) for label in chosen])


def batch_never_last_label(labels, batch_size, rng):
    present = np.unique(labels)
    out = []
    for _ in range(batch_size):
        members = np.flatnonzero(labels == present[rng.integers(0, len(present) - 1)])
        out.append(members[rng.integers(0, len(members))])
    return np.array(out)


def batch_never_last_image(labels, batch_size, rng):
    present = np.unique(labels)
    out = []
    for _ in range(batch_size):
        members = np.flatnonzero(labels == present[rng.integers(0, len(present))])
        out.append(members[rng.integers(0, max(1, len(members) - 1))])
    return np.array(out)


def batch_ignores_rng(labels, batch_size, rng):
    return basics.balanced_batch(labels, batch_size, np.random.default_rng())


def batch_every_label_number(labels, batch_size, rng):
    out = []
    for _ in range(batch_size):
        members = np.flatnonzero(labels == rng.integers(0, labels.max() + 1))
        out.append(members[rng.integers(0, len(members))])
    return np.array(out)


# ------------------------------------------------------------------------------------ train_softmax_layer


def _trainer(direction=1.0, update_biases=True, fixed_rate=None, fixed_steps=None, seeded=True):
    def train_softmax_layer(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
        rng = np.random.default_rng(seed if seeded else None)
        weights = np.zeros((bottlenecks.shape[1], num_classes))
        biases = np.zeros(num_classes)
        rate = learning_rate if fixed_rate is None else fixed_rate
        for _ in range(steps if fixed_steps is None else fixed_steps):
            batch = basics.balanced_batch(labels, batch_size, rng)
            x = bottlenecks[batch]
            _, grad = basics.softmax_cross_entropy(x @ weights + biases, labels[batch])
            weights -= direction * rate * x.T @ grad
            if update_biases:
                biases -= direction * rate * grad.sum(axis=0)
        return weights, biases

    return train_softmax_layer


train_ascends = _trainer(direction=-1.0)
train_forgets_biases = _trainer(update_biases=False)
train_ignores_learning_rate = _trainer(fixed_rate=0.1)
train_ignores_steps = _trainer(fixed_steps=150)
train_unseeded = _trainer(seeded=False)


# ----------------------------------------------------------------------------------------- top_k_accuracy


def top_k_one_too_many(probabilities, labels, k):
    top = np.argsort(-probabilities, axis=1)[:, : k + 1]
    return float(np.mean([label in row for label, row in zip(labels, top, strict=True)]))


def top_k_one_too_few(probabilities, labels, k):
    top = np.argsort(-probabilities, axis=1)[:, : k - 1]
    return float(np.mean([label in row for label, row in zip(labels, top, strict=True)]))


def top_k_smallest(probabilities, labels, k):
    top = np.argsort(probabilities, axis=1)[:, :k]
    return float(np.mean([label in row for label, row in zip(labels, top, strict=True)]))


def top_k_wrong_axis(probabilities, labels, k):
    top = np.argsort(-probabilities, axis=0)[:, :k]
    return float(np.mean([label in top[i % len(top)] for i, label in enumerate(labels)]))


def top_k_percent(probabilities, labels, k):
    top = np.argsort(-probabilities, axis=1)[:, :k]
    return 100 * float(np.mean([label in row for label, row in zip(labels, top, strict=True)]))


# ----------------------------------------------------------------------------------- find_near_duplicates


def duplicates_by_dot_product(vectors, threshold):
    dots = vectors @ vectors.T
    return [(i, j) for i in range(len(vectors)) for j in range(i + 1, len(vectors)) if dots[i, j] >= threshold]


def _cosine_matrix(vectors):
    lengths = np.linalg.norm(vectors, axis=1)
    return (vectors @ vectors.T) / np.outer(lengths, lengths)


def duplicates_strictly_above(vectors, threshold):
    cosines = _cosine_matrix(vectors)
    return [(i, j) for i in range(len(vectors)) for j in range(i + 1, len(vectors)) if cosines[i, j] > threshold]


def duplicates_with_self(vectors, threshold):
    cosines = _cosine_matrix(vectors)
    return [(i, j) for i in range(len(vectors)) for j in range(i, len(vectors)) if cosines[i, j] >= threshold]


def duplicates_both_orders(vectors, threshold):
    cosines = _cosine_matrix(vectors)
    n = len(vectors)
    return [(i, j) for i in range(n) for j in range(n) if i != j and cosines[i, j] >= threshold]


def duplicates_lengths_of_columns(vectors, threshold):
    unit = vectors / np.linalg.norm(vectors, axis=0, keepdims=True)
    similarity = unit @ unit.T
    n = len(vectors)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if similarity[i, j] >= threshold]


# ----------------------------------------------------------------------------- expected_calibration_error


def _ece(
    probabilities,
    labels,
    num_bins,
    signed=False,
    weighted=True,
    top=True,
    last_bin=True,
    one_apart=False,
    skip_empty=True,
    share=True,
):
    confidence = probabilities.max(axis=1) if top else probabilities[np.arange(len(labels)), labels]
    correct = probabilities.argmax(axis=1) == labels
    bins = (confidence * num_bins).astype(int)
    if last_bin and not one_apart:
        bins = np.minimum(bins, num_bins - 1)
    total, gaps = 0.0, []
    for b in range(num_bins + 1 if one_apart else num_bins):
        inside = bins == b
        if inside.any() or not skip_empty:
            gap = correct[inside].mean() - confidence[inside].mean()  # nan for an empty bin
            gap = gap if signed else abs(gap)
            gaps.append(gap)
            total += (inside.mean() if share else inside.sum()) * gap
    return float(total if weighted else np.mean(gaps))


def ece_signed_gaps(probabilities, labels, num_bins):
    return abs(_ece(probabilities, labels, num_bins, signed=True))


def ece_unweighted(probabilities, labels, num_bins):
    return _ece(probabilities, labels, num_bins, weighted=False)


def ece_true_label_probability(probabilities, labels, num_bins):
    return _ece(probabilities, labels, num_bins, top=False)


def ece_drops_confidence_one(probabilities, labels, num_bins):
    return _ece(probabilities, labels, num_bins, last_bin=False)


def ece_ten_bins(probabilities, labels, num_bins):
    return _ece(probabilities, labels, 10)


def ece_confidence_one_own_bin(probabilities, labels, num_bins):
    return _ece(probabilities, labels, num_bins, one_apart=True)  # 1.0 in bin num_bins, an extra bin


def ece_empty_bin_nan(probabilities, labels, num_bins):
    return _ece(probabilities, labels, num_bins, skip_empty=False)


def ece_counts_not_shares(probabilities, labels, num_bins):
    return _ece(probabilities, labels, num_bins, share=False)


def ece_counts_over_bins(probabilities, labels, num_bins):
    return _ece(probabilities, labels, num_bins, share=False) / num_bins  # weighted by counts, averaged over bins


# ---------------------------------------------------------------------------------------- fit_temperature


def _nll(logits, labels, temperature):
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_probabilities = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
    return -log_probabilities[np.arange(len(labels)), labels].mean()


def temperature_inverse(logits, labels):
    return 1.0 / confidence.fit_temperature(logits, labels)


def temperature_by_accuracy(logits, labels):
    grid = np.linspace(0.05, 10, 200)
    accuracy = [np.mean(np.argmax(logits / t, axis=1) == labels) for t in grid]
    return float(grid[int(np.argmax(accuracy))])


def temperature_grid_from_one(logits, labels):
    grid = np.linspace(1.0, 10.0, 181)
    return float(grid[int(np.argmin([_nll(logits, labels, t) for t in grid]))])


def temperature_coarse_grid(logits, labels):
    grid = np.arange(0.1, 10.0, 1.0)  # 0.1, 1.1, 2.1, ...: steps of 1.0 are too coarse
    return float(grid[int(np.argmin([_nll(logits, labels, t) for t in grid]))])


def temperature_nll_of_predictions(logits, labels):
    grid = np.geomspace(0.01, 100, 200)
    predicted = np.argmax(logits, axis=1)  # the likelihood of the predicted labels, not the true ones
    return float(grid[int(np.argmin([_nll(logits, predicted, t) for t in grid]))])


MISTAKES = {
    "split_for": [
        (split_keeps_nohash, "left out of the hash"),
        (split_fraction_position, "The percentages are percentages"),
        (split_divides_percentages, "The percentages are percentages"),
        (split_test_first, "validation and test are swapped"),
        (split_md5, "SHA-1"),
        (split_file_name_only, "Hash the whole path inside the label folder"),
        (split_returns_index, "return one of the strings"),
    ],
    "softmax_cross_entropy": [
        (sce_no_max_subtraction, "subtract each row's maximum before exp"),
        (sce_log_of_softmax, "log(0) = -inf"),
        (sce_sum_not_mean, "you summed over the batch"),
        (sce_grad_without_1_over_n, "divided by N too"),
        (sce_grad_sign_flipped, "the gradient has the wrong sign"),
        (sce_labels_as_columns, "pick each row's own label"),
        (sce_forgets_one_hot, "numerical gradient"),
        (sce_shifts_in_place, "changed its input `logits` in place"),
    ],
    "balanced_batch": [
        (batch_uniform_over_images, "pick the label first"),
        (batch_labels_by_count, "would be drawn 100x more often than one with 10"),
        (batch_never_last_label, "was never drawn"),
        (batch_never_last_image, "the last of them: an off-by-one"),
        (batch_ignores_rng, "draw everything from the rng you are given"),
        (batch_every_label_number, "labels present"),
    ],
    "train_softmax_layer": [
        (train_ascends, "step against the gradient"),
        (train_forgets_biases, "the biases never changed"),
        (train_ignores_learning_rate, "with learning_rate=0 the layer still changed"),
        (train_ignores_steps, "with steps=0"),
        (train_unseeded, "two runs with the same seed"),
    ],
    "top_k_accuracy": [
        (top_k_one_too_many, "k + 1 most probable"),
        (top_k_one_too_few, "only k - 1 labels"),
        (top_k_smallest, "*least* probable"),
        (top_k_wrong_axis, "along each row (axis=1)"),
        (top_k_percent, "not a percentage"),
    ],
    "find_near_duplicates": [
        (duplicates_by_dot_product, "use cosine: divide by the lengths"),
        (duplicates_strictly_above, "means >=, not >"),
        (duplicates_with_self, "a vector with itself"),
        (duplicates_both_orders, "give each pair once"),
        (duplicates_lengths_of_columns, "cosine similarity"),
    ],
    "expected_calibration_error": [
        (ece_signed_gaps, "take the absolute value of each bin's gap"),
        (ece_unweighted, "weight each bin's gap by its share of the images"),
        (ece_true_label_probability, "not on the probability of the true label"),
        (ece_drops_confidence_one, "confidence of exactly 1.0 are missing"),
        (ece_ten_bins, "use num_bins"),
        (ece_confidence_one_own_bin, "belongs in the last bin (with 10 bins, [0.9, 1.0]"),
        (ece_empty_bin_nan, "an empty bin has no mean (numpy gives nan): skip it"),
        (ece_counts_not_shares, "not by its count"),
        (ece_counts_over_bins, "A calibration error is a weighted mean of gaps"),
    ],
    "fit_temperature": [
        (temperature_inverse, "inverses of the best ones"),
        (temperature_by_accuracy, "accuracy is the same for every T"),
        (temperature_grid_from_one, "search below 1 too"),
        (temperature_nll_of_predictions, "mean negative log-likelihood"),
        (temperature_coarse_grid, "search below 1 too"),
    ],
}


# ------------------------------------------------------------------------------------------------------
# Correct answers written differently from the references: a grader must not demand the reference's way.


def split_for_other_way(relative, validation_percentage, testing_percentage):
    digest = hashlib.sha1(relative.split("_nohash_")[0].encode("utf-8")).hexdigest()
    return _by_position((int(digest, 16) % (MAX + 1)) * (100.0 / MAX), validation_percentage, testing_percentage)


def sce_other_way(logits, labels):
    one_hot = np.eye(logits.shape[1])[labels]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.sum(np.exp(shifted), axis=1))
    loss = np.mean(log_sum - np.sum(shifted * one_hot, axis=1))
    return loss, (np.exp(shifted - log_sum[:, None]) - one_hot) / len(labels)


def batch_other_way(labels, batch_size, rng):
    present = np.unique(labels)
    out = []
    for _ in range(batch_size):
        label = rng.choice(present)
        out.append(rng.choice(np.flatnonzero(labels == label)))
    return np.array(out, dtype=int)


def train_other_way(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    rng = np.random.default_rng(seed)
    weights = rng.normal(0.0, 0.01, size=(bottlenecks.shape[1], num_classes)).astype(np.float32)
    biases = np.zeros(num_classes, dtype=np.float32)
    for _ in range(steps):
        batch = batch_other_way(labels, batch_size, rng)
        x = bottlenecks[batch]
        _, grad = sce_other_way(x @ weights + biases, labels[batch])
        weights = weights - learning_rate * x.T @ grad
        biases = biases - learning_rate * grad.mean(axis=0) * batch_size
    return weights, biases


def top_k_other_way(probabilities, labels, k):
    top = np.argsort(probabilities, axis=1)[:, ::-1][:, :k]
    hits = 0
    for label, row in zip(labels, top, strict=True):
        hits += int(label in row)
    return hits / len(labels)


def duplicates_other_way(vectors, threshold):
    pairs = []
    for i in range(len(vectors)):
        for j in range(i + 1, len(vectors)):
            cosine = np.dot(vectors[i], vectors[j]) / (np.linalg.norm(vectors[i]) * np.linalg.norm(vectors[j]))
            if cosine >= threshold:
                pairs.append((i, j))
    return pairs


def ece_other_way(probabilities, labels, num_bins):
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    counts, _ = np.histogram(confidence, bins=num_bins, range=(0.0, 1.0))  # its last bin includes 1.0
    confidence_sums, _ = np.histogram(confidence, bins=num_bins, range=(0.0, 1.0), weights=confidence)
    correct_sums, _ = np.histogram(confidence, bins=num_bins, range=(0.0, 1.0), weights=correct)
    filled = counts > 0
    gaps = np.abs(correct_sums[filled] - confidence_sums[filled]) / counts[filled]
    return float(np.sum(counts[filled] / len(labels) * gaps))


def temperature_other_way(logits, labels):
    grid = np.geomspace(0.05, 20.0, 600)
    return float(grid[int(np.argmin([_nll(logits, labels, t) for t in grid]))])


def temperature_linear_grid(logits, labels):
    grid = np.arange(1, 101) / 10  # 0.1, 0.2, ..., 10.0: the lesson's "fine grid", not over log T
    return float(grid[int(np.argmin([_nll(logits, labels, t) for t in grid]))])


CORRECT = {
    "split_for": [split_for_other_way],
    "softmax_cross_entropy": [sce_other_way],
    "balanced_batch": [batch_other_way],
    "train_softmax_layer": [train_other_way],
    "top_k_accuracy": [top_k_other_way],
    "find_near_duplicates": [duplicates_other_way],
    "expected_calibration_error": [ece_other_way],
    "fit_temperature": [temperature_other_way, temperature_linear_grid],
}


# ------------------------------------------------------------------------------------------ warmup_cosine
# Lesson 09. Each wrong schedule differs from the right one only where the brief's classic mistake does.


def _schedule(step, peak, total_steps, warmup_steps, rise=None, decay=None, clamp=True):
    steps = np.asarray(step, dtype=float)
    progress = (steps - warmup_steps) / (total_steps - warmup_steps)
    progress = np.clip(progress, 0.0, 1.0) if clamp else np.maximum(progress, 0.0)
    rising = rise(steps, warmup_steps) if rise else steps / max(warmup_steps, 1)
    falling = decay(progress, steps) if decay else 0.5 * (1.0 + np.cos(np.pi * progress))
    rate = peak * np.where(steps < warmup_steps, rising, falling)
    return rate if rate.ndim else float(rate)


def schedule_cosine_not_halved(step, peak, total_steps, warmup_steps):
    return _schedule(step, peak, total_steps, warmup_steps, decay=lambda p, s: np.cos(np.pi * p))


def schedule_cosine_to_half_peak(step, peak, total_steps, warmup_steps):
    return _schedule(step, peak, total_steps, warmup_steps, decay=lambda p, s: 0.5 * (1 + np.cos(np.pi / 2 * p)))


def schedule_cosine_to_half_peak_mixed(step, peak, total_steps, warmup_steps):
    return _schedule(step, peak, total_steps, warmup_steps, decay=lambda p, s: 0.5 + 0.25 * (1 + np.cos(np.pi * p)))


def schedule_one_plus_cosine(step, peak, total_steps, warmup_steps):
    return _schedule(step, peak, total_steps, warmup_steps, decay=lambda p, s: 1 + np.cos(np.pi * p))


def schedule_warmup_plus_one(step, peak, total_steps, warmup_steps):
    return _schedule(step, peak, total_steps, warmup_steps, rise=lambda s, w: (s + 1) / max(w, 1))


def schedule_warmup_one_early(step, peak, total_steps, warmup_steps):
    return _schedule(step, peak, total_steps, warmup_steps, rise=lambda s, w: s / max(w - 1, 1))


def schedule_warmup_integer_division(step, peak, total_steps, warmup_steps):
    return _schedule(step, peak, total_steps, warmup_steps, rise=lambda s, w: s // max(w, 1))


def schedule_progress_over_total(step, peak, total_steps, warmup_steps):
    steps = np.asarray(step, dtype=float)
    progress = np.clip((steps - warmup_steps) / total_steps, 0.0, 1.0)
    rate = peak * np.where(steps < warmup_steps, steps / max(warmup_steps, 1), 0.5 * (1 + np.cos(np.pi * progress)))
    return rate if rate.ndim else float(rate)


def schedule_cosine_from_step_0(step, peak, total_steps, warmup_steps):
    steps = np.asarray(step, dtype=float)
    progress = np.clip(steps / total_steps, 0.0, 1.0)  # the cosine counted from step 0, over the whole run
    rate = peak * np.where(steps < warmup_steps, steps / max(warmup_steps, 1), 0.5 * (1 + np.cos(np.pi * progress)))
    return rate if rate.ndim else float(rate)


def schedule_linear_decay(step, peak, total_steps, warmup_steps):
    return _schedule(step, peak, total_steps, warmup_steps, decay=lambda p, s: 1 - p)


def schedule_no_clamp(step, peak, total_steps, warmup_steps):
    return _schedule(step, peak, total_steps, warmup_steps, clamp=False)


def schedule_floor(step, peak, total_steps, warmup_steps):
    floor = 0.1  # a tenth of the peak, as many recipes end
    return _schedule(
        step, peak, total_steps, warmup_steps, decay=lambda p, s: floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * p))
    )


def schedule_floor_absolute(step, peak, total_steps, warmup_steps):
    floor = 1e-6  # a minimum rate
    steps = np.asarray(step, dtype=float)
    progress = np.clip((steps - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    falling = floor + (peak - floor) * 0.5 * (1 + np.cos(np.pi * progress))
    rate = np.where(steps < warmup_steps, peak * steps / max(warmup_steps, 1), falling)
    return rate if rate.ndim else float(rate)


def schedule_no_warmup(step, peak, total_steps, warmup_steps):
    steps = np.asarray(step, dtype=float)
    progress = np.clip((steps - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    rate = peak * 0.5 * (1 + np.cos(np.pi * progress))  # at the peak from step 0 until the decay starts
    return rate if rate.ndim else float(rate)


def schedule_scalar_only(step, peak, total_steps, warmup_steps):
    import math  # noqa: PLC0415

    if step < warmup_steps:
        return peak * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_divides_by_zero(step, peak, total_steps, warmup_steps):
    rising = peak * step / warmup_steps  # an int step and warmup_steps = 0: ZeroDivisionError (an array: inf)
    steps = np.asarray(step, dtype=float)
    progress = np.clip((steps - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    rate = np.where(steps < warmup_steps, rising, peak * 0.5 * (1 + np.cos(np.pi * progress)))
    return rate if rate.ndim else float(rate)


def schedule_nan_without_warmup(step, peak, total_steps, warmup_steps):
    steps = np.asarray(step, dtype=float)
    with np.errstate(all="ignore"):
        warm = np.minimum(1.0, steps / warmup_steps)  # 0 / 0 = nan at step 0 when warmup_steps is 0
    progress = np.clip((steps - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    rate = peak * warm * 0.5 * (1 + np.cos(np.pi * progress))
    return rate if rate.ndim else float(rate)


def schedule_forgets_peak(step, peak, total_steps, warmup_steps):
    return _schedule(step, 1.0, total_steps, warmup_steps)


def schedule_array_only(step, peak, total_steps, warmup_steps):
    steps = step.astype(float)  # AttributeError on a plain int
    return _schedule(steps, peak, total_steps, warmup_steps)


def schedule_clamps_steps_in_place(step, peak, total_steps, warmup_steps):
    if isinstance(step, np.ndarray):
        np.minimum(step, total_steps, out=step)  # clamps the caller's array
    return _schedule(step, peak, total_steps, warmup_steps)


MISTAKES["warmup_cosine"] = [
    (schedule_cosine_not_halved, "did you forget the 0.5 * (1 + ...)?"),
    (schedule_cosine_to_half_peak, "from the peak to half the peak"),
    (schedule_cosine_to_half_peak_mixed, "from the peak to half the peak"),
    (schedule_one_plus_cosine, "twice the peak"),
    (schedule_warmup_plus_one, "(step + 1) / warmup_steps, which is an off-by-one"),
    (schedule_warmup_one_early, "one step early"),
    (schedule_warmup_integer_division, "integer division"),
    (schedule_progress_over_total, "progress over total_steps"),
    (schedule_cosine_from_step_0, "progress over total_steps"),
    (schedule_linear_decay, "decays linearly"),
    (schedule_no_clamp, "the cosine climbs back up"),
    (schedule_floor, "decays to a floor of"),
    (schedule_floor_absolute, "decays to a floor of"),
    (schedule_no_warmup, "there is no warm-up"),
    (schedule_scalar_only, "on an array of steps"),
    (schedule_divides_by_zero, "ZeroDivisionError with warmup_steps=0"),
    (schedule_nan_without_warmup, "a division by zero"),
    (schedule_forgets_peak, "multiply the schedule by `peak`"),
    (schedule_array_only, "on one int step"),
    (schedule_clamps_steps_in_place, "changed its input `step` in place"),
]


def schedule_other_way(step, peak, total_steps, warmup_steps):
    def one(s):
        if s <= warmup_steps and warmup_steps > 0:  # <=: at step == warmup_steps both formulas give the peak
            return peak * s / warmup_steps
        if s >= total_steps:
            return 0.0
        return peak * (1 + np.cos(np.pi * (s - warmup_steps) / (total_steps - warmup_steps))) / 2

    if np.ndim(step) == 0:
        return one(int(step))
    return np.array([one(int(s)) for s in np.asarray(step).ravel()]).reshape(np.shape(step))


def schedule_float32(step, peak, total_steps, warmup_steps):
    steps = np.asarray(step, dtype=np.float32)
    rising = steps / np.float32(max(warmup_steps, 1))
    progress = np.minimum(
        np.float32(1), np.maximum(np.float32(0), (steps - warmup_steps) / np.float32(total_steps - warmup_steps))
    )
    rate = np.float32(peak) * np.where(
        steps < warmup_steps, rising, np.float32(0.5) * (1 + np.cos(np.float32(np.pi) * progress))
    )
    return rate if rate.ndim else float(rate)


CORRECT["warmup_cosine"] = [schedule_other_way, schedule_float32]
