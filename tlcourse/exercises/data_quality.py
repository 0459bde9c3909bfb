"""Exercises on data: finding near-duplicate images by their bottlenecks (05), stratified folds (06)."""

from __future__ import annotations

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, describe, register


def find_near_duplicates(vectors, threshold):
    """Every pair (i, j), i < j, of rows whose cosine similarity is at least ``threshold``.

    Taught in notebooks/06_your_data.ipynb.
    """
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # cosine: the lengths divided out
    similarity = unit @ unit.T
    first, second = np.nonzero(np.triu(similarity >= threshold, k=1))  # above the diagonal: i < j, no (i, i)
    return [(int(i), int(j)) for i, j in zip(first, second, strict=True)]


def _cosines(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def _sign_vectors(rng: np.random.Generator, dim: int) -> list[np.ndarray]:
    """Vectors of +-0.25 (length exactly 1) and their copies with 0-3 signs flipped, scaled by powers of 2.

    Their cosines are exactly (dim - 2 * flips) / dim in floating point, however they are computed, so a
    pair can sit exactly on the threshold without rounding deciding the answer.
    """
    base = rng.choice([-0.25, 0.25], size=dim)
    out = []
    for flips in (0, 0, 1, 2, 3):
        copy = base.copy()
        copy[rng.choice(dim, size=flips, replace=False)] *= -1
        out.append(copy * 2.0 ** int(rng.integers(-7, 8)))
    return out


def _offset_vectors(rng: np.random.Generator, dim: int) -> list[np.ndarray]:
    """Hard cases for measures other than the cosine, the same for every threshold used.

    A pair sharing a large offset (cosine 400/401, Pearson correlation 0); a pair whose deviations agree but
    offsets are opposite (Pearson 1, cosine -12/13); a vector and its opposite, 100x longer (cosine -1).
    """
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    centred = basis[:, 1:] - basis[:, 1:].mean(axis=0)  # directions orthogonal to the all-ones vector
    first, second = np.linalg.qr(centred)[0][:, :2].T * np.sqrt(dim)  # zero mean, orthogonal, |v|^2 = dim
    ones = np.ones(dim)
    direction = rng.normal(size=dim)
    return [20 * ones + first, 20 * ones + second, first + 5 * ones, first - 5 * ones, direction, -100 * direction]


def _problem(rng: np.random.Generator, threshold: float) -> np.ndarray:
    dim = 16
    while True:
        vectors = []
        for _ in range(24):  # random directions, lengths from 0.01 to 100
            direction = rng.normal(size=dim)
            vectors.append(direction / np.linalg.norm(direction) * 10.0 ** rng.uniform(-2, 2))
        for _ in range(6):  # near-copies of very different lengths: cosine about 0.999, dot product anything
            direction = rng.normal(size=dim)
            near = direction + rng.normal(0.0, 0.03, size=dim)
            vectors.append(direction * 10.0 ** rng.uniform(-2, -1))
            vectors.append(near * 10.0 ** rng.uniform(1, 2))
        for _ in range(3):
            vectors += _sign_vectors(rng, dim)
        vectors += _offset_vectors(rng, dim)
        vectors = np.array(vectors)[rng.permutation(len(vectors))]
        cosines = _cosines(vectors)
        close = (np.abs(cosines - threshold) < 1e-4) & (cosines != threshold)  # only sign vectors sit exactly on it
        if not close[np.triu_indices(len(vectors), 1)].any():
            return vectors


def _as_pairs(result) -> list[tuple[int, int]]:
    if isinstance(result, np.ndarray):
        result = result.tolist()
    if isinstance(result, (str, bytes, dict)) or not hasattr(result, "__iter__"):
        raise GradingFailure(f"find_near_duplicates should return a list of (i, j) pairs, got {describe(result)}.")
    pairs = []
    for item in result:
        try:
            i, j = item
            pairs.append((int(i), int(j)))
        except (TypeError, ValueError):
            raise GradingFailure(
                f"find_near_duplicates should return a list of (i, j) pairs of indices; one item is {describe(item)}."
            ) from None
    return pairs


def _cosines_of_columns(vectors: np.ndarray) -> np.ndarray:
    scaled = vectors / np.linalg.norm(vectors, axis=0, keepdims=True)
    return scaled @ scaled.T


def _pairs_where(matrix: np.ndarray) -> set[tuple[int, int]]:
    first, second = np.nonzero(np.triu(matrix, k=1))
    return {(int(i), int(j)) for i, j in zip(first, second, strict=True)}


def _explain_pairs(vectors, threshold, found: set, expected: set, where: str, lengths_count: bool) -> None:
    cosines = _cosines(vectors)
    lengths = np.linalg.norm(vectors, axis=1)
    missing, extra = sorted(expected - found), sorted(found - expected)
    variants = {
        "strict": (
            _pairs_where(cosines > threshold),
            "'at least threshold' means >=, not >: pairs whose cosine similarity is exactly the threshold count.",
        ),
        "pearson": (
            _pairs_where(np.corrcoef(vectors) >= threshold),
            "that is the Pearson correlation: it subtracts each vector's mean first, so two vectors sharing a "
            "large offset (as bottlenecks after a ReLU do) look unrelated. Use the cosine, (a @ b) / (|a| |b|), "
            "on the vectors as they are.",
        ),
        "absolute": (
            _pairs_where(np.abs(cosines) >= threshold),
            "a vector and its opposite (cosine -1) are not duplicates: compare the cosine itself with the "
            "threshold, not its absolute value.",
        ),
        "columns": (
            _pairs_where(_cosines_of_columns(vectors) >= threshold),
            "you divided by the lengths of the columns (axis=0). Each vector is a row: divide each row by its own "
            "length, np.linalg.norm(vectors, axis=1, keepdims=True).",
        ),
        "dot": (
            _pairs_where(vectors @ vectors.T >= threshold),
            "that is the dot product: it grows with the lengths. Use cosine: divide by the lengths, "
            "(a @ b) / (|a| |b|), so that only the directions count.",
        ),
    }
    for pairs, message in variants.values():
        if found == pairs:
            i, j = (missing or extra)[0]
            verb = "misses" if (i, j) in missing else "holds"
            raise GradingFailure(
                f"vectors {i} (length {lengths[i]:.3g}) and {j} (length {lengths[j]:.3g}) have cosine similarity "
                f"{cosines[i, j]:.4f}, and your list {verb} them ({where}): {message}"
            )
    pair = max(missing or extra, key=lambda p: abs(np.log(lengths[p[0]] / lengths[p[1]])))
    i, j = pair
    found_text = (
        f"vectors {i} and {j} have cosine similarity {cosines[i, j]:.4f} "
        + (
            f">= {threshold} but your list misses them"
            if pair in missing
            else f"< {threshold} but your list holds them"
        )
        + f" ({where}; {len(missing)} missing, {len(extra)} extra)"
    )
    if lengths_count:
        raise GradingFailure(
            f"{found_text}. Your list changed when the grader only rescaled the vectors (each multiplied by a number "
            f"between 0.1 and 10), so the lengths count in your measure (a dot product, a Euclidean distance between "
            f"the raw vectors?). The cosine, (a @ b) / (|a| |b|), divides the lengths out."
        )
    raise GradingFailure(
        f"{found_text}. The grader cannot tell which mistake this is: a pair belongs in the list when "
        f"(a @ b) / (|a| |b|) >= threshold."
    )


def _grade_find_near_duplicates(candidate, rng: np.random.Generator) -> None:
    for threshold in rng.permutation([0.875, 0.75]).tolist() + [0.99]:
        vectors = _problem(rng, threshold)
        where = f"{len(vectors)} vectors of lengths {np.linalg.norm(vectors, axis=1).min():.3g} to "
        where += f"{np.linalg.norm(vectors, axis=1).max():.3g}, threshold {threshold}"
        pairs = _as_pairs(candidate(vectors, threshold))
        if any(i == j for i, j in pairs):
            i = next(i for i, j in pairs if i == j)
            raise GradingFailure(
                f"your list holds the pair ({i}, {i}) ({where}): every vector is similar to itself, so leave out "
                f"pairs of a vector with itself; only i < j."
            )
        if len(set(pairs)) != len(pairs) or any(i > j for i, j in pairs):
            example = next(((i, j) for i, j in pairs if i > j), None) or next(p for p in pairs if pairs.count(p) > 1)
            raise GradingFailure(
                f"your list holds {example} ({where}): give each pair once, as (i, j) with i < j, so that "
                f"(j, i) and repeats are left out."
            )
        if any(not (0 <= i < len(vectors) and 0 <= j < len(vectors)) for i, j in pairs):
            raise GradingFailure(f"your list holds indices outside 0 .. {len(vectors) - 1} ({where}).")
        expected = set(find_near_duplicates(vectors, threshold))
        found = set(pairs)
        if found == expected:
            continue
        scales = 10.0 ** rng.uniform(-1, 1, size=(len(vectors), 1))  # the cosine does not change with the lengths
        rescaled = set(_as_pairs(candidate(vectors * scales, threshold)))
        _explain_pairs(vectors, threshold, found, expected, where, lengths_count=rescaled != found)
    orthogonal = np.eye(3) * np.array([[1.0], [5.0], [0.2]])
    pairs = _as_pairs(candidate(orthogonal, 0.5))
    if pairs:
        raise GradingFailure(f"three orthogonal vectors (cosine 0) gave {pairs}; there is no pair to find.")


register(
    Exercise(
        name="find_near_duplicates",
        lesson="06_your_data",
        signature="(vectors [N, D], threshold: float) -> list[tuple[int, int]]",
        reference=find_near_duplicates,
        grade=_grade_find_near_duplicates,
    )
)


# ---------------------------------------------------------------------------------------------
# folds_for (07_why_features_transfer): stratified k-fold cross-validation


def folds_for(labels, num_folds=5, seed=0):
    """A fold number for each image, each label's images dealt out evenly over the folds (stratified).

    Taught in notebooks/07_why_features_transfer.ipynb; ``tlcourse.your_data.folds_for`` is this function.
    """
    import numpy as np

    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))  # the label's images in a random order
        folds[members] = (np.arange(len(members)) + rng.integers(num_folds)) % num_folds  # dealt in turn
    return folds


def _fold_numbers(candidate, labels, num_folds, seed, where) -> np.ndarray:
    result = candidate(labels, num_folds, seed)
    try:
        folds = np.asarray(result)
    except (TypeError, ValueError):
        folds = np.asarray([], dtype=object)
    if folds.shape != labels.shape or not np.issubdtype(folds.dtype, np.integer):
        raise GradingFailure(
            f"folds_for(labels, {num_folds}, seed) returned {describe(result)} ({where}): return one integer fold "
            f"number per image, an array of the labels' length ({len(labels)}), e.g. folds[i] = 3 for an image "
            f"of fold 3."
        )
    if folds.min() < 0 or folds.max() >= num_folds:
        raise GradingFailure(
            f"the fold numbers run from {int(folds.min())} to {int(folds.max())} ({where}); with num_folds="
            f"{num_folds} they are 0 .. {num_folds - 1}, so that `folds == fold` for fold in range(num_folds) "
            f"selects every image once."
        )
    return folds


def _grade_folds_for(candidate, rng: np.random.Generator) -> None:
    sizes = [23, 7, 3, 1, 12, 40, 5]
    values = rng.permutation(len(sizes))
    interleaved = np.repeat(values, sizes)[rng.permutation(sum(sizes))].astype(np.int64)
    in_folder_order = np.sort(interleaved)  # a folder scan lists the images label by label
    seed = int(rng.integers(10**6))
    for labels, order in ((interleaved, "labels in a random order"), (in_folder_order, "labels in folder order")):
        for num_folds in (5, 3):
            where = f"{len(labels)} images of {len(sizes)} labels ({', '.join(map(str, sizes))} each), {order}"
            folds = _fold_numbers(candidate, labels, num_folds, seed, f"{where}, num_folds={num_folds}")
            for value in np.unique(labels):
                per_fold = np.bincount(folds[labels == value], minlength=num_folds)
                if per_fold.max() - per_fold.min() <= 1:
                    continue
                count = int(per_fold.sum())
                if all(len(np.unique(folds[labels == v])) == 1 for v in np.unique(labels)):
                    raise GradingFailure(
                        f"each label's images all went to one fold ({where}, num_folds={num_folds}): a layer "
                        f"trained on the other folds then never sees that label. Deal each label's images out over "
                        f"all the folds."
                    )
                overall = np.bincount(folds, minlength=num_folds)
                dealt_at_once = (
                    " Your folds are even overall, so you dealt all the images at once; deal each label's separately."
                    if overall.max() - overall.min() <= 1
                    else ""
                )
                raise GradingFailure(
                    f"label {int(value)}'s {count} images went to the {num_folds} folds as {per_fold.tolist()} "
                    f"({where}): each fold should hold {count // num_folds} or {-(-count // num_folds)} of them "
                    f"(stratified folds), or a small label can be missing from a fold's training images or its "
                    f"test images.{dealt_at_once} Shuffle each label's images with the generator, then give them "
                    f"fold numbers in turn, 0, 1, ..., num_folds - 1, 0, 1, ..."
                )
    where = f"{len(interleaved)} images, num_folds=5"
    first = _fold_numbers(candidate, interleaved, 5, seed, where)
    again = _fold_numbers(candidate, interleaved, 5, seed, where)
    other = _fold_numbers(candidate, interleaved, 5, seed + 1, where)
    if not np.array_equal(first, again) or np.array_equal(first, other):
        raise GradingFailure(
            (
                "two calls with the same seed gave different folds"
                if not np.array_equal(first, again)
                else "seeds " + f"{seed} and {seed + 1} gave the same folds"
            )
            + f" ({where}): shuffle with rng = np.random.default_rng(seed), so that the same seed repeats the "
            f"folds and another seed deals them anew (cross-validation is then repeatable, and can be repeated "
            f"with other folds)."
        )


register(
    Exercise(
        name="folds_for",
        lesson="07_why_features_transfer",
        signature="(labels [N], num_folds: int, seed: int) -> fold numbers [N] in 0 .. num_folds - 1",
        reference=folds_for,
        grade=_grade_folds_for,
    )
)
