"""The image-search scoring exercise (lesson 08): the reference passes, plausible mistakes fail with their message."""

import numpy as np
import pytest

import tlcourse.exercises as exercises
from tlcourse.exercises import embeddings

NAME = "retrieval_scores"


def _ranked(similarities, query_labels, index_labels):
    """Each query's relevance, most similar first, the way a learner might write it: a loop over the rows."""
    rows = []
    for row, label in zip(similarities, query_labels, strict=True):
        order = np.argsort(row)[::-1]
        rows.append(np.asarray(index_labels)[order] == label)
    return rows


def _average_precision(relevant):
    hits, total = 0, 0.0
    for rank, is_relevant in enumerate(relevant, start=1):
        if is_relevant:
            hits += 1
            total += hits / rank
    return total / relevant.sum()


def written_with_loops(similarities, query_labels, index_labels, k):
    """A correct answer in another style."""
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    return np.mean([r[:k].sum() / k for r in rows]), np.mean([_average_precision(r) for r in rows])


def ascending(similarities, query_labels, index_labels, k):
    return embeddings.retrieval_scores(-np.asarray(similarities), query_labels, index_labels, k)


def swapped(similarities, query_labels, index_labels, k):
    return embeddings.retrieval_scores(similarities, query_labels, index_labels, k)[::-1]


def recall_at_k(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    return np.mean([r[:k].sum() / r.sum() for r in rows]), np.mean([_average_precision(r) for r in rows])


def divided_by_fewer_than_k(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    return np.mean([r[:k].sum() / min(k, r.sum()) for r in rows]), np.mean([_average_precision(r) for r in rows])


def empty_queries_count_as_zero(similarities, query_labels, index_labels, k):
    rows = _ranked(similarities, query_labels, index_labels)
    average = [_average_precision(r) if r.any() else 0.0 for r in rows]
    return np.mean([r[:k].sum() / k for r in rows]), np.mean(average)


def precision_at_every_rank(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    average = [np.mean(np.cumsum(r) / np.arange(1, len(r) + 1)) for r in rows]
    return np.mean([r[:k].sum() / k for r in rows]), np.mean(average)


def average_precision_at_k(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    average = [_average_precision(r[:k]) if r[:k].any() else 0.0 for r in rows]
    return np.mean([r[:k].sum() / k for r in rows]), np.mean(average)


def pooled_over_queries(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    total = sum((np.cumsum(r) / np.arange(1, len(r) + 1))[r].sum() for r in rows)
    return np.mean([r[:k].sum() / k for r in rows]), total / sum(r.sum() for r in rows)


def ranks_from_zero(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    average = []
    for r in rows:
        hits, total = 0, 0.0
        for rank, is_relevant in enumerate(r):
            if is_relevant:
                hits += 1
                total += hits / (rank + 2)  # "avoid dividing by zero"
        average.append(total / r.sum())
    return np.mean([r[:k].sum() / k for r in rows]), np.mean(average)


def hit_counted_after_its_rank(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    average = [((np.cumsum(r) - r) / np.arange(1, len(r) + 1))[r].sum() / r.sum() for r in rows]
    return np.mean([r[:k].sum() / k for r in rows]), np.mean(average)


def average_precision_over_k(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    average = [(np.cumsum(r) / np.arange(1, len(r) + 1))[r].sum() / k for r in rows]
    return np.mean([r[:k].sum() / k for r in rows]), np.mean(average)


def sorted_flat(similarities, query_labels, index_labels, k):
    """Sorts the whole matrix at once instead of each row."""
    similarities = np.asarray(similarities)
    order = np.argsort(-similarities, axis=None) % similarities.shape[1]
    order = order.reshape(similarities.shape)
    relevant = np.asarray(index_labels)[order] == np.asarray(query_labels)[:, None]
    kept = relevant.any(axis=1)
    return float(relevant[kept, :k].mean()), float(np.mean([_average_precision(r) for r in relevant[kept]]))


def first_k_minus_one(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    return np.mean([r[: k - 1].sum() / k for r in rows]), np.mean([_average_precision(r) for r in rows])


def per_query_arrays(similarities, query_labels, index_labels, k):
    rows = [r for r in _ranked(similarities, query_labels, index_labels) if r.any()]
    return np.array([r[:k].sum() / k for r in rows]), np.array([_average_precision(r) for r in rows])


MISTAKES = [
    (ascending, "LEAST similar images first"),
    (swapped, "come back swapped"),
    (recall_at_k, "that is recall@k"),
    (divided_by_fewer_than_k, "fewer relevant images than k"),
    (empty_queries_count_as_zero, "leave such queries out"),
    (precision_at_every_rank, "at EVERY rank"),
    (average_precision_at_k, "stops at the first k images"),
    (pooled_over_queries, "pooled into one average"),
    (ranks_from_zero, "off by one"),
    (hit_counted_after_its_rank, "the r-th included"),
    (average_precision_over_k, "is divided by k"),
    (sorted_flat, "cannot tell which step"),
    (first_k_minus_one, "cannot tell which step"),
    (per_query_arrays, "should be a single number"),
]


def test_registered_with_its_lesson():
    exercise = exercises.REGISTRY[NAME]
    assert exercise.lesson == "08_embeddings" and "notebooks/08_embeddings.ipynb" in exercise.reference.__doc__


@pytest.mark.parametrize("seed", range(10))
def test_the_pasted_reference_and_another_correct_style_pass(seed):
    namespace = {}
    exec(compile(exercises.reference_source(NAME), f"<{NAME}>", "exec"), namespace)  # no imports given
    assert exercises.grade(NAME, namespace[NAME], seed=seed).passed
    outcome = exercises.grade(NAME, written_with_loops, seed=seed)
    assert outcome.passed, outcome.message


@pytest.mark.parametrize(("wrong", "message"), MISTAKES, ids=[m[0].__name__ for m in MISTAKES])
def test_a_plausible_mistake_fails_with_its_message_on_every_seed(wrong, message):
    for seed in range(20):
        outcome = exercises.grade(NAME, wrong, seed=seed)
        assert outcome.status == "failed", (seed, outcome)
        assert message in outcome.message, (seed, outcome.message)


def test_the_reference_matches_a_hand_computed_search():
    # One query of label 1: ranked images have labels 1, 0, 1, 0 -> precision@2 = 1/2, AP = (1/1 + 2/3) / 2.
    similarities = np.array([[0.9, 0.8, 0.7, 0.1]])
    precision, average = embeddings.retrieval_scores(similarities, np.array([1]), np.array([1, 0, 1, 0]), 2)
    assert precision == pytest.approx(0.5) and average == pytest.approx((1 + 2 / 3) / 2)


def test_a_stub_is_not_written():
    def retrieval_scores(similarities, query_labels, index_labels, k):
        """A stub."""
        ...

    assert exercises.grade(NAME, retrieval_scores, seed=0).status == "not_written"
