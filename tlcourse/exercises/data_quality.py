"""Exercises of the lesson on your own data (05): finding near-duplicate images by their bottlenecks."""

from __future__ import annotations

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, describe, register


def find_near_duplicates(vectors, threshold):
    """Every pair (i, j), i < j, of rows whose cosine similarity is at least ``threshold``.

    Taught in notebooks/05_your_data.ipynb.
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
        cosines = _cosines(vectors)
        dots = vectors @ vectors.T
        lengths = np.linalg.norm(vectors, axis=1)
        missing, extra = sorted(expected - found), sorted(found - expected)
        if all(dots[i, j] >= threshold for i, j in extra) and all(dots[i, j] < threshold for i, j in missing):
            i, j = max(missing or extra, key=lambda pair: abs(np.log(lengths[pair[0]] / lengths[pair[1]])))
            raise GradingFailure(
                f"vectors {i} (length {lengths[i]:.3g}) and {j} (length {lengths[j]:.3g}) have cosine similarity "
                f"{cosines[i, j]:.4f} but dot product {dots[i, j]:.4g}, and your list "
                f"{'misses' if (i, j) in missing else 'holds'} them ({where}): use cosine: divide by the lengths, "
                f"(a @ b) / (|a| |b|), so that only the directions count."
            )
        if not extra and all(cosines[i, j] == threshold for i, j in missing):
            i, j = missing[0]
            raise GradingFailure(
                f"vectors {i} and {j} have a cosine similarity of exactly {threshold}, the threshold, and your list "
                f"misses them: 'at least threshold' means >=, not >."
            )
        if missing:
            i, j = missing[0]
            raise GradingFailure(
                f"vectors {i} and {j} have cosine similarity {cosines[i, j]:.4f} >= {threshold} but your list misses "
                f"them ({where}; {len(missing)} missing, {len(extra)} extra)."
            )
        i, j = extra[0]
        raise GradingFailure(
            f"your list holds vectors {i} and {j}, whose cosine similarity is only {cosines[i, j]:.4f} < {threshold} "
            f"({where}; {len(extra)} pairs too many)."
        )
    orthogonal = np.eye(3) * np.array([[1.0], [5.0], [0.2]])
    pairs = _as_pairs(candidate(orthogonal, 0.5))
    if pairs:
        raise GradingFailure(f"three orthogonal vectors (cosine 0) gave {pairs}; there is no pair to find.")


register(
    Exercise(
        name="find_near_duplicates",
        lesson="05_your_data",
        signature="(vectors [N, D], threshold: float) -> list[tuple[int, int]]",
        reference=find_near_duplicates,
        grade=_grade_find_near_duplicates,
    )
)
