"""The representative-dataset exercise (lesson 13): the reference passes, plausible mistakes fail with their message."""

import numpy as np
import pytest

import tlcourse.exercises as exercises
from tests import exercise_mistakes
from tests.exercise_mistakes import first_images, random_sample
from tlcourse import tflite
from tlcourse.exercises import deploy

NAME = "representative_dataset"


MISTAKES = exercise_mistakes.MISTAKES[NAME]


def test_registered_with_its_lesson():
    exercise = exercises.REGISTRY[NAME]
    assert (
        exercise.lesson == "13_deploy_to_phone" and "notebooks/13_deploy_to_phone.ipynb" in exercise.reference.__doc__
    )


@pytest.mark.parametrize("reference", [deploy.representative_dataset, tflite.representative_dataset])
def test_the_reference_and_the_package_function_pass(reference):
    for seed in range(5):
        outcome = exercises.grade(NAME, reference, seed=seed)
        assert outcome.passed, outcome.message


def test_the_pasted_reference_source_is_self_contained():
    namespace = {}
    exec(compile(exercises.reference_source(NAME), f"<{NAME}>", "exec"), namespace)  # no imports given
    assert exercises.grade(NAME, namespace[NAME], seed=3).passed


@pytest.mark.parametrize(("wrong", "message"), MISTAKES, ids=[m[0].__name__ for m in MISTAKES])
def test_a_plausible_mistake_fails_with_its_message(wrong, message):
    for seed in (11, 12, 13):
        outcome = exercises.grade(NAME, wrong, seed=seed)
        assert outcome.status == "failed", outcome
        assert message in outcome.message, outcome.message


def a_learners_random_sample(images, labels, num_samples):
    """What a learner might write: ``np.random.choice`` (the grader seeds ``np.random``)."""
    chosen = np.random.choice(len(images), min(num_samples, len(images)), replace=False)
    return lambda: ([images[index][None].astype(np.float32)] for index in chosen)


@pytest.mark.parametrize("sample", [random_sample, a_learners_random_sample])
def test_a_random_sample_fails_on_almost_every_seed(sample):
    """One folder's random sample is balanced about half the time; the grader's six folders rarely all are."""
    failed = [exercises.grade(NAME, sample, seed=seed).status == "failed" for seed in range(40)]
    assert sum(failed) >= 38, f"a random sample passed on {40 - sum(failed)} of 40 seeds"


def test_the_unbalanced_counts_message_blames_sorting_only_for_the_first_images():
    for seed in (11, 12):
        message = exercises.grade(NAME, random_sample, seed=seed).message
        assert "label counts [" in message and "sorted by label (a folder scan)" not in message, message
        message = exercises.grade(NAME, first_images, seed=seed).message
        assert "sorted by label (a folder scan), so the first" in message, message


def test_a_stub_is_not_written():
    def representative_dataset(images, labels, num_samples):
        """A stub."""
        ...

    assert exercises.grade(NAME, representative_dataset, seed=0).status == "not_written"
