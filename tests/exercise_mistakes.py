"""Plausible wrong answers to the graded exercises, each with a piece of the message meant for it.

``MISTAKES[name]`` lists ``(wrong_function, expected_message_substring)``; tests/test_exercises.py
proves each grader fails each of them with that message.
"""

import hashlib
import re

import numpy as np

from tests.test_exercises_embeddings import MISTAKES as RETRIEVAL_MISTAKES
from tests.test_exercises_embeddings import written_with_loops as retrieval_other_way
from tlcourse.exercises import basics, confidence, data_quality, deploy, finetuning

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


def split_lowercased(relative, validation_percentage, testing_percentage):
    name = re.sub(r"_nohash_.*$", "", relative.lower())  # "IMG_1.JPG" and "img_1.jpg" would share a split
    return _by_position(_position(name), validation_percentage, testing_percentage)


def split_without_extension(relative, validation_percentage, testing_percentage):
    name = re.sub(r"_nohash_.*$", "", relative.rsplit(".", 1)[0])
    return _by_position(_position(name), validation_percentage, testing_percentage)


def split_modulo_100(relative, validation_percentage, testing_percentage):
    digest = int(hashlib.sha1(re.sub(r"_nohash_.*$", "", relative).encode()).hexdigest(), 16)
    return _by_position(digest % 100, validation_percentage, testing_percentage)


def split_python_hash(relative, validation_percentage, testing_percentage):
    """Python's hash() of a string changes from one process to the next."""
    return _by_position(hash(re.sub(r"_nohash_.*$", "", relative)) % 100, validation_percentage, testing_percentage)


# --------------------------------------------------------------------------------- imagenet_probabilities


def _softmax_vector(scores):
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()


def imagenet_max_pooling(feature_map, weights, biases):
    bottleneck = feature_map.max(axis=(0, 1))
    return bottleneck, _softmax_vector(bottleneck @ weights + biases)


def imagenet_sum_pooling(feature_map, weights, biases):
    bottleneck = feature_map.sum(axis=(0, 1))
    return bottleneck, _softmax_vector(bottleneck @ weights + biases)


def imagenet_pool_over_channels(feature_map, weights, biases):
    bottleneck = feature_map.mean(axis=2)
    return bottleneck, bottleneck


def imagenet_no_biases(feature_map, weights, biases):
    bottleneck = feature_map.mean(axis=(0, 1))
    return bottleneck, _softmax_vector(bottleneck @ weights)


def imagenet_scores_not_probabilities(feature_map, weights, biases):
    bottleneck = feature_map.mean(axis=(0, 1))
    return bottleneck, bottleneck @ weights + biases


def imagenet_softmax_without_shift(feature_map, weights, biases):
    bottleneck = feature_map.mean(axis=(0, 1))
    exp = np.exp(bottleneck @ weights + biases)
    return bottleneck, exp / exp.sum()


def imagenet_sigmoid(feature_map, weights, biases):
    bottleneck = feature_map.mean(axis=(0, 1))
    return bottleneck, 1 / (1 + np.exp(-(bottleneck @ weights + biases)))


def imagenet_mean_of_first_row(feature_map, weights, biases):
    bottleneck = feature_map[0].mean(axis=0)  # the top row of positions only
    return bottleneck, _softmax_vector(bottleneck @ weights + biases)


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


def _stable_softmax(logits):
    return _plain_softmax(logits - logits.max(axis=1, keepdims=True))


def sce_clipped_probabilities(logits, labels):
    n = len(labels)
    probabilities = np.clip(_stable_softmax(logits), 1e-7, 1.0)  # log(0) avoided, but the loss is capped
    grad = _stable_softmax(logits)
    grad[np.arange(n), labels] -= 1
    return -np.log(probabilities[np.arange(n), labels]).mean(), grad / n


def sce_log_plus_epsilon(logits, labels):
    n = len(labels)
    probabilities = _stable_softmax(logits)
    grad = probabilities.copy()
    grad[np.arange(n), labels] -= 1
    return -np.log(probabilities[np.arange(n), labels] + 1e-12).mean(), grad / n


def sce_mean_over_every_entry(logits, labels):
    one_hot = np.eye(logits.shape[1])[labels]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -(one_hot * log_probabilities).mean(), (np.exp(log_probabilities) - one_hot) / len(labels)


def sce_softmax_over_the_batch(logits, labels):
    """Normalises each column (over the images) instead of each row (over the labels)."""
    shifted = logits - logits.max(axis=0, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=0, keepdims=True))
    n = len(labels)
    grad = np.exp(log_probabilities)
    grad[np.arange(n), labels] -= 1
    return -log_probabilities[np.arange(n), labels].mean(), grad / n


def sce_grad_of_log_softmax_only(logits, labels):
    """The gradient written as one_hot - softmax over N, but the loss right: the sign slip in another form."""
    loss, grad = basics.softmax_cross_entropy(logits, labels)
    return loss, -grad


def sce_grad_without_softmax(logits, labels):
    """The gradient of the label's logit alone, -one_hot / N, as if the normaliser did not depend on the logits."""
    loss, _ = basics.softmax_cross_entropy(logits, labels)
    return loss, -np.eye(logits.shape[1])[labels] / len(labels)


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


def batch_label_values(labels, batch_size, rng):
    return rng.choice(np.unique(labels), size=batch_size)  # the labels, not images that have them


def batch_first_image_of_each_label(labels, batch_size, rng):
    present = np.unique(labels)
    return np.array([np.flatnonzero(labels == rng.choice(present))[0] for _ in range(batch_size)])


def batch_label_then_any_image(labels, batch_size, rng):
    """Picks a label uniformly, then forgets it and draws any image."""
    present = np.unique(labels)
    chosen = rng.choice(present, size=batch_size)
    return np.array([rng.integers(0, len(labels)) for _ in chosen])


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


def _sgd(
    bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed, batch=None, bias_mean=False, mistake=None
):
    """Plain SGD with one mistake slot: ``batch(rng)`` picks each step's indices, ``bias_mean`` divides the bias
    step twice, ``mistake`` is "weights_mean" (the weight step divided twice) or "predicted" (the predicted
    labels as targets)."""
    rng = np.random.default_rng(seed)
    weights, biases = np.zeros((bottlenecks.shape[1], num_classes)), np.zeros(num_classes)
    for _ in range(steps):
        indices = batch(rng) if batch else basics.balanced_batch(labels, batch_size, rng)
        x = bottlenecks[indices]
        logits = x @ weights + biases
        targets = np.argmax(logits, axis=1) if mistake == "predicted" else labels[indices]
        _, grad = basics.softmax_cross_entropy(logits, targets)
        weights -= learning_rate * x.T @ grad / (len(indices) if mistake == "weights_mean" else 1)
        biases -= learning_rate * (grad.mean(axis=0) if bias_mean else grad.sum(axis=0))
    return weights, biases


def train_bias_divided_twice(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    return _sgd(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed, bias_mean=True)


def train_full_batch(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    every = np.arange(len(labels))
    return _sgd(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed, batch=lambda rng: every)


def train_uniform_batches(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    draw = lambda rng: rng.integers(0, len(labels), size=batch_size)  # noqa: E731
    return _sgd(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed, batch=draw)


def train_generator_every_step(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    draw = lambda rng: basics.balanced_batch(labels, batch_size, np.random.default_rng(seed))  # noqa: E731
    return _sgd(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed, batch=draw)


def train_weights_divided_twice(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    return _sgd(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed, mistake="weights_mean")


def train_fixed_batch_of_32(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    return _sgd(bottlenecks, labels, num_classes, steps, learning_rate, 32, seed)


def train_labels_by_count(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    draw = lambda rng: rng.choice(len(labels), size=batch_size, replace=True)  # noqa: E731
    return _sgd(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed, batch=draw)


def train_epochs_in_order(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    """Walks through the images in order, batch after batch: no sampling, no balance."""
    state = {"start": 0}

    def draw(rng):
        indices = np.take(np.arange(len(labels)), range(state["start"], state["start"] + batch_size), mode="wrap")
        state["start"] += batch_size
        return indices

    return _sgd(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed, batch=draw)


def train_one_hot_of_argmax(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed):
    """The gradient against the predicted labels, not the true ones."""
    return _sgd(bottlenecks, labels, num_classes, steps, learning_rate, batch_size, seed, mistake="predicted")


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


def top_k_count_not_share(probabilities, labels, k):
    top = np.argsort(-probabilities, axis=1)[:, :k]
    return float(sum(label in row for label, row in zip(labels, top, strict=True)))


def top_k_ignores_k(probabilities, labels, k):
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def top_k_compares_values(probabilities, labels, k):
    """Compares the labels with the k largest probability values instead of their positions."""
    top = np.sort(probabilities, axis=1)[:, ::-1][:, :k]
    return float(np.mean([label in row for label, row in zip(labels, top, strict=True)]))


# ------------------------------------------------------------------------------------- balanced_accuracy


def balanced_plain_accuracy(labels, predictions):
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def balanced_every_number(labels, predictions):
    """Every label number up to the largest, with or without images: absent ones give nan."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float(np.mean([np.mean(predictions[labels == v] == v) for v in range(labels.max() + 1)]))


def balanced_precision(labels, predictions):
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float(np.mean([np.mean(labels[predictions == v] == v) for v in np.unique(predictions)]))


def balanced_union_of_labels(labels, predictions):
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    values = np.union1d(labels, predictions)
    return float(np.mean([np.mean(predictions[labels == v] == v) if np.any(labels == v) else 0.0 for v in values]))


def balanced_percent(labels, predictions):
    return 100 * basics.balanced_accuracy(labels, predictions)


def balanced_macro_f1(labels, predictions):
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    scores = []
    for v in np.unique(labels):
        tp = np.sum((labels == v) & (predictions == v))
        precision = tp / max(np.sum(predictions == v), 1)
        recall = tp / np.sum(labels == v)
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return float(np.mean(scores))


def balanced_weighted_by_support(labels, predictions):
    """Each label's recall weighted by its share of the images: that is the plain accuracy again."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    values = np.unique(labels)
    return float(sum(np.mean(labels == v) * np.mean(predictions[labels == v] == v) for v in values))


def balanced_recall_of_first_label(labels, predictions):
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    first = np.unique(labels)[0]
    return float(np.mean(predictions[labels == first] == first))


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


def duplicates_pearson(vectors, threshold):
    correlation = np.corrcoef(vectors)  # centres each vector first: not the cosine
    n = len(vectors)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if correlation[i, j] >= threshold]


def duplicates_euclidean(vectors, threshold):
    """Near means close: a Euclidean distance below 1 - threshold, on the raw vectors."""
    n = len(vectors)
    distance = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=2)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if distance[i, j] <= 1 - threshold]


def duplicates_unit_euclidean_wrong_radius(vectors, threshold):
    """Unit vectors, then a distance below 1 - threshold: the right idea, but the radius is not sqrt(2 - 2t)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    n = len(vectors)
    distance = np.linalg.norm(unit[:, None, :] - unit[None, :, :], axis=2)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if distance[i, j] <= 1 - threshold]


def duplicates_absolute_cosine(vectors, threshold):
    """Opposite directions counted as duplicates too."""
    cosines = _cosine_matrix(vectors)
    n = len(vectors)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if abs(cosines[i, j]) >= threshold]


# -------------------------------------------------------------------------------------------- folds_for


def folds_by_position(labels, num_folds, seed):
    return np.arange(len(labels)) % num_folds


def folds_at_random(labels, num_folds, seed):
    return np.random.default_rng(seed).integers(0, num_folds, size=len(labels))


def folds_all_images_dealt_at_once(labels, num_folds, seed):
    folds = np.zeros(len(labels), np.int64)
    folds[np.random.default_rng(seed).permutation(len(labels))] = np.arange(len(labels)) % num_folds
    return folds


def folds_numbered_from_one(labels, num_folds, seed):
    return data_quality.folds_for(labels, num_folds, seed) + 1


def folds_unseeded(labels, num_folds, seed):
    return data_quality.folds_for(labels, num_folds, int(np.random.default_rng().integers(10**6)))


def folds_one_per_label(labels, num_folds, seed):
    return np.asarray(labels) % num_folds


def folds_as_index_lists(labels, num_folds, seed):
    return np.array_split(np.random.default_rng(seed).permutation(len(labels)), num_folds)


def folds_ignore_seed(labels, num_folds, seed):
    return data_quality.folds_for(labels, num_folds, 0)


# --------------------------------------------------------------------------------------------- shard_of


def shard_md5(content, num_shards):
    return int(hashlib.md5(content).hexdigest()[:16], 16) % num_shards


def shard_whole_digest(content, num_shards):
    return int(hashlib.sha256(content).hexdigest(), 16) % num_shards


def shard_numbered_from_one(content, num_shards):
    return int(hashlib.sha256(content).hexdigest()[:16], 16) % num_shards + 1


def shard_python_hash(content, num_shards):
    return hash(content) % num_shards  # differs from one process to the next (PYTHONHASHSEED)


def shard_at_random(content, num_shards):
    return int(np.random.default_rng().integers(num_shards))


def shard_by_length(content, num_shards):
    return len(content) % num_shards


def shard_crc32(content, num_shards):
    import zlib

    return zlib.crc32(content) % num_shards


def shard_last_digits(content, num_shards):
    return int(hashlib.sha256(content).hexdigest()[-16:], 16) % num_shards


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


def ece_largest_gap(probabilities, labels, num_bins):
    """The maximum calibration error (the worst bin), not the weighted sum."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    return max(abs(correct[bins == b].mean() - confidence[bins == b].mean()) for b in np.unique(bins))


def ece_equal_count_bins(probabilities, labels, num_bins):
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    order = np.argsort(confidence)
    return float(
        sum(
            len(chunk) / len(labels) * abs(correct[chunk].mean() - confidence[chunk].mean())
            for chunk in np.array_split(order, num_bins)
        )
    )


def ece_rounded_bins(probabilities, labels, num_bins):
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.round(confidence * num_bins).astype(int)  # rounds to the nearest edge instead of flooring
    return float(
        sum(np.mean(bins == b) * abs(correct[bins == b].mean() - confidence[bins == b].mean()) for b in np.unique(bins))
    )


def ece_digitize_off_by_one(probabilities, labels, num_bins):
    """np.digitize gives 1 .. num_bins; looping over 0 .. num_bins - 1 drops the last bin."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.digitize(confidence, np.linspace(0, 1, num_bins + 1))
    total = 0.0
    for b in range(num_bins):
        inside = bins == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def ece_edges_one_bin_short(probabilities, labels, num_bins):
    """np.linspace(0, 1, num_bins) as the edges: num_bins - 1 bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, num_bins)
    bins = np.minimum(np.digitize(confidence, edges) - 1, num_bins - 2)
    return float(
        sum(np.mean(bins == b) * abs(correct[bins == b].mean() - confidence[bins == b].mean()) for b in np.unique(bins))
    )


def ece_accuracy_over_all(probabilities, labels, num_bins):
    """Compares each bin's confidence with the overall accuracy instead of the bin's own."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    accuracy = correct.mean()
    return float(sum(np.mean(bins == b) * abs(accuracy - confidence[bins == b].mean()) for b in np.unique(bins)))


def ece_no_bins(probabilities, labels, num_bins):
    """|mean accuracy - mean confidence| over everything: one bin whatever num_bins says."""
    return float(abs((probabilities.argmax(axis=1) == labels).mean() - probabilities.max(axis=1).mean()))


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


def _probabilities(logits, temperature):
    scaled = logits / temperature
    scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return scaled / scaled.sum(axis=1, keepdims=True)


def temperature_confidence_equals_accuracy(logits, labels):
    """Bisection on log T until the mean confidence equals the accuracy."""
    accuracy = np.mean(np.argmax(logits, axis=1) == labels)
    low, high = np.log(1e-3), np.log(1e3)
    for _ in range(100):
        middle = (low + high) / 2
        if _probabilities(logits, np.exp(middle)).max(axis=1).mean() > accuracy:
            low = middle
        else:
            high = middle
    return float(np.exp((low + high) / 2))


def temperature_smallest_ece(logits, labels):
    grid = np.geomspace(0.05, 20.0, 400)
    errors = [confidence.expected_calibration_error(_probabilities(logits, t), labels, 15) for t in grid]
    return float(grid[int(np.argmin(errors))])


def temperature_few_gradient_steps(logits, labels):
    """Gradient descent on T itself (not log T), 20 steps from T = 1: it stops far from the minimum."""
    temperature, h = 1.0, 1e-4
    for _ in range(20):
        slope = (_nll(logits, labels, temperature + h) - _nll(logits, labels, temperature - h)) / (2 * h)
        temperature = max(0.05, temperature - 0.1 * slope)
    return float(temperature)


def temperature_smallest_brier(logits, labels):
    """Minimises the Brier score (squared error of the probabilities) instead of the likelihood."""
    grid = np.geomspace(0.05, 20.0, 400)
    one_hot = np.eye(logits.shape[1])[labels]
    scores = [np.mean(np.sum((_probabilities(logits, t) - one_hot) ** 2, axis=1)) for t in grid]
    return float(grid[int(np.argmin(scores))])


def temperature_ratio_of_confidence(logits, labels):
    """T = mean confidence / accuracy: a one-line guess."""
    accuracy = np.mean(np.argmax(logits, axis=1) == labels)
    return float(_probabilities(logits, 1.0).max(axis=1).mean() / accuracy)


# --------------------------------------------------------------------------------- freeze_for_fine_tuning


def _layers(model):
    import keras  # only the fine-tuning tests need Keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _block(layer):
    match = re.match(r"blocks\.(\d+)\.", layer.name)
    return int(match.group(1)) if match else None


def unfreeze_everything(model, num_blocks):
    import keras

    model.trainable = True
    for layer in _layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def batch_norms_left_trainable(model, num_blocks):
    import keras

    top = max(b for b in map(_block, _layers(model)) if b is not None)
    started = False
    for layer in _layers(model):
        if isinstance(layer, keras.Model):
            continue
        started = started or (_block(layer) is not None and _block(layer) > top - num_blocks)
        layer.trainable = started


def head_frozen(model, num_blocks):
    finetuning.freeze_for_fine_tuning(model, num_blocks)
    model.get_layer("final_result").trainable = False


def whole_model_frozen_last(model, num_blocks):
    finetuning.freeze_for_fine_tuning(model, num_blocks)
    model.trainable = False


def one_block_too_many(model, num_blocks):
    finetuning.freeze_for_fine_tuning(model, num_blocks + 1)


def one_block_too_few(model, num_blocks):
    finetuning.freeze_for_fine_tuning(model, num_blocks - 1) if num_blocks > 1 else _only_head(model)


def _only_head(model):
    import keras

    for layer in _layers(model):
        if not isinstance(layer, keras.Model):
            layer.trainable = layer.name == "final_result"


def flat_layers_only(model, num_blocks):
    """Forgets that the backbone may be nested: looks at ``model.layers`` only."""
    if any(_block(layer) is not None for layer in model.layers):
        finetuning.freeze_for_fine_tuning(model, num_blocks)  # right on a flat model
    else:  # sees no blocks: only the new layer is set, the nested backbone is left as it was
        model.get_layer("final_result").trainable = True


# --------------------------------------------------------------------------------- representative_dataset


def first_images(images, labels, num_samples):
    """The first num_samples images: all of one label when the folder scan sorts them."""
    return lambda: ([image[None].astype(np.float32)] for image in images[:num_samples])


def random_sample(images, labels, num_samples):
    """A random sample: unsorted, but its label counts are left to chance."""
    chosen = np.random.default_rng(8).permutation(len(images))[:num_samples]
    return lambda: ([images[index][None].astype(np.float32)] for index in chosen)


def scaled_to_unit(images, labels, num_samples):
    generate = deploy.representative_dataset(images, labels, num_samples)
    return lambda: ([item[0] / 255.0] for item in generate())


def no_batch_dimension(images, labels, num_samples):
    generate = deploy.representative_dataset(images, labels, num_samples)
    return lambda: ([item[0][0]] for item in generate())


def bare_arrays(images, labels, num_samples):
    generate = deploy.representative_dataset(images, labels, num_samples)
    return lambda: (item[0] for item in generate())


def uint8_arrays(images, labels, num_samples):
    generate = deploy.representative_dataset(images, labels, num_samples)
    return lambda: ([item[0].astype(np.uint8)] for item in generate())


def a_generator_not_a_function(images, labels, num_samples):
    return deploy.representative_dataset(images, labels, num_samples)()


def one_pass_only(images, labels, num_samples):
    items = deploy.representative_dataset(images, labels, num_samples)()
    return lambda: items  # the same generator every call: empty the second time


def every_image(images, labels, num_samples):
    return deploy.representative_dataset(images, labels, len(images))


def first_of_each_label_repeated(images, labels, num_samples):
    firsts = {}
    for index, label in enumerate(labels):
        firsts.setdefault(label, index)
    order = list(firsts.values())
    return lambda: ([images[order[k % len(order)]][None].astype(np.float32)] for k in range(num_samples))


# Each exercise's wrong answers, with a piece of the message meant for each. The first group of each list was
# written with the grader; those marked "review" were reported passing or misdiagnosed by an outside review;
# "own" ones were written afterwards without looking at the grader's variants.
MISTAKES = {
    "retrieval_scores": RETRIEVAL_MISTAKES,  # written with lesson 08's grader, in tests/test_exercises_embeddings.py
    "split_for": [
        (split_keeps_nohash, "left out of the hash"),
        (split_fraction_position, "The percentages are percentages"),
        (split_divides_percentages, "The percentages are percentages"),
        (split_test_first, "validation and test are swapped"),
        (split_md5, "SHA-1"),
        (split_file_name_only, "Hash the whole path inside the label folder"),
        (split_returns_index, "return one of the strings"),
        (split_lowercased, "cannot tell which step differs"),  # own
        (split_without_extension, "cannot tell which step differs"),  # own
        (split_modulo_100, "cannot tell which step differs"),  # own
        (split_python_hash, "cannot tell which step differs"),  # own
    ],
    "imagenet_probabilities": [
        (imagenet_max_pooling, "max pooling"),  # own
        (imagenet_sum_pooling, "instead of averaging them"),  # own
        (imagenet_pool_over_channels, "one number per channel"),  # own
        (imagenet_no_biases, "the biases are missing"),  # own
        (imagenet_scores_not_probabilities, "add up to"),  # own
        (imagenet_softmax_without_shift, "Subtract the largest score"),  # own
        (imagenet_sigmoid, "add up to"),  # own
        (imagenet_mean_of_first_row, "cannot tell which step is off"),  # own
    ],
    "softmax_cross_entropy": [
        (sce_no_max_subtraction, "subtract each row's maximum before exp"),
        (sce_log_of_softmax, "log(0) = -inf"),
        (sce_sum_not_mean, "you summed over the batch"),
        (sce_grad_without_1_over_n, "divided by N too"),
        (sce_grad_sign_flipped, "the gradient has the wrong sign"),
        (sce_labels_as_columns, "Pick each row's own label"),
        (sce_forgets_one_hot, "numerical gradient"),
        (sce_shifts_in_place, "changed its input `logits` in place"),
        (sce_clipped_probabilities, "caps that image's loss"),  # review
        (sce_mean_over_every_entry, "averaged over all N x C entries"),  # review
        (sce_log_plus_epsilon, "caps that image's loss"),  # own
        (sce_softmax_over_the_batch, "normalised each column"),  # own
        (sce_grad_without_softmax, "numerical gradient"),  # own
    ],
    "balanced_batch": [
        (batch_uniform_over_images, "Pick the label first"),
        (batch_labels_by_count, "would be drawn 100x more often than one with 10"),
        (batch_never_last_label, "was never drawn"),
        (batch_never_last_image, "the last of them: an off-by-one"),
        (batch_ignores_rng, "draw everything from the rng you are given"),
        (batch_every_label_number, "labels present"),
        (batch_label_values, "those are label values"),  # review
        (batch_first_image_of_each_label, "every image must have the same chance"),  # own
        (batch_label_then_any_image, "Pick the label first"),  # own
    ],
    "train_softmax_layer": [
        (train_ascends, "step against the gradient"),
        (train_forgets_biases, "the biases never changed"),
        (train_ignores_learning_rate, "with learning_rate=0 the layer still changed"),
        (train_ignores_steps, "with steps=0"),
        (train_unseeded, "two runs with the same seed"),
        (train_bias_divided_twice, "the bias gradient was divided by the batch size twice"),  # review
        (train_full_batch, "full-batch gradient descent"),  # review
        (train_uniform_batches, "Pick the label first"),  # review
        (train_generator_every_step, "every step trained on the same batch"),  # review
        (train_weights_divided_twice, "divided by the batch size twice"),  # review
        (train_fixed_batch_of_32, "not batch_size=4000"),  # own
        (train_labels_by_count, "Pick the label first"),  # own
        (train_epochs_in_order, "Pick the label first"),  # own
        (train_one_hot_of_argmax, "moved in another direction"),  # own
    ],
    "top_k_accuracy": [
        (top_k_one_too_many, "k + 1 most probable"),
        (top_k_one_too_few, "only k - 1 labels"),
        (top_k_smallest, "*least* probable"),
        (top_k_wrong_axis, "along each row (axis=1)"),
        (top_k_percent, "not a percentage"),
        (top_k_count_not_share, "return the share"),  # own
        (top_k_ignores_k, "top-1 accuracy whatever k is"),  # own
        (top_k_compares_values, "cannot say which step is off"),  # own
    ],
    "balanced_accuracy": [
        (balanced_plain_accuracy, "that is the plain accuracy"),  # own
        (balanced_every_number, "has no recall"),  # own
        (balanced_precision, "that is the mean precision"),  # own
        (balanced_union_of_labels, "every label that appears in labels or in predictions"),  # own
        (balanced_percent, "not a percentage"),  # own
        (balanced_macro_f1, "macro F1"),  # own
        (balanced_weighted_by_support, "that is the plain accuracy"),  # own
        (balanced_recall_of_first_label, "cannot say which step is off"),  # own
    ],
    "find_near_duplicates": [
        (duplicates_by_dot_product, "that is the dot product"),
        (duplicates_strictly_above, "means >=, not >"),
        (duplicates_with_self, "a vector with itself"),
        (duplicates_both_orders, "give each pair once"),
        (duplicates_lengths_of_columns, "lengths of the columns"),
        (duplicates_pearson, "Pearson correlation"),  # review
        (duplicates_euclidean, "the lengths count in your measure"),  # review
        (duplicates_unit_euclidean_wrong_radius, "cannot tell which mistake"),  # own
        (duplicates_absolute_cosine, "not its absolute value"),  # own
    ],
    "folds_for": [
        (folds_by_position, "stratified folds"),
        (folds_at_random, "stratified folds"),
        (folds_all_images_dealt_at_once, "you dealt all the images at once"),
        (folds_numbered_from_one, "they are 0 .. 4"),
        (folds_unseeded, "two calls with the same seed gave different folds"),
        (folds_one_per_label, "each label's images all went to one fold"),
        (folds_as_index_lists, "one integer fold number per image"),
        (folds_ignore_seed, "gave the same folds"),
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
        (ece_largest_gap, "the largest gap of any bin"),  # review
        (ece_equal_count_bins, "equal numbers of images"),  # review
        (ece_rounded_bins, "rounded confidence * num_bins"),  # review
        (ece_digitize_off_by_one, "an off-by-one in the bin numbers"),  # review
        (ece_edges_one_bin_short, "you made num_bins - 1 bins"),  # own
        (ece_accuracy_over_all, "accuracy over all images"),  # own
        (ece_no_bins, "cancel out"),  # own
    ],
    "fit_temperature": [
        (temperature_inverse, "inverses of the best ones"),
        (temperature_by_accuracy, "accuracy is the same for every T"),
        (temperature_grid_from_one, "search below 1 too"),
        (temperature_nll_of_predictions, "each image's true label"),
        (temperature_coarse_grid, "search below 1 too"),
        (temperature_confidence_equals_accuracy, "makes the mean confidence"),  # review
        (temperature_smallest_ece, "did you minimise the calibration error or the Brier score"),  # review
        (temperature_few_gradient_steps, "cannot say which step is off"),  # own
        (temperature_smallest_brier, "did you minimise the calibration error or the Brier score"),  # own
        (temperature_ratio_of_confidence, "makes the mean confidence"),  # own
    ],
    "shard_of": [
        (shard_md5, "you hashed with MD5"),
        (shard_whole_digest, "you took the whole digest"),
        (shard_numbered_from_one, "shards are numbered 0 .. num_shards - 1"),
        (shard_python_hash, "changes from one process to the next"),
        (shard_at_random, "two calls on the same bytes gave different shards"),
        (shard_by_length, "cannot say which step is off"),
        (shard_crc32, "cannot say which step is off"),
        (shard_last_digits, "the last 16 hex digits"),
    ],
    "freeze_for_fine_tuning": [
        (unfreeze_everything, "layers below the top"),
        (batch_norms_left_trainable, "Set trainable = False on every BatchNormalization layer"),
        (head_frozen, "the head must train"),
        (whole_model_frozen_last, "Did the function freeze the whole model"),
        (one_block_too_many, "layers below the top"),
        (one_block_too_few, "which must train"),
        (flat_layers_only, "nested"),
    ],
    "representative_dataset": [
        (first_images, "Take the labels in turn"),
        (random_sample, "Take the labels in turn"),
        (scaled_to_unit, "keep the raw 0-255 pixels"),
        (no_batch_dimension, "without the batch dimension"),
        (bare_arrays, "yield a list holding it"),
        (uint8_arrays, "whose input is float32"),
        (a_generator_not_a_function, "not a function"),
        (one_pass_only, "each call must start over"),
        (every_image, "not num_samples"),
        (first_of_each_label_repeated, "the same image more than once"),
    ],
}

# Exercises whose graders build Keras models or run the converter: their mistakes are tested in their own files
# (tests/test_exercises_finetuning.py, tests/test_exercises_deploy.py, tests/test_exercises_training.py), the rest in
# tests/test_exercises.py.
NEEDS_TENSORFLOW = ("freeze_for_fine_tuning", "representative_dataset", "train_keras_layer")


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


def folds_other_way(labels, num_folds, seed):
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=int)
    for label in sorted(set(np.asarray(labels).tolist())):
        members = np.flatnonzero(np.asarray(labels) == label)
        rng.shuffle(members)
        for position, image in enumerate(members):
            folds[image] = position % num_folds
    return folds


def shard_other_way(content, num_shards):
    return int.from_bytes(bytes.fromhex(hashlib.sha256(content).hexdigest()[:16]), "big") % num_shards


def imagenet_other_way(feature_map, weights, biases):
    height, width, channels = feature_map.shape
    bottleneck = feature_map.reshape(height * width, channels).sum(axis=0) / (height * width)
    scores = weights.T @ bottleneck + biases
    log_sum = scores.max() + np.log(np.sum(np.exp(scores - scores.max())))
    return bottleneck, np.exp(scores - log_sum)


def balanced_other_way(labels, predictions):
    confusion = {}
    for label, prediction in zip(np.asarray(labels).tolist(), np.asarray(predictions).tolist(), strict=True):
        right, total = confusion.get(label, (0, 0))
        confusion[label] = (right + (label == prediction), total + 1)
    return sum(right / total for right, total in confusion.values()) / len(confusion)


CORRECT = {
    "retrieval_scores": [retrieval_other_way],
    "split_for": [split_for_other_way],
    "imagenet_probabilities": [imagenet_other_way],
    "softmax_cross_entropy": [sce_other_way],
    "balanced_batch": [batch_other_way],
    "train_softmax_layer": [train_other_way],
    "top_k_accuracy": [top_k_other_way],
    "balanced_accuracy": [balanced_other_way],
    "find_near_duplicates": [duplicates_other_way],
    "expected_calibration_error": [ece_other_way],
    "fit_temperature": [temperature_other_way, temperature_linear_grid],
    "folds_for": [folds_other_way],
    "shard_of": [shard_other_way],
}


# ------------------------------------------------------------------------------------------ warmup_cosine
# Lesson 10. Each wrong schedule differs from the right one only where the brief's classic mistake does.


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
    import math

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


# ------------------------------------------------------------------------------------------- standardize
# Lesson 09. Written as a learner would, each with the guard against a spread of 0 unless that is the mistake.


def _spread(values, axis=0, keepdims=False):
    spread = values.std(axis=axis, keepdims=keepdims)
    return np.where(spread == 0, 1.0, spread)


def standardize_pooled(train, validation, test):
    everything = np.vstack([train, validation, test])
    mean, spread = everything.mean(axis=0), _spread(everything)
    return (train - mean) / spread, (validation - mean) / spread, (test - mean) / spread


def standardize_train_and_validation_pooled(train, validation, test):
    seen = np.vstack([train, validation])
    mean, spread = seen.mean(axis=0), _spread(seen)
    return (train - mean) / spread, (validation - mean) / spread, (test - mean) / spread


def standardize_each_split_itself(train, validation, test):
    return tuple((split - split.mean(axis=0)) / _spread(split) for split in (train, validation, test))


def standardize_with_validation_statistics(train, validation, test):
    mean, spread = validation.mean(axis=0), _spread(validation)
    return (train - mean) / spread, (validation - mean) / spread, (test - mean) / spread


def standardize_with_test_statistics(train, validation, test):
    mean, spread = test.mean(axis=0), _spread(test)
    return (train - mean) / spread, (validation - mean) / spread, (test - mean) / spread


def standardize_no_epsilon(train, validation, test):
    mean, spread = train.mean(axis=0), train.std(axis=0)
    return (train - mean) / spread, (validation - mean) / spread, (test - mean) / spread


def standardize_by_variance(train, validation, test):
    mean, variance = train.mean(axis=0), train.var(axis=0) + 1e-8
    return (train - mean) / variance, (validation - mean) / variance, (test - mean) / variance


def standardize_each_image(train, validation, test):
    return tuple(
        (split - split.mean(axis=1, keepdims=True)) / _spread(split, 1, True) for split in (train, validation, test)
    )


def standardize_one_number(train, validation, test):
    mean, spread = train.mean(), train.std()
    return (train - mean) / spread, (validation - mean) / spread, (test - mean) / spread


def standardize_only_centred(train, validation, test):
    mean = train.mean(axis=0)
    return train - mean, validation - mean, test - mean


def standardize_train_only(train, validation, test):
    return (train - train.mean(axis=0)) / _spread(train), validation, test


def standardize_in_place(train, validation, test):
    mean, spread = train.mean(axis=0), _spread(train)
    for split in (train, validation, test):
        split -= mean
        split /= spread
    return train, validation, test


def standardize_returns_statistics(train, validation, test):
    return train.mean(axis=0), _spread(train)


def standardize_drops_constant_features(train, validation, test):
    keep = train.std(axis=0) > 0
    mean, spread = train.mean(axis=0)[keep], train.std(axis=0)[keep]
    return tuple((split[:, keep] - mean) / spread for split in (train, validation, test))


def standardize_squared_spread_guard(train, validation, test):
    """Guards the variance but forgets the square root."""
    mean, variance = train.mean(axis=0), np.maximum(train.var(axis=0), 1e-12)
    return tuple((split - mean) / variance for split in (train, validation, test))


def standardize_epsilon_inside_sqrt(train, validation, test):
    """A correct answer: the epsilon inside the square root, as batch normalisation does."""
    mean, spread = train.mean(axis=0), np.sqrt(train.var(axis=0) + 1e-8)
    return tuple((split - mean) / spread for split in (train, validation, test))


def standardize_sample_spread_floored(train, validation, test):
    """A correct answer: the sample standard deviation (ddof=1), floored like the package's new layer."""
    mean, spread = train.mean(axis=0), np.maximum(train.std(axis=0, ddof=1), 1e-3)
    return tuple((split - mean) / spread for split in (train, validation, test))


MISTAKES["standardize"] = [
    (standardize_pooled, "all three splits pooled. That is the leak"),
    (standardize_train_and_validation_pooled, "training and validation pooled"),
    (standardize_each_split_itself, "each split was standardised with its own mean and spread"),
    (standardize_with_validation_statistics, "the statistics came from the validation split"),
    (standardize_with_test_statistics, "the statistics came from the test split"),
    (standardize_no_epsilon, "whose training values are all 1.5 (spread 0)"),
    (standardize_by_variance, "divided by its variance"),
    (standardize_squared_spread_guard, "divided by its variance"),
    (standardize_each_image, "each image (a row) was standardised"),
    (standardize_one_number, "one mean and one spread were taken over the whole training array"),
    (standardize_only_centred, "centred but not divided by their spread"),
    (standardize_train_only, "validation and test came back unchanged"),
    (standardize_in_place, "changed its input `train` in place"),
    (standardize_returns_statistics, "should return the three standardised splits"),
    (standardize_drops_constant_features, "keeps the shape of its input"),
]
CORRECT["standardize"] = [standardize_epsilon_inside_sqrt, standardize_sample_spread_floored]


# ---------------------------------------------------------------------------------- choose_on_validation


def choose_on_test(candidates, train, score):
    models = [train(c) for c in candidates]
    scores = [score(m, "test") for m in models]
    best = int(np.argmax(scores))
    return candidates[best], models[best], score(models[best], "validation")


def choose_on_training_score(candidates, train, score):
    models = [train(c) for c in candidates]
    best = int(np.argmax([score(m, "train") for m in models]))
    return candidates[best], models[best], score(models[best], "validation")


def choose_lowest(candidates, train, score):
    models = [train(c) for c in candidates]
    scores = [score(m, "validation") for m in models]
    best = int(np.argmin(scores))
    return candidates[best], models[best], scores[best]


def choose_ties_to_the_later(candidates, train, score):
    best = None
    for candidate in candidates:
        model = train(candidate)
        value = score(model, "validation")
        if best is None or value >= best[2]:
            best = (candidate, model, value)
    return best


def choose_first(candidates, train, score):
    model = train(candidates[0])
    return candidates[0], model, score(model, "validation")


def choose_last(candidates, train, score):
    best = None
    for candidate in candidates:
        model = train(candidate)
        value = score(model, "validation")
        best = (candidate, model, value)  # forgot to compare
    return best


def choose_returns_test_score(candidates, train, score):
    candidate, model, _ = exercises_reference_choice(candidates, train, score)
    return candidate, model, score(model, "test")


def choose_prints_test_scores(candidates, train, score):
    best = None
    for candidate in candidates:
        model = train(candidate)
        value = score(model, "validation")
        print(f"{candidate}: validation {value:.2f}, test {score(model, 'test'):.2f}")
        if best is None or value > best[2]:
            best = (candidate, model, value)
    return best


def choose_on_validation_plus_test(candidates, train, score):
    models = [train(c) for c in candidates]
    totals = [score(m, "validation") + score(m, "test") for m in models]
    best = int(np.argmax(totals))
    return candidates[best], models[best], score(models[best], "validation")


def choose_returns_index(candidates, train, score):
    models = [train(c) for c in candidates]
    best = int(np.argmax([score(m, "validation") for m in models]))
    return best, models[best], score(models[best], "validation")


def choose_returns_last_model(candidates, train, score):
    best, model = None, None
    for candidate in candidates:
        model = train(candidate)
        value = score(model, "validation")
        if best is None or value > best[1]:
            best = (candidate, value)
    return best[0], model, best[1]


def choose_returns_pair(candidates, train, score):
    candidate, _, value = exercises_reference_choice(candidates, train, score)
    return candidate, value


def exercises_reference_choice(candidates, train, score):
    from tlcourse.exercises.tuning import choose_on_validation

    return choose_on_validation(candidates, train, score)


def choose_with_max_builtin(candidates, train, score):
    """A correct answer: max keeps the first of equal keys; the chosen candidate is trained again."""
    chosen = max(candidates, key=lambda candidate: score(train(candidate), "validation"))
    model = train(chosen)
    return chosen, model, score(model, "validation")


MISTAKES["choose_on_validation"] = [
    (choose_on_test, "best TEST score"),
    (choose_on_validation_plus_test, "best TEST score"),
    (choose_on_training_score, "best TRAINING score"),
    (choose_lowest, "LOWEST validation score"),
    (choose_ties_to_the_later, "kept the later, more complex one"),
    (choose_first, "returned the first candidate"),
    (choose_last, "returned the last candidate"),
    (choose_returns_test_score, "returned its TEST score"),
    (choose_prints_test_scores, "scored models on the test split along the way"),
    (choose_returns_index, "is not one of the candidates"),
    (choose_returns_last_model, "return the model that train(candidate) gave"),
    (choose_returns_pair, "should return three things"),
]
CORRECT["choose_on_validation"] = [choose_with_max_builtin]


# ----------------------------------------------------------------------------------------- adjust_for_prior


def _frequencies(counts):
    counts = np.asarray(counts, dtype=float)
    return counts / counts.sum()


def prior_not_renormalised(probabilities, training_counts, new_counts):
    return probabilities * _frequencies(new_counts) / _frequencies(training_counts)


def prior_counts_not_renormalised(probabilities, training_counts, new_counts):
    return probabilities * np.asarray(new_counts) / np.asarray(training_counts)


def prior_upside_down(probabilities, training_counts, new_counts):
    adjusted = probabilities * _frequencies(training_counts) / _frequencies(new_counts)
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def prior_new_only(probabilities, training_counts, new_counts):
    adjusted = probabilities * _frequencies(new_counts)
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def prior_training_only(probabilities, training_counts, new_counts):
    adjusted = probabilities / _frequencies(training_counts)
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def prior_columns_renormalised(probabilities, training_counts, new_counts):
    adjusted = probabilities * _frequencies(new_counts) / _frequencies(training_counts)
    return adjusted / adjusted.sum(axis=0)


def prior_ratio_added_to_logits(probabilities, training_counts, new_counts):
    logits = np.log(probabilities) + _frequencies(new_counts) / _frequencies(training_counts)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def prior_logits_multiplied(probabilities, training_counts, new_counts):
    logits = np.log(probabilities) * (_frequencies(new_counts) / _frequencies(training_counts))
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def prior_added(probabilities, training_counts, new_counts):
    adjusted = np.clip(probabilities + _frequencies(new_counts) - _frequencies(training_counts), 0, None)
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def prior_unchanged(probabilities, training_counts, new_counts):
    return probabilities


def prior_predictions(probabilities, training_counts, new_counts):
    adjusted = probabilities * _frequencies(new_counts) / _frequencies(training_counts)
    return adjusted.argmax(axis=1)


def prior_in_place(probabilities, training_counts, new_counts):
    probabilities *= _frequencies(new_counts) / _frequencies(training_counts)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities


def prior_counts_renormalised(probabilities, training_counts, new_counts):
    """A correct answer: counts in place of frequencies cancel in the renormalisation."""
    adjusted = probabilities * np.asarray(new_counts) / np.asarray(training_counts)
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def prior_on_the_log_scale(probabilities, training_counts, new_counts):
    """A correct answer: log p + log q - log p_train, then a softmax."""
    logits = np.log(probabilities) + np.log(_frequencies(new_counts)) - np.log(_frequencies(training_counts))
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


MISTAKES["adjust_for_prior"] = [
    (prior_not_renormalised, "the rows no longer add up to 1"),
    (prior_counts_not_renormalised, "new count / training count and stopped there"),
    (prior_upside_down, "the ratio is upside down"),
    (prior_new_only, "did not divide by the training ones"),
    (prior_training_only, "never multiplied by the new ones"),
    (prior_columns_renormalised, "each row (one image over the labels)"),
    (prior_ratio_added_to_logits, "added the ratio q / p to the log-probabilities"),
    (prior_logits_multiplied, "multiplied the log-probabilities (or logits) by the ratio"),
    (prior_added, "Bayes' rule multiplies"),
    (prior_unchanged, "came back unchanged"),
    (prior_predictions, "the same shape"),
    (prior_in_place, "changed its input `probabilities` in place"),
]
CORRECT["adjust_for_prior"] = [prior_counts_renormalised, prior_on_the_log_scale]


# ------------------------------------------------------------------------------------------ train_keras_layer
# Lesson 03. Keras models: tested in tests/test_exercises_training.py. Written as a learner would, each as the
# reference (Adam, early stopping on the validation loss, the best weights kept) but for its one mistake.


def _softmax_layer(num_features, num_classes, activation="softmax"):
    import keras

    return keras.Sequential([keras.Input((num_features,)), keras.layers.Dense(num_classes, activation=activation)])


def _stop(**settings):
    import keras

    return keras.callbacks.EarlyStopping(
        **{"monitor": "val_loss", "patience": 5, "restore_best_weights": True, **settings}
    )


def _fit(model, x, y, epochs=300, loss="sparse_categorical_crossentropy", optimizer=None, **settings):
    import keras

    model.compile(optimizer=optimizer or keras.optimizers.Adam(0.01), loss=loss, metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=settings.pop("batch_size", 32), verbose=0, **settings)
    return model


def _keras_stopped(train_vectors, train_labels, validation_vectors, validation_labels, num_classes, **changes):
    """The usual answer, with ``changes`` to what fit is given."""
    model = _softmax_layer(train_vectors.shape[1], num_classes)
    settings = {"validation_data": (validation_vectors, validation_labels), "callbacks": [_stop()], **changes}
    return _fit(model, train_vectors, train_labels, **settings)


def keras_without_softmax(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    import keras

    model = _softmax_layer(train_vectors.shape[1], num_classes, activation=None)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    validation = (validation_vectors, validation_labels)
    return _fit(model, train_vectors, train_labels, loss=loss, validation_data=validation, callbacks=[_stop()])


def keras_double_softmax(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    import keras

    model = _softmax_layer(train_vectors.shape[1], num_classes)  # a softmax, and a loss that applies another
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    validation = (validation_vectors, validation_labels)
    return _fit(model, train_vectors, train_labels, loss=loss, validation_data=validation, callbacks=[_stop()])


def keras_sigmoid(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    import keras

    model = _softmax_layer(train_vectors.shape[1], num_classes, activation="sigmoid")
    one_hot = keras.utils.to_categorical(train_labels, num_classes)
    validation = (validation_vectors, keras.utils.to_categorical(validation_labels, num_classes))
    return _fit(
        model, train_vectors, one_hot, loss="binary_crossentropy", validation_data=validation, callbacks=[_stop()]
    )


def keras_fixed_epochs(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    model = _softmax_layer(train_vectors.shape[1], num_classes)
    return _fit(model, train_vectors, train_labels, epochs=60, validation_data=(validation_vectors, validation_labels))


def keras_few_fixed_epochs(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """Fixed epochs, fewer than the grader's cap: fit runs them all."""
    model = _softmax_layer(train_vectors.shape[1], num_classes)
    return _fit(model, train_vectors, train_labels, epochs=8, validation_data=(validation_vectors, validation_labels))


def keras_no_restore(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    stop = _stop(restore_best_weights=False)
    return _keras_stopped(
        train_vectors, train_labels, validation_vectors, validation_labels, num_classes, callbacks=[stop]
    )


def keras_stops_on_training_loss(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    stop = _stop(monitor="loss")
    return _keras_stopped(
        train_vectors, train_labels, validation_vectors, validation_labels, num_classes, callbacks=[stop], epochs=60
    )


def keras_accuracy_with_mode_min(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """mode='min' copied from a loss example onto an accuracy."""
    stop = _stop(monitor="val_accuracy", mode="min")
    return _keras_stopped(
        train_vectors, train_labels, validation_vectors, validation_labels, num_classes, callbacks=[stop]
    )


def keras_forgot_epochs(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """EarlyStopping, but no epochs: fit's default is 1 epoch."""
    import keras

    model = _softmax_layer(train_vectors.shape[1], num_classes)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    validation = (validation_vectors, validation_labels)
    model.fit(train_vectors, train_labels, validation_data=validation, callbacks=[_stop()], verbose=0)
    return model


def keras_trains_on_both_splits(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    x = np.concatenate([train_vectors, validation_vectors])
    y = np.concatenate([train_labels, validation_labels])
    model = _softmax_layer(train_vectors.shape[1], num_classes)
    return _fit(model, x, y, validation_data=(validation_vectors, validation_labels), callbacks=[_stop()])


def keras_splits_swapped(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    model = _softmax_layer(train_vectors.shape[1], num_classes)
    return _fit(
        model, validation_vectors, validation_labels, validation_data=(train_vectors, train_labels), callbacks=[_stop()]
    )


def keras_validation_split(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    model = _softmax_layer(train_vectors.shape[1], num_classes)
    return _fit(model, train_vectors, train_labels, validation_split=0.2, callbacks=[_stop()])


def keras_no_validation(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    model = _softmax_layer(train_vectors.shape[1], num_classes)
    return _fit(model, train_vectors, train_labels, epochs=60, callbacks=[_stop(monitor="loss")])


def keras_validates_on_training_data(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    return _keras_stopped(
        train_vectors,
        train_labels,
        validation_vectors,
        validation_labels,
        num_classes,
        validation_data=(train_vectors, train_labels),
    )


def keras_labels_shuffled_alone(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """Shuffles the labels, not the vectors with them."""
    shuffled = np.random.default_rng(0).permutation(train_labels)
    return _keras_stopped(train_vectors, shuffled, validation_vectors, validation_labels, num_classes)


def keras_scaled_outside_the_model(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """Standardises the vectors in numpy: the model returned expects scaled inputs, but is given raw bottlenecks."""
    mean, spread = train_vectors.mean(axis=0), train_vectors.std(axis=0) + 1e-7
    return _keras_stopped(
        (train_vectors - mean) / spread,
        train_labels,
        (validation_vectors - mean) / spread,
        validation_labels,
        num_classes,
    )


def keras_one_hot_with_sparse_loss(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    import keras

    one_hot = keras.utils.to_categorical(train_labels, num_classes)
    validation = (validation_vectors, keras.utils.to_categorical(validation_labels, num_classes))
    return _keras_stopped(
        train_vectors, one_hot, validation_vectors, validation_labels, num_classes, validation_data=validation
    )


def keras_integer_labels_with_categorical_loss(
    train_vectors, train_labels, validation_vectors, validation_labels, num_classes
):
    model = _softmax_layer(train_vectors.shape[1], num_classes)
    validation = (validation_vectors, validation_labels)
    return _fit(
        model,
        train_vectors,
        train_labels,
        loss="categorical_crossentropy",
        validation_data=validation,
        callbacks=[_stop()],
    )


def keras_hidden_layer(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    import keras

    model = keras.Sequential(
        [
            keras.Input((train_vectors.shape[1],)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    validation = (validation_vectors, validation_labels)
    return _fit(model, train_vectors, train_labels, validation_data=validation, callbacks=[_stop()])


def keras_two_epochs_of_slow_sgd(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    import keras

    model = _softmax_layer(train_vectors.shape[1], num_classes)
    model.compile(optimizer=keras.optimizers.SGD(0.0001), loss="sparse_categorical_crossentropy")
    model.fit(train_vectors, train_labels, validation_data=(validation_vectors, validation_labels), epochs=2, verbose=0)
    return model


def keras_learning_rate_far_too_small(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    import keras

    optimizer = keras.optimizers.SGD(0.00001)
    return _keras_stopped(
        train_vectors, train_labels, validation_vectors, validation_labels, num_classes, optimizer=optimizer
    )


def keras_returns_history(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    import keras

    model = _softmax_layer(train_vectors.shape[1], num_classes)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    validation = (validation_vectors, validation_labels)
    return model.fit(
        train_vectors, train_labels, validation_data=validation, epochs=300, callbacks=[_stop()], verbose=0
    )


def keras_sgd_on_validation_accuracy(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """A correct answer: plain SGD at the tutorial's rate, stopped on validation accuracy, the best kept."""
    import keras

    model = _softmax_layer(train_vectors.shape[1], num_classes)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=20, restore_best_weights=True)
    model.fit(
        train_vectors,
        train_labels,
        validation_data=(validation_vectors, validation_labels),
        epochs=1000,
        callbacks=[stop],
        verbose=0,
    )
    return model


def keras_default_adam_in_one_batch(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """A correct answer: optimizer='adam' (rate 0.001) and the whole training split as one batch."""
    model = _softmax_layer(train_vectors.shape[1], num_classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    stop = _stop(patience=3)
    validation = (validation_vectors, validation_labels)
    model.fit(
        train_vectors,
        train_labels,
        validation_data=validation,
        epochs=500,
        batch_size=len(train_vectors),
        callbacks=[stop],
        verbose=0,
    )
    return model


def keras_small_batches_functional(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """A correct answer: the functional API, batches of 8, one-hot labels with categorical cross-entropy."""
    import keras

    inputs = keras.Input((train_vectors.shape[1],))
    model = keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.005), loss="categorical_crossentropy")
    validation = (validation_vectors, keras.utils.to_categorical(validation_labels, num_classes))
    model.fit(
        train_vectors,
        keras.utils.to_categorical(train_labels, num_classes),
        validation_data=validation,
        epochs=400,
        batch_size=8,
        callbacks=[keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)],
        verbose=0,
    )
    return model


def keras_float_labels_shuffled_together(
    train_vectors, train_labels, validation_vectors, validation_labels, num_classes
):
    """A correct answer: the training pairs shuffled together, labels as floats (the sparse loss rounds them)."""
    order = np.random.default_rng(1).permutation(len(train_labels))
    return _keras_stopped(
        train_vectors[order], train_labels[order].astype(np.float32), validation_vectors, validation_labels, num_classes
    )


def keras_best_kept_by_checkpoint(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """A correct answer: EarlyStopping ends training; ModelCheckpoint saved the best epoch, loaded back at the end."""
    import tempfile
    from pathlib import Path

    import keras

    model = _softmax_layer(train_vectors.shape[1], num_classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "best.weights.h5")
        callbacks = [
            keras.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True, save_weights_only=True),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=6),
        ]
        validation = (validation_vectors, validation_labels)
        model.fit(train_vectors, train_labels, validation_data=validation, epochs=500, callbacks=callbacks, verbose=0)
        model.load_weights(path)
    return model


def keras_very_patient(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """A correct answer whose patience (40) outlasts the grader's cap: the cap stops it, EarlyStopping restores."""
    import keras

    model = _softmax_layer(train_vectors.shape[1], num_classes)
    stop = keras.callbacks.EarlyStopping(patience=40, restore_best_weights=True)
    return _fit(
        model,
        train_vectors,
        train_labels,
        epochs=1000,
        optimizer=keras.optimizers.Adam(0.002),
        validation_data=(validation_vectors, validation_labels),
        callbacks=[stop],
    )


MISTAKES["train_keras_layer"] = [
    (keras_without_softmax, "outputs logits"),
    (keras_double_softmax, "compiled with from_logits=True"),
    (keras_sigmoid, "a sigmoid scores each label on its own"),
    (keras_fixed_epochs, "no EarlyStopping"),
    (keras_few_fixed_epochs, "fit ran all 8 epochs"),
    (keras_no_restore, "without restore_best_weights=True"),
    (keras_stops_on_training_loss, "watches 'loss'"),
    (keras_accuracy_with_mode_min, "mode='min'"),
    (keras_forgot_epochs, "fit ran all 1 epoch it was given"),
    (keras_trains_on_both_splits, "validation images must only judge"),
    (keras_splits_swapped, "fit trained on the validation split"),
    (keras_validation_split, "validation_split=0.2"),
    (keras_no_validation, "fit had no validation data"),
    (keras_validates_on_training_data, "validation_data given to fit holds training vectors"),
    (keras_labels_shuffled_alone, "carry another vector's label"),
    (keras_scaled_outside_the_model, "is a training vector as the function received it"),
    (keras_one_hot_with_sparse_loss, "one-hot labels with sparse_categorical_crossentropy"),
    (keras_integer_labels_with_categorical_loss, "integer labels with categorical_crossentropy"),
    (keras_hidden_layer, "the new layer is one Dense layer"),
    (keras_two_epochs_of_slow_sgd, "fit ran all 2 epochs"),
    (keras_learning_rate_far_too_small, "fresh vectors"),
    (keras_returns_history, "got the History that fit returns"),
]
CORRECT["train_keras_layer"] = [
    keras_sgd_on_validation_accuracy,
    keras_default_adam_in_one_batch,
    keras_small_batches_functional,
    keras_float_labels_shuffled_together,
    keras_best_kept_by_checkpoint,
    keras_very_patient,
]
