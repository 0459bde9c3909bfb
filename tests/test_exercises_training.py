"""The Keras training-loop exercise (lesson 03): the reference and other correct answers pass, plausible mistakes fail
with their message.

Each grade trains a few small Keras models (seconds each), so the suite grades two seeds; the verdicts rest on fixed
cases (a label of 6 vectors beside one of 30; validation labels that disagree with the training ones), not on the
seed. Marked slow: about three minutes on a loaded 2-core machine.
"""

import pytest

import tlcourse.exercises as exercises
from tests import exercise_mistakes

pytestmark = pytest.mark.slow

NAME = "train_keras_layer"
MISTAKES = exercise_mistakes.MISTAKES[NAME]
CORRECT = exercise_mistakes.CORRECT[NAME]
SEEDS = (11, 12)


def _pasted_reference():
    namespace = {}
    exec(compile(exercises.reference_source(NAME), f"<{NAME}>", "exec"), namespace)  # no imports given
    return namespace[NAME]


def test_registered_with_its_lesson():
    exercise = exercises.REGISTRY[NAME]
    assert exercise.lesson == "03_retrain" and "notebooks/03_retrain.ipynb" in exercise.reference.__doc__


@pytest.mark.parametrize("answer", [None, *CORRECT], ids=["pasted_reference", *[f.__name__ for f in CORRECT]])
def test_a_correct_answer_passes(answer):
    function = answer or _pasted_reference()
    for seed in SEEDS:
        outcome = exercises.grade(NAME, function, seed=seed)
        assert outcome.passed, (function.__name__, seed, outcome.message)


@pytest.mark.parametrize(("wrong", "message"), MISTAKES, ids=[m[0].__name__ for m in MISTAKES])
def test_a_plausible_mistake_fails_with_its_message(wrong, message):
    for seed in SEEDS:
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
