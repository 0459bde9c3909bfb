"""The Keras training-loop exercise (lesson 03): the reference and other correct answers pass, plausible mistakes fail
with their message.

Each grade trains a few small Keras models (one to a few seconds), so the suite grades the pasted reference on two
seeds and every other answer on one, a different seed for each (11, 12, ...); the verdicts rest on fixed cases (a
label of 24 vectors beside one of 120; validation labels that disagree with the training ones), not on the seed.
``TLCOURSE_GRADER_SEEDS=0-9`` grades every answer on each of those seeds instead (the sweep to run after changing
the grader: about 300 grades). Marked slow.
"""

import os

import pytest

import tlcourse.exercises as exercises
from tests import exercise_mistakes

pytestmark = pytest.mark.slow

NAME = "train_keras_layer"
MISTAKES = exercise_mistakes.MISTAKES[NAME]
CORRECT = exercise_mistakes.CORRECT[NAME]


def _seeds(index: int) -> tuple[int, ...]:
    """The seeds an answer is graded on: ``TLCOURSE_GRADER_SEEDS`` ("FIRST-LAST"), or one of its own."""
    sweep = os.environ.get("TLCOURSE_GRADER_SEEDS", "")
    if sweep:
        first, _, last = sweep.partition("-")
        return tuple(range(int(first), int(last or first) + 1))
    return (11 + index,)


def _pasted_reference():
    namespace = {}
    exec(compile(exercises.reference_source(NAME), f"<{NAME}>", "exec"), namespace)  # no imports given
    return namespace[NAME]


def test_registered_with_its_lesson():
    exercise = exercises.REGISTRY[NAME]
    assert exercise.lesson == "03_retrain" and "notebooks/03_retrain.ipynb" in exercise.reference.__doc__


def test_the_pasted_reference_passes():
    function = _pasted_reference()
    for seed in sorted({*_seeds(0), *_seeds(1)}):
        outcome = exercises.grade(NAME, function, seed=seed)
        assert outcome.passed, (seed, outcome.message)


@pytest.mark.parametrize("index", range(len(CORRECT)), ids=[f.__name__ for f in CORRECT])
def test_a_correct_answer_written_another_way_passes(index):
    for seed in _seeds(index):
        outcome = exercises.grade(NAME, CORRECT[index], seed=seed)
        assert outcome.passed, (seed, outcome.message)


@pytest.mark.parametrize("index", range(len(MISTAKES)), ids=[m[0].__name__ for m in MISTAKES])
def test_a_plausible_mistake_fails_with_its_message(index):
    wrong, message = MISTAKES[index]
    for seed in _seeds(index):
        outcome = exercises.grade(NAME, wrong, seed=seed)
        assert outcome.status == "failed", (seed, outcome)
        assert message in outcome.message, (seed, outcome.message)


def test_fit_is_restored_after_grading_even_when_the_learner_raises():
    import keras

    original = keras.Model.fit

    def train_keras_layer(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
        model = keras.Sequential([keras.Input((train_vectors.shape[1],)), keras.layers.Dense(num_classes)])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(train_vectors, train_labels[:3], verbose=0)  # raises: 3 labels for all the vectors
        return model

    outcome = exercises.grade(NAME, train_keras_layer, seed=0)
    assert outcome.status == "error" and "raised ValueError" in outcome.message
    assert keras.Model.fit is original


def test_a_stub_is_not_written():
    def train_keras_layer(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
        """A stub."""
        ...

    assert exercises.grade(NAME, train_keras_layer, seed=0).status == "not_written"
