"""The fine-tuning exercise (lesson 09): the reference passes, plausible mistakes fail with their message."""

import re

import keras
import numpy as np
import pytest

import tlcourse.exercises as exercises
from tests import exercise_mistakes
from tlcourse import finetune
from tlcourse.exercises import finetuning

NAME = "freeze_for_fine_tuning"


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _block(layer):
    match = re.match(r"blocks\.(\d+)\.", layer.name)
    return int(match.group(1)) if match else None


def unfreeze_everything(model, num_blocks):
    model.trainable = True
    for layer in _layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def batch_norms_left_trainable(model, num_blocks):
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
    for layer in _layers(model):
        if not isinstance(layer, keras.Model):
            layer.trainable = layer.name == "final_result"


def flat_layers_only(model, num_blocks):
    """Forgets that the backbone may be nested: looks at ``model.layers`` only."""
    if any(_block(layer) is not None for layer in model.layers):
        finetuning.freeze_for_fine_tuning(model, num_blocks)  # right on a flat model
    else:  # sees no blocks: only the new layer is set, the nested backbone is left as it was
        model.get_layer("final_result").trainable = True


MISTAKES = [
    (unfreeze_everything, "layers below the top"),
    (batch_norms_left_trainable, "Set trainable = False on every BatchNormalization layer"),
    (head_frozen, "the head must train"),
    (whole_model_frozen_last, "Did the function freeze the whole model"),
    (one_block_too_many, "layers below the top"),
    (one_block_too_few, "which must train"),
    (flat_layers_only, "nested"),
]


def test_registered_with_its_lesson():
    exercise = exercises.REGISTRY[NAME]
    assert exercise.lesson == "09_fine_tuning" and "notebooks/09_fine_tuning.ipynb" in exercise.reference.__doc__


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


# ------------------------------------------------------------------------------------------ warmup_cosine

SEEDS = range(25)
SCHEDULE_MISTAKES = exercise_mistakes.MISTAKES["warmup_cosine"]


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


def test_warmup_cosine_graded_right_on_every_seed():
    namespace = {}
    exec(compile(exercises.reference_source("warmup_cosine"), "<warmup_cosine>", "exec"), namespace)
    for seed in SEEDS:
        for function in [namespace["warmup_cosine"], *exercise_mistakes.CORRECT["warmup_cosine"]]:
            outcome = exercises.grade("warmup_cosine", function, seed=seed)
            assert outcome.passed, (seed, function.__name__, outcome.message)


@pytest.mark.parametrize(
    ("wrong", "message"), SCHEDULE_MISTAKES, ids=[wrong.__name__ for wrong, _ in SCHEDULE_MISTAKES]
)
def test_every_warmup_cosine_mistake_fails_with_its_message_on_every_seed(wrong, message):
    for seed in SEEDS:
        outcome = exercises.grade("warmup_cosine", wrong, seed=seed)
        assert outcome.status == "failed" and message in outcome.message, (wrong.__name__, seed, outcome.message)
