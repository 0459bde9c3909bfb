import dataclasses

import numpy as np
import pytest

from tlcourse import many_classes, pipeline, train
from tlcourse.data import scan_dataset


def evaluation(labels, predictions, probabilities=None, names=("a", "b", "c")):
    labels, predictions = np.array(labels), np.array(predictions)
    if probabilities is None:
        probabilities = np.eye(len(names))[predictions]
    return train.Evaluation(list(names), labels, predictions, np.asarray(probabilities), [None] * len(labels))


def test_top_k_accuracy_counts_the_true_label_among_the_k_best():
    probabilities = [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]
    result = evaluation([0, 1, 2], [0, 0, 0], probabilities)
    assert result.accuracy == pytest.approx(1 / 3)
    assert many_classes.top_k_accuracy(result, 2) == pytest.approx(2 / 3)
    assert many_classes.top_k_accuracy(result, 3) == 1.0


def test_most_confused_pairs_are_ranked_by_count():
    result = evaluation([0, 0, 0, 1, 2, 2], [1, 1, 0, 2, 2, 0])
    assert many_classes.most_confused_pairs(result, 2) == [
        ("a", "b", 2),
        ("b", "c", 1),
    ] or many_classes.most_confused_pairs(result, 2) == [("a", "b", 2), ("c", "a", 1)]
    assert all(count > 0 for _, _, count in many_classes.most_confused_pairs(result, 10))
    assert len(many_classes.most_confused_pairs(result, 10)) == 3


def test_restrict_and_subsets_keep_the_split(tmp_path):
    from tests.test_retrain import noise_dataset

    dataset = scan_dataset(noise_dataset(tmp_path / "d", labels=tuple("abcdef"), per_label=12))
    chosen = many_classes.class_subset(dataset, 3, seed=1)
    assert chosen == many_classes.class_subset(dataset, 3, seed=1) and len(chosen) == 3
    smaller = many_classes.restrict(dataset, chosen)
    assert smaller.class_names == chosen
    before = {r.path: r.split for r in dataset.images}
    assert all(before[r.path] == r.split for r in smaller.images)
    with pytest.raises(ValueError, match="only 6"):
        many_classes.class_subset(dataset, 7)


def test_a_recipe_runs_and_reports_what_it_measured(tmp_path, stamps_dir):
    experiment = many_classes.Experiment(scan_dataset(stamps_dir), tmp_path / "bn")
    config = dataclasses.replace(many_classes.TUNED, how_many_training_steps=200)
    result, test = experiment.run("efficientnet_lite0", pipeline.HeadRecipe("tuned", config, many_classes.L2_GRID))
    assert result.name == "tuned" and result.num_classes == 5 and result.accuracy == test.accuracy > 0.6
    assert result.top5_accuracy == 1.0  # five labels: the true one is always in the top 5
    assert result.settings["l2"] in many_classes.L2_GRID


def result(name, validation, correct, **extra):
    return many_classes.RecipeResult(
        name=name,
        backbone="efficientnet_lite0",
        num_classes=3,
        accuracy=correct.count("1") / len(correct),
        top5_accuracy=1.0,
        train_accuracy=1.0,
        validation_accuracy=validation,
        seconds=0.0,
        settings={},
        test_correct=correct,
        **extra,
    )


def test_the_recipe_is_chosen_on_validation_never_on_test():
    best_on_test = result("lucky on test", validation=0.60, correct="1111111111")
    best_on_validation = result("better on validation", validation=0.70, correct="1111100000")
    assert many_classes.choose_on_validation([best_on_test, best_on_validation]) is best_on_validation
    tie = result("a later tie", validation=0.70, correct="1111111111")
    assert many_classes.choose_on_validation([best_on_validation, tie]) is best_on_validation  # the simpler row


def test_results_carry_their_per_image_correctness_and_interval():
    a = result("a", 0.5, "1" * 60 + "0" * 40)
    b = result("b", 0.5, "1" * 61 + "0" * 39)
    interval = a.interval()
    assert interval.correct == 60 and interval.total == 100 and interval.low < 0.6 < interval.high
    assert not many_classes.compare(a, b).significant  # one image in a hundred is noise
    again = many_classes.RecipeResult.from_json({**a.to_json(), "something new": 1})
    assert again == a and again.correct.sum() == 60


def _changed(recipe: pipeline.HeadRecipe) -> set[str]:
    """The settings a head recipe changes from ``TrainConfig``'s defaults (and whether it tunes its L2)."""
    config, default = recipe.config, train.TrainConfig()
    changed = {f.name for f in dataclasses.fields(default) if getattr(config, f.name) != getattr(default, f.name)}
    return changed | ({"l2_grid"} if recipe.l2_grid else set())


def test_the_ladder_adds_one_idea_at_a_time_on_one_backbone():
    names = list(many_classes.LADDER)
    assert {row.backbone for row in many_classes.LADDER.values()} == {"efficientnet_lite0"}
    assert all(name == row.recipe.name for name, row in many_classes.RECIPES.items())
    for previous, name in zip(names[:-1], names[1:], strict=True):
        assert many_classes.CHANGES_FROM[name] == previous
        before, after = many_classes.LADDER[previous].recipe, many_classes.LADDER[name].recipe
        assert _changed(before) <= _changed(after), f"{name} drops a setting of {previous}"
        assert dataclasses.replace(before, name=name) != after, f"{name} changes nothing"
    # the rows that change the features are not rungs of the ladder
    assert not set(many_classes.OTHER_FEATURES) & set(many_classes.LADDER)
    lite2 = next(name for name, row in many_classes.OTHER_FEATURES.items() if row.backbone.endswith("lite2"))
    base = many_classes.CHANGES_FROM[lite2]
    assert many_classes.RECIPES[lite2].backbone != many_classes.RECIPES[base].backbone
    assert dataclasses.replace(many_classes.RECIPES[lite2].recipe, name=base) == many_classes.RECIPES[base].recipe


def test_a_measured_row_keeps_the_l2_it_chose():
    row = many_classes.RECIPES["+ tuned L2"]
    fixed = many_classes.as_measured(row, {"l2": 1e-3})
    assert fixed.backbone == row.backbone and fixed.recipe.l2_grid == () and fixed.recipe.config.l2 == 1e-3
    assert dataclasses.replace(fixed.recipe.config, l2=row.recipe.config.l2) == row.recipe.config
    tutorial = many_classes.RECIPES["tutorial"]
    assert many_classes.as_measured(tutorial, {"l2": 0.5}) == tutorial  # chose nothing: nothing to fix


def test_the_labels_curve_draws_several_subsets_per_size(tmp_path, stamps_dir):
    experiment = many_classes.Experiment(scan_dataset(stamps_dir), tmp_path / "bn")
    quick = pipeline.HeadRecipe("quick", dataclasses.replace(many_classes.TUTORIAL, how_many_training_steps=50))
    recipes = {"quick": many_classes.Row("efficientnet_lite0", quick)}
    curve = experiment.accuracy_vs_classes([2, 5], "quick", seeds=(0, 1, 2), recipes=recipes)
    assert [(r.num_classes, r.subset_seed) for r in curve] == [(2, 0), (2, 1), (2, 2), (5, 0)]
    assert all(len(r.correct) == len(r.test_correct) > 0 for r in curve)
