"""One pipeline: recipes as configs, and a search that chooses on validation and never looks at test."""

import json

import numpy as np
import pytest

from tests.test_retrain import config_for, small_stamps
from tlcourse import data, finetune, pipeline, retrain, train
from tlcourse.images import load_image


@pytest.fixture(scope="module")
def small(stamps_dir, tmp_path_factory):
    return data.scan_dataset(small_stamps(stamps_dir, tmp_path_factory.mktemp("images"), per_label=10))


def test_the_search_chooses_on_validation_and_never_looks_at_test(small, lite0, tmp_path, monkeypatch):
    splits_evaluated = []
    evaluate = pipeline.Trained.evaluate
    monkeypatch.setattr(
        pipeline.Trained, "evaluate", lambda self, split: splits_evaluated.append(split) or evaluate(self, split)
    )
    untrained = pipeline.HeadRecipe("one tiny step", train.TrainConfig(how_many_training_steps=1, learning_rate=1e-9))
    trained = pipeline.HeadRecipe("trained", train.TrainConfig(how_many_training_steps=300))
    search = pipeline.search([untrained, trained], small, lite0, tmp_path / "bn", progress=False)
    assert search.chosen.name == "trained"
    rows = search.table()
    assert [row["chosen"] for row in rows] == [False, True]
    assert rows[1]["validation_accuracy"] > rows[0]["validation_accuracy"]
    assert set(splits_evaluated) == {"validation"}
    assert "<- chosen" in str(search).splitlines()[2]


def test_ties_go_to_the_earlier_cheaper_recipe(small, lite0, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "validation_accuracy", lambda trained: pipeline.stats.Interval(0.5, 0.2, 0.8, 1, 2))
    same = train.TrainConfig(how_many_training_steps=50)
    recipes = [pipeline.HeadRecipe("first", same), pipeline.HeadRecipe("second", same)]
    search = pipeline.search(recipes, small, lite0, tmp_path, 60, False)
    assert [t.name for t in search.trained] == ["first", "second"] and search.chosen.name == "first"


def test_a_spent_budget_skips_the_later_recipes_but_runs_the_first(small, lite0, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "validation_accuracy", lambda trained: pipeline.stats.Interval(0.5, 0.2, 0.8, 1, 2))
    recipes = [pipeline.HeadRecipe(name, train.TrainConfig(how_many_training_steps=20)) for name in ("a", "b")]
    search = pipeline.search(recipes, small, lite0, tmp_path, time_budget_minutes=1e-6, progress=False)
    assert [t.name for t in search.trained] == ["a"] and list(search.skipped) == ["b"]
    assert "not run: the time budget" in str(search)


def test_no_recipe_runs_after_one_that_is_right_on_every_validation_image(small, lite0, tmp_path, monkeypatch):
    perfect = pipeline.stats.Interval(1.0, 0.7, 1.0, 3, 3)
    monkeypatch.setattr(pipeline, "validation_accuracy", lambda trained: perfect)
    recipes = [pipeline.HeadRecipe(name, train.TrainConfig(how_many_training_steps=20)) for name in ("a", "b")]
    search = pipeline.search(recipes, small, lite0, tmp_path, progress=False)
    assert [t.name for t in search.trained] == ["a"] and "right on every validation image" in search.skipped["b"]


def test_the_l2_penalty_is_chosen_on_validation_from_the_grid(small, lite0, tmp_path):
    recipe = pipeline.HeadRecipe("tuned", train.TrainConfig(how_many_training_steps=100), (0.0, 10.0))
    trained = pipeline.run(recipe, small, lite0, tmp_path, progress=False)
    scores = trained.notes["l2_validation_accuracy"]
    assert set(scores) == {0.0, 10.0} and trained.settings["l2"] == max(scores, key=lambda l2: (scores[l2], l2))


def test_search_needs_validation_images(small, lite0, tmp_path):
    none = data.scan_dataset(small.root, validation_percentage=0)
    with pytest.raises(ValueError, match="validation"):
        pipeline.search([pipeline.HeadRecipe("a", train.TrainConfig())], none, lite0, tmp_path)


@pytest.mark.slow
def test_retrain_auto_writes_the_table_and_the_model_it_chose(stamps_dir, tmp_path, capsys):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=10)
    settings = config_for(tmp_path, image_dir, recipe="auto", fine_tune_epochs=1, fine_tune_blocks=1)
    result = retrain.retrain(settings, progress=False)
    report = json.loads((tmp_path / "out" / "g.report.json").read_text())
    tried, skipped = report["recipe_search"]["tried"], report["recipe_search"]["skipped"]
    heads = [row for row in tried if "fine-tuned" not in row["recipe"]]  # the stamps are easy: maybe only one
    fit = max(heads, key=lambda row: (row["validation_accuracy"], -tried.index(row)))["settings"]["fit"]
    assert [row["settings"]["fit"] for row in heads] == ["crop", "crop", "pad"][: len(heads)]
    assert [row["recipe"] for row in tried] + list(skipped) == [
        "new layer, as the flags say",
        "tuned new layer (L2 chosen on validation)",
        "tuned new layer (L2 chosen on validation), whole image padded",
        "top 1 blocks fine-tuned" + pipeline.FIT_NAMES[fit],
        "top 1 blocks fine-tuned, averaged with the tuned new layer" + pipeline.FIT_NAMES[fit],
    ]
    chosen = max(tried, key=lambda row: (row["validation_accuracy"], -tried.index(row)))
    assert [row["chosen"] for row in tried] == [row is chosen for row in tried]
    assert report["recipe"]["name"] == chosen["recipe"]
    assert result.final_validation_accuracy == pytest.approx(chosen["validation_accuracy"])
    printed = capsys.readouterr().out
    assert "chosen on validation: " + chosen["recipe"] in printed and "Final validation accuracy" in printed


def test_an_averaged_recipe_reuses_its_members_and_chooses_the_weight_on_validation(
    small, lite0, tmp_path, monkeypatch
):
    # The whole images padded (the stamps are not square): the exported model must pad them too.
    head = pipeline.HeadRecipe("head", train.TrainConfig(how_many_training_steps=50), fit="pad")
    config = finetune.FineTuneConfig(blocks=1, epochs=1, num_distorted_variants=0)
    tuned = pipeline.FineTuneRecipe("tuned", config, fit=None)  # takes the best new layer's fit
    averaged = pipeline.AveragedRecipe(
        "averaged", head, (tuned,), head_weights=(0.1, 0.3)
    )  # neither is 0.5: a swap would show
    # Stamps are easy: a perfect first recipe would stop the search (tested above), so every recipe scores alike.
    monkeypatch.setattr(pipeline, "validation_accuracy", lambda trained: pipeline.stats.Interval(0.5, 0.2, 0.8, 1, 2))
    calls = []
    fine_tune = pipeline.FineTuneRecipe.train
    monkeypatch.setattr(
        pipeline.FineTuneRecipe, "train", lambda self, *a, **k: calls.append(1) or fine_tune(self, *a, **k)
    )
    search = pipeline.search([head, tuned, averaged], small, lite0, tmp_path, progress=False)
    padded = pipeline.FIT_NAMES["pad"]
    assert [t.name for t in search.trained] == ["head", "tuned" + padded, "averaged" + padded] and len(calls) == 1
    assert {t.fit for t in search.trained} == {"pad"}
    first, second, result = search.trained
    weight = result.notes["head_weight"]
    scores = result.notes["validation_accuracy_by_head_weight"]
    assert weight == max(scores, key=lambda w: (scores[w], -w))
    # The averaged model is the weighted sum of its members' probabilities, on the same images.
    validation = result.splits["validation"]
    frozen = first.classifier.predict(
        finetune.bottlenecks_through_top(finetune.split_backbone(lite0, 1)[1], validation).vectors, verbose=0
    )
    expected = weight * frozen + (1 - weight) * second.classifier.predict(validation.vectors, verbose=0)
    np.testing.assert_allclose(result.classifier.predict(validation.vectors, verbose=0), expected, atol=1e-5)
    assert scores[weight] == pytest.approx(np.mean(expected.argmax(1) == validation.labels))
    # What retrain writes (raw images in, preprocessing inside) gives the same probabilities.
    image = load_image(validation.records[0].path)
    assert image.shape[0] != image.shape[1]
    np.testing.assert_allclose(result.exported(lite0)(image[None]).numpy()[0], expected[0], atol=1e-4)


def test_an_averaged_recipe_is_skipped_when_a_member_did_not_run(small, lite0, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "validation_accuracy", lambda trained: pipeline.stats.Interval(0.5, 0.2, 0.8, 1, 2))
    head = pipeline.HeadRecipe("head", train.TrainConfig(how_many_training_steps=20))
    tuned = pipeline.FineTuneRecipe("tuned", finetune.FineTuneConfig(blocks=1, epochs=1))
    averaged = pipeline.AveragedRecipe("averaged", head, (tuned,))
    search = pipeline.search([head, averaged], small, lite0, tmp_path, progress=False)
    assert [t.name for t in search.trained] == ["head"] and "did not all run" in search.skipped["averaged"]


def test_a_recipe_left_to_choose_its_fit_takes_the_best_new_layers():
    def trained(fit, whole_network=False):
        return pipeline.Trained("t", None, None, {}, [], 0.0, {}, whole_network=whole_network, fit=fit)

    def interval(value):
        return pipeline.stats.Interval(value, value, value, 1, 1)

    assert pipeline.best_fit([], []) == "crop"
    heads = [trained("crop"), trained("pad"), trained("crop", whole_network=True)]
    assert pipeline.best_fit(heads, [interval(0.5), interval(0.6), interval(0.9)]) == "pad"  # fine-tuning not counted
    assert pipeline.best_fit(heads[:2], [interval(0.6), interval(0.6)]) == "crop"  # ties: the earlier
    averaged = pipeline.AveragedRecipe(
        "avg",
        pipeline.HeadRecipe("h", train.TrainConfig()),
        (pipeline.FineTuneRecipe("f", finetune.FineTuneConfig(), fit=None),),
    )
    assert averaged.fit is None
    padded = averaged.with_fit("pad")
    assert padded.fit == "pad" and [m.name for m in padded.members()] == [
        "h, whole image padded",
        "f, whole image padded",
    ]
