"""Exercise of the embeddings lesson (07): scoring an image search by precision@k and mean average precision."""

from __future__ import annotations

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, as_float, describe, register


def retrieval_scores(similarities, query_labels, index_labels, k):
    """Precision@k and mean average precision (mAP) of an image search.

    similarities: float array [Q, N]; similarities[q, i] says how alike query q and indexed image i
        are (higher: more alike). query_labels: int array [Q]; index_labels: int array [N].
    An indexed image is relevant to a query when it has the query's label. k: 1 <= k <= N.
    1. Rank each query's indexed images from the most similar to the least.
    2. precision@k of a query: the relevant images among its first k, divided by k (by k even when
       the query has fewer than k relevant images in the whole index).
    3. Average precision of a query: at each rank r (counted from 1) that holds a relevant image, the
       precision of the first r images; their mean over ALL the query's relevant images, down to the
       end of the ranking (not only the first k).
    4. A query whose label no indexed image has is left out of both means (it has nothing to find).
    Returns (precision_at_k, mean_average_precision): means over the queries, two floats.
    Taught in notebooks/08_embeddings.ipynb; tlcourse.embeddings.search_scores uses it.
    """
    import numpy as np

    similarities = np.asarray(similarities, dtype=float)
    order = np.argsort(-similarities, axis=1, kind="stable")  # most similar first
    relevant = np.asarray(index_labels)[order] == np.asarray(query_labels)[:, None]
    num_relevant = relevant.sum(axis=1)
    kept = num_relevant > 0
    relevant, num_relevant = relevant[kept], num_relevant[kept]
    precision_at_k = relevant[:, :k].sum(axis=1) / k
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision_at_rank = np.cumsum(relevant, axis=1) / ranks
    average_precision = (precision_at_rank * relevant).sum(axis=1) / num_relevant
    return float(precision_at_k.mean()), float(average_precision.mean())


# --- What a wrong answer would return, to name the mistake ------------------------------------------


def _parts(similarities, query_labels, index_labels, descending=True):
    order = np.argsort(-similarities if descending else similarities, axis=1, kind="stable")
    relevant = index_labels[order] == query_labels[:, None]
    precision_at_rank = np.cumsum(relevant, axis=1) / np.arange(1, relevant.shape[1] + 1)
    return relevant, relevant.sum(axis=1), precision_at_rank


def _precision_mistakes(similarities, query_labels, index_labels, k) -> dict[str, float]:
    relevant, count, _ = _parts(similarities, query_labels, index_labels)
    kept = count > 0
    hits = relevant[:, :k].sum(axis=1)
    ascending, _, _ = _parts(similarities, query_labels, index_labels, descending=False)
    return {
        "ascending": float((ascending[kept, :k].sum(axis=1) / k).mean()),
        "recall": float((hits[kept] / count[kept]).mean()),
        "fewer than k": float((hits[kept] / np.minimum(k, count[kept])).mean()),
        "empty queries": float((hits / k).mean()),
    }


def _average_precision_mistakes(similarities, query_labels, index_labels, k) -> dict[str, float]:
    relevant, count, precision = _parts(similarities, query_labels, index_labels)
    kept = count > 0
    r, c, p = relevant[kept], count[kept], precision[kept]
    ranks = np.arange(1, r.shape[1] + 1)
    in_top = r[:, :k].sum(axis=1)
    a_r, a_c, a_p = _parts(similarities, query_labels, index_labels, descending=False)
    return {
        "ascending": float(((a_p * a_r).sum(axis=1)[kept] / a_c[kept]).mean()),
        "all ranks": float(p.mean(axis=1).mean()),
        "cut at k": float(((p * r)[:, :k].sum(axis=1) / c).mean()),
        "cut at k, found": float(((p * r)[:, :k].sum(axis=1) / np.maximum(in_top, 1)).mean()),
        "empty queries": float(np.concatenate([(p * r).sum(axis=1) / c, np.zeros(int((~kept).sum()))]).mean()),
        "pooled": float((p * r).sum() / c.sum()),
        "rank from 0": float(((np.cumsum(r, axis=1) / (ranks + 1) * r).sum(axis=1) / c).mean()),
        "current left out": float((((np.cumsum(r, axis=1) - r) / ranks * r).sum(axis=1) / c).mean()),
        "divided by k": float(((p * r).sum(axis=1) / k).mean()),
    }


MESSAGES = {
    "ascending": "it ranks the LEAST similar images first: sort each row from the highest similarity down "
    "(np.argsort(-similarities, axis=1)).",
    "swapped": "the two numbers come back swapped: return (precision_at_k, mean_average_precision), in that order.",
    "recall": "precision@k is divided by the query's number of relevant images (that is recall@k); precision@k "
    "divides the relevant images among the first k by k.",
    "fewer than k": "for a query with fewer relevant images than k, precision@k is divided by that number instead "
    "of by k; precision@k always divides by k (so it cannot reach 1 for such a query).",
    "empty queries": "a query whose label no indexed image has is counted (as 0); leave such queries out of both "
    "means: there was nothing for them to find.",
    "all ranks": "average precision averages the precision at EVERY rank; take it only at the ranks that hold a "
    "relevant image, and average over the relevant images.",
    "cut at k": "average precision stops at the first k images; it runs down the whole ranking and is divided by "
    "all of the query's relevant images (k is for precision@k only).",
    "cut at k, found": "average precision stops at the first k images; it runs down the whole ranking and is "
    "divided by all of the query's relevant images (k is for precision@k only).",
    "pooled": "the precisions of all queries are pooled into one average, so a query with many relevant images "
    "weighs more; take each query's average precision first, then the mean over the queries.",
    "rank from 0": "the precision at a rank is off by one: the first image is rank 1, and the precision at rank r "
    "is (relevant images among the first r) / r.",
    "current left out": "the precision at rank r leaves out the relevant image AT rank r; count the first r images, "
    "the r-th included.",
    "divided by k": "average precision is divided by k; divide it by the query's number of relevant images.",
}


# --- Cases ------------------------------------------------------------------------------------------


def _similarities_from_ranks(rng, rankings: list[list[int]]) -> np.ndarray:
    """Similarities (distinct, in [-1, 1]) for which query q ranks index image ``rankings[q][r]`` at rank r + 1."""
    num_index = len(rankings[0])
    values = np.sort(rng.uniform(-1.0, 1.0, (len(rankings), num_index)), axis=1)[:, ::-1]
    similarities = np.empty_like(values)
    for q, ranking in enumerate(rankings):
        similarities[q, ranking] = values[q]
    return similarities


def _hard_case(rng):
    """Relevant images beyond k, a query with fewer relevant images than k, different numbers of relevant
    images per query, and a query whose label the index lacks: where each classic mistake shows."""
    num_index, k = 12, 4
    index_labels = np.array([0] * 3 + [1] * 2 + [2] * 5 + [4] * 2)
    places = {0: [0, 4, 9], 1: [1, 2], 2: [0, 1, 3, 5, 11], 3: []}  # ranks (from 0) of each query's relevant images
    rankings = []
    for label, ranks in places.items():
        relevant = rng.permutation(np.flatnonzero(index_labels == label)).tolist()
        others = rng.permutation(np.flatnonzero(index_labels != label)).tolist()
        rankings.append([relevant.pop() if rank in ranks else others.pop() for rank in range(num_index)])
    columns = rng.permutation(num_index)  # the index in another order: positions tell nothing
    similarities = _similarities_from_ranks(rng, rankings)[:, columns]
    return similarities, np.array(list(places)), index_labels[columns], k


def _random_case(rng):
    num_queries, num_index, num_labels = int(rng.integers(5, 12)), int(rng.integers(15, 40)), int(rng.integers(2, 6))
    index_labels = rng.integers(0, num_labels, num_index)
    index_labels[:num_labels] = np.arange(num_labels)  # every label present
    query_labels = rng.integers(0, num_labels, num_queries)
    return rng.uniform(-1.0, 1.0, (num_queries, num_index)), query_labels, index_labels, int(rng.integers(1, num_index))


def _grade(candidate, rng):
    cases = [_hard_case(rng)] + [_random_case(rng) for _ in range(5)]
    for similarities, query_labels, index_labels, k in cases:
        expected = retrieval_scores(similarities, query_labels, index_labels, k)
        result = candidate(similarities, query_labels, index_labels, k)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GradingFailure(
                f"retrieval_scores should return two numbers, (precision_at_k, mean_average_precision); "
                f"got {describe(result)}."
            )
        got = (as_float(result[0], "precision_at_k"), as_float(result[1], "mean_average_precision"))
        if np.allclose(got, expected, atol=1e-6):
            continue
        where = (
            f"on {len(query_labels)} queries against {len(index_labels)} indexed images, k = {k} "
            f"(query labels {query_labels.tolist()}, index labels {index_labels.tolist()})"
        )
        if np.allclose(got, expected[::-1], atol=1e-6):
            raise GradingFailure(f"{MESSAGES['swapped']} ({where})")
        for name, wrong in _wrong_answers(similarities, query_labels, index_labels, k, expected):
            if not np.allclose(wrong, expected, atol=1e-6) and np.allclose(got, wrong, atol=1e-6):
                raise GradingFailure(f"{_came_out(got, expected)}: {MESSAGES[name]} ({where})")
        raise GradingFailure(
            f"{_came_out(got, expected)} {where}. Check each step of the docstring on one query by hand "
            f"(the grader cannot tell which step differs)."
        )


def _came_out(got, expected) -> str:
    return (
        f"(precision@k, mean average precision) came out ({got[0]:.4f}, {got[1]:.4f}) "
        f"instead of ({expected[0]:.4f}, {expected[1]:.4f})"
    )


def _wrong_answers(similarities, query_labels, index_labels, k, expected):
    """(mistake, the pair it returns): a mistake in one number leaves the other right."""
    precision, average = expected
    wrong_precision = _precision_mistakes(similarities, query_labels, index_labels, k)
    wrong_average = _average_precision_mistakes(similarities, query_labels, index_labels, k)
    pairs = [("ascending", (wrong_precision.pop("ascending"), wrong_average.pop("ascending")))]
    pairs.append(("empty queries", (wrong_precision["empty queries"], wrong_average["empty queries"])))
    pairs += [(name, (value, average)) for name, value in wrong_precision.items()]
    pairs += [(name, (precision, value)) for name, value in wrong_average.items()]
    return pairs


register(
    Exercise(
        name="retrieval_scores",
        lesson="08_embeddings",
        signature="(similarities [Q, N], query_labels [Q], index_labels [N], k) -> (precision_at_k, mean_ap)",
        reference=retrieval_scores,
        grade=_grade,
    )
)
