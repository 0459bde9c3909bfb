"""The fine-tuning exercise (lesson 10): the reference passes, plausible mistakes fail with their message."""

import numpy as np
import pytest

import tlcourse.exercises as exercises
from tests import exercise_mistakes
from tlcourse import finetune
from tlcourse.exercises import finetuning

NAME = "freeze_for_fine_tuning"


MISTAKES = exercise_mistakes.MISTAKES[NAME]


def test_registered_with_its_lesson():
    exercise = exercises.REGISTRY[NAME]
    assert exercise.lesson == "10_fine_tuning" and "notebooks/10_fine_tuning.ipynb" in exercise.reference.__doc__


@pytest.mark.parametrize("reference", [finetuning.freeze_for_fine_tuning, finetune.freeze_for_fine_tuning])
def test_the_reference_and_the_package_function_pass(reference):
    outcome = exercises.grade(NAME, reference, seed=1)
    assert outcome.passed, outcome.message


def test_the_pasted_reference_source_is_self_contained():
    namespace = {}
    exec(compile(exercises.reference_source(NAME), f"<{NAME}>", "exec"), namespace)  # no imports given
    assert exercises.grade(NAME, namespace[NAME], seed=3).passed


@pytest.mark.parametrize(("wrong", "message"), MISTAKES, ids=[m[0].__name__ for m in MISTAKES])
def test_a_plausible_mistake_fails_with_its_message(wrong, message):
    outcome = exercises.grade(NAME, wrong, seed=11)
    assert outcome.status == "failed", outcome
    assert message in outcome.message, outcome.message


def test_a_stub_is_not_written():
    def freeze_for_fine_tuning(model, num_blocks):
        """A stub."""
        ...

    assert exercises.grade(NAME, freeze_for_fine_tuning, seed=0).status == "not_written"


def test_warmup_cosine_is_the_package_schedule():
    """One formula: the reference (numpy) and the recipe's WarmupCosine (Keras tensors) agree at every step."""
    settings = [(1e-3, 100, 10), (1e-2, 40, 0), (5e-3, 4, 3), (0.3, 1, 0), (2e-4, 2, 1), (1e-3, 10000, 500)]
    settings += [(1e-3, total, int(0.05 * total)) for total in (7, 19, 20, 21, 160, 1234)]  # fine_tune's warm-up
    for peak, total, warmup in settings:
        steps = np.arange(0, int(1.3 * total) + 3)
        schedule = finetune.WarmupCosine(peak, total, warmup)
        package = np.array([float(schedule(int(step))) for step in steps])
        assert np.allclose(finetuning.warmup_cosine(steps, peak, total, warmup), package, rtol=1e-5, atol=1e-7 * peak)
        assert finetuning.warmup_cosine(warmup, peak, total, warmup) == pytest.approx(peak)
        assert finetuning.warmup_cosine(total, peak, total, warmup) == 0.0
        assert isinstance(finetuning.warmup_cosine(int(steps[-1]), peak, total, warmup), float)
