import dataclasses
import json

import keras
import numpy as np
import pytest

from tests.test_retrain import config_for, small_stamps
from tlcourse import backbones, bottlenecks, data, finetune, label, pipeline, retrain
from tlcourse.images import load_image


@pytest.fixture(scope="module")
def unfolded():
    return backbones.load_backbone("efficientnet_lite0", fold_batch_norms=False)


def test_the_unfolded_build_has_real_batch_norms_and_the_same_bottlenecks(lite0, unfolded, photo):
    assert len(finetune.batch_norm_layers(unfolded.network)) == 49  # stem, 1 + 15 x 3 in the blocks, head
    assert not finetune.batch_norm_layers(lite0.network)  # the folded build has none
    images = [load_image(photo(name)) for name in ("chelsea.png", "coffee.png")]
    for image in images:
        np.testing.assert_allclose(unfolded.bottlenecks(image), lite0.bottlenecks(image), atol=1e-4)
    assert unfolded.imagenet_top_k(images[1], 1)[0][0] == 967  # espresso, as the folded build says
    assert unfolded.fingerprint != lite0.fingerprint  # its own cache entries


@pytest.mark.parametrize("blocks", [1, 3])
def test_the_split_backbone_computes_the_same_bottleneck(lite0, unfolded, photo, blocks):
    lower, top = finetune.split_backbone(lite0, blocks, unfolded)
    assert finetune.batch_norm_layers(top)  # the trainable top has real batch norms
    images = backbones.preprocess_images(load_image(photo("chelsea.png"))[None], lite0.spec.preprocessing)
    activations = lower.network(images).numpy().reshape((1, *top.input.shape[1:]))
    np.testing.assert_allclose(top(activations).numpy(), lite0.network(images).numpy(), atol=1e-4)
    assert lower.fingerprint != lite0.fingerprint  # cached activations never pass for bottlenecks


def test_a_backbone_can_be_fine_tuned_when_its_spec_says_how_it_is_cut(monkeypatch, capsys):
    assert backbones.fine_tunable_names() == ["efficientnet_lite0", "efficientnet_lite2"]
    assert finetune.num_blocks("efficientnet_lite0") == 16 and finetune.num_blocks("efficientnet_lite2") == 21
    with pytest.raises(ValueError, match="built for the efficientnet_lite0 and efficientnet_lite2 backbones, not inc"):
        finetune.num_blocks("inception_v3")
    with pytest.raises(SystemExit):
        retrain.main(["--image_dir=d", "--fine_tune_blocks=2", "--architecture=inception_v3"])
    assert "is built for efficientnet_lite0 or efficientnet_lite2" in capsys.readouterr().err
    # A new family: its specs say how its network is cut, and retrain and finetune take it as it is.
    cut = backbones.Blocks(7, lambda index: f"blocks.{index}.out", lambda start: None)
    monkeypatch.setitem(backbones.REGISTRY, "new_family", backbones.BackboneSpec("new_family", 8, None, "", blocks=cut))
    assert finetune.num_blocks("new_family") == 7 and "new_family" in backbones.fine_tunable_names()
    recipes = retrain.RetrainConfig(image_dir="d", recipe="auto").recipes("new_family")
    assert isinstance(recipes[3], pipeline.FineTuneRecipe)


def test_fine_tuning_is_refused_for_too_many_blocks(lite0, unfolded):
    with pytest.raises(ValueError, match="between 1 and 15"):
        finetune.split_backbone(lite0, 16, unfolded)


def _fit_once(model, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (16, model.input.shape[1])).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 16)]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.mark.parametrize(("batch_norms", "moves"), [("frozen", False), ("training", True)])
def test_batch_norm_statistics_move_only_in_training_mode(lite0, unfolded, batch_norms, moves):
    _, top = finetune.split_backbone(lite0, 1, unfolded)
    head = finetune.new_layer(top.output.shape[-1], 3, dropout=0.2)
    model = finetune.fine_tuning_model(top, head, 1, batch_norms)
    statistics = [(w, w.numpy().copy()) for layer in finetune.batch_norm_layers(model) for w in layer.weights]
    lower = [(w, w.numpy().copy()) for w in model.get_layer(top.name).get_layer("conv_head").weights]
    _fit_once(model)
    assert any(not np.array_equal(before, w.numpy()) for w, before in statistics) == moves
    assert any(not np.array_equal(before, w.numpy()) for w, before in lower)  # the head convolution trains
    summary = finetune.trainable_summary(model)
    assert summary["trainable"] > 0 and summary["frozen"] > 0


def test_rates_warm_up_then_fall_on_a_cosine_and_slow_down_with_depth(lite0, unfolded):
    schedule = finetune.WarmupCosine(1e-3, total_steps=100, warmup_steps=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rates == pytest.approx([0.0, 5e-4, 1e-3, 5e-4, 0.0], abs=1e-9)
    _, top = finetune.split_backbone(lite0, 3, unfolded)
    head = finetune.new_layer(top.output.shape[-1], 4, dropout=0.0)
    model = finetune.fine_tuning_model(top, head, 3, "training")
    config = finetune.FineTuneConfig(blocks=3, learning_rate=1e-3, head_learning_rate=1e-2, layer_decay=0.5)
    pairs = finetune.optimizers_by_depth(model, head, config, lambda peak: peak)
    peaks = [float(optimizer.learning_rate) for optimizer, _ in pairs]
    assert peaks == pytest.approx([1e-2, 1e-3, 1e-3, 5e-4, 2.5e-4])  # new layer, head conv, blocks 15, 14, 13
    weights = [id(w) for _, group in pairs for w in group]
    assert len(weights) == len(set(weights)) == len(model.trainable_weights)  # each weight in one group only
    assert [w.path for w in pairs[-1][1]][0].startswith("blocks.13.")


def test_fine_tuning_trains_on_views_and_keeps_its_best_epoch(stamps_dir, tmp_path, lite0, unfolded):
    dataset = data.scan_dataset(small_stamps(stamps_dir, tmp_path / "images", per_label=10))
    config = finetune.FineTuneConfig(blocks=1, epochs=4, batch_size=8, num_distorted_variants=2)
    prepared = finetune.prepare(dataset, lite0, tmp_path / "bn", config, unfolded)
    views = prepared.train_views
    assert len(views.views) == 3 and all(v.shape == views.views[0].shape for v in views.views)
    assert not np.array_equal(views.views[0], views.views[1])  # a distorted view is another image
    tuned = finetune.fine_tune(dataset, lite0, tmp_path / "bn", config, False, prepared=prepared)
    assert len(tuned.history["val_accuracy"]) == 4
    assert tuned.best_epoch == 1 + int(np.argmax(tuned.history["val_accuracy"]))
    kept = tuned.evaluate("validation", dataset.class_names).accuracy
    assert kept == pytest.approx(max(tuned.history["val_accuracy"]))  # the best epoch's weights were kept
    assert kept > 1 / 3  # 3 labels
    validation = prepared.splits["validation"]
    no_validation = {
        **prepared.splits,
        "validation": bottlenecks.Bottlenecks(validation.vectors[:0], validation.labels[:0], []),
    }
    blind = finetune.fine_tune(
        dataset, lite0, tmp_path / "bn", config, False, prepared=dataclasses.replace(prepared, splits=no_validation)
    )
    assert blind.best_epoch == config.epochs  # nothing to choose by: the last epoch is kept
    other = dataclasses.replace(config, distortions=bottlenecks.Distortions(flip_left_right=True))
    with pytest.raises(ValueError, match="prepare again"):
        finetune.fine_tune(dataset, lite0, tmp_path / "bn", other, False, prepared=prepared)
    # The pipeline trains on a shared preparation as fine_tune does (bench/fine_tuning.py's ablations)
    recipe = pipeline.FineTuneRecipe("the recipe", config)
    trained = pipeline.run(recipe, dataset, lite0, tmp_path / "bn", False, prepared=prepared)
    pairs = zip(trained.classifier.get_weights(), tuned.trainable.get_weights(), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    with pytest.raises(ValueError, match="another way"):  # prepared through the crop, trained on padded images
        pipeline.run(recipe.with_fit("pad"), dataset, lite0, tmp_path / "bn", False, prepared=prepared)


def test_the_range_test_raises_the_rate_until_the_loss_climbs(stamps_dir, tmp_path, lite0, unfolded):
    dataset = data.scan_dataset(small_stamps(stamps_dir, tmp_path / "images", per_label=10))
    config = finetune.FineTuneConfig(blocks=1, batch_size=8, num_distorted_variants=0)
    prepared = finetune.prepare(dataset, lite0, tmp_path / "bn", config, unfolded)
    found = finetune.learning_rate_range_test(prepared, 3, config, low=1e-6, high=10.0, steps=60)
    rates, losses = found["rates"], found["losses"]
    assert np.all(np.diff(rates) > 0) and rates[0] == pytest.approx(1e-6)
    assert len(rates) < 60 or losses[-1] > min(losses)  # stopped when the loss blew up, or ran every step
    assert min(losses) < losses[0]  # some rate learned
    assert found["suggested"] == pytest.approx(found["lowest_loss_rate"] / 10)


@pytest.mark.slow
def test_retrain_with_fine_tuning_applies_its_flags_and_exports_a_model_that_labels(stamps_dir, tmp_path):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=10)
    settings = config_for(
        tmp_path,
        image_dir,
        fine_tune_blocks=1,
        fine_tune_epochs=4,
        learning_rate=0.003,
        train_batch_size=8,
        flip_left_right=True,
        num_distorted_variants=1,
        test_batch_size=2,
    )
    result = retrain.retrain(settings, False)
    assert result.final_validation_accuracy > 1 / 3  # 3 labels: chance is 1/3
    assert len(result.evaluation.labels) == 2  # test_batch_size
    report = json.loads((tmp_path / "out" / "g.report.json").read_text())
    recipe = report["recipe"]
    assert recipe["settings"]["head_learning_rate"] == 0.003
    assert recipe["settings"]["learning_rate"] == pytest.approx(0.0003)
    assert recipe["settings"]["distortions"]["flip_left_right"] and recipe["settings"]["batch_size"] == 8
    assert recipe["epochs_run"] == 4 and len(recipe["validation_accuracy_by_epoch"]) == 4
    assert {p.name for p in (tmp_path / "logs").iterdir()} == {"fine_tuning"}  # --summaries_dir
    assert any("distorted" in p.name for p in (tmp_path / "bn").rglob("*") if p.is_dir())  # --flip_left_right
    photo = sorted((stamps_dir / "fruit").iterdir())[-1]
    for model in ("g.pb", "g.keras"):
        (labelled,) = label.label_images([photo], tmp_path / "out" / model, tmp_path / "out" / "labels.txt")
        assert len(labelled.top) == 3 and abs(sum(score for _, score in labelled.top) - 1) < 1e-3


def test_flags_map_onto_the_fine_tuning_config():
    settings = retrain.RetrainConfig.from_args(
        "--image_dir=d --fine_tune_blocks=2 --learning_rate=0.02 --label_smoothing=0 --train_batch_size=32 "
        "--random_crop=10 --summaries_dir=logs --seed=3 --final_tensor_name=out".split()
    )
    config = settings.fine_tune_config()
    assert (config.head_learning_rate, config.learning_rate) == (0.02, pytest.approx(0.002))
    assert (config.label_smoothing, config.batch_size) == (0.0, 32)
    assert (config.distortions, str(config.summaries_dir), config.seed) == (
        bottlenecks.Distortions(random_crop=10),
        "logs",
        3,
    )
    assert config.final_tensor_name == "out"
    defaults = retrain.RetrainConfig.from_args(["--image_dir=d", "--fine_tune_blocks=2"]).fine_tune_config()
    assert defaults == finetune.FineTuneConfig(blocks=2, summaries_dir="retrain_logs")  # the fine-tuning defaults
    assert defaults.distortions == finetune.DEFAULT_DISTORTIONS and defaults.distortions.active


def test_values_set_from_python_are_honoured_even_at_a_classic_default():
    # 100 is the classic train_batch_size and 0 the classic label smoothing; fine-tuning's own are 64 and 0.1.
    given = retrain.RetrainConfig(image_dir="d", fine_tune_blocks=2, train_batch_size=100, label_smoothing=0.0)
    assert (given.fine_tune_config().batch_size, given.fine_tune_config().label_smoothing) == (100, 0.0)
    left_out = retrain.RetrainConfig(image_dir="d", fine_tune_blocks=2)
    assert (left_out.fine_tune_config().batch_size, left_out.fine_tune_config().label_smoothing) == (64, 0.1)
    assert dataclasses.replace(given, seed=1).is_set("train_batch_size")  # replace keeps what was given


@pytest.mark.parametrize(
    "flag",
    [
        "--how_many_training_steps=100",
        "--eval_step_interval=5",
        "--validation_batch_size=50",
        "--optimizer=adam",
        "--l2=0.001",
        "--learning_rate_schedule=cosine",
        "--early_stopping_patience=3",
        "--standardize_bottlenecks",
        "--distribution_strategy=mirrored",
        "--precision=bfloat16",
        "--num_shards=2",
        "--architecture=inception_v3",
    ],
)
def test_a_flag_that_cannot_apply_is_refused_with_its_name(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        retrain.main(["--image_dir=d", "--fine_tune_blocks=2", flag])
    assert exit_info.value.code == 2
    assert flag.split("=")[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--recipe=auto", "--validation_percentage=0"], "--validation_percentage"),
        (["--recipe=auto", "--time_budget=0"], "--time_budget"),
        (["--recipe=auto", "--precision=bfloat16"], "--precision"),
        (["--recipe=auto", "--image_fit=crop"], "--image_fit"),
        (["--image_fit=stretch"], "--image_fit"),
        (["--recipe=best"], "--recipe"),
    ],
)
def test_auto_refuses_what_it_cannot_do_with_the_flags_name(flags, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        retrain.main(["--image_dir=d", *flags])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_auto_under_the_flags_tries_the_flags_new_layer_first_then_fine_tuning_then_the_average():
    config = retrain.RetrainConfig.from_args(
        "--image_dir=d --recipe=auto --learning_rate=0.05 --how_many_training_steps=50".split()
    )
    first, tuned, padded, fine, averaged = config.recipes("efficientnet_lite0")
    assert (first.config.learning_rate, first.config.how_many_training_steps) == (0.05, 50)
    assert tuned.l2_grid and tuned.config.optimizer == "adam"
    assert (first.fit, tuned.fit, padded.fit) == ("crop", "crop", "pad") and padded.config == tuned.config
    assert fine.config == finetune.FineTuneConfig(summaries_dir="retrain_logs")  # the flags are the new layer's
    assert fine.fit is None and averaged.fit is None  # seeing images as the best new layer does
    assert (averaged.head, averaged.fine_tuned) == (tuned, (fine,))  # the last two averaged
    assert averaged.with_fit("pad").members() == (padded, fine.with_fit("pad"))
    assert [type(r) for r in config.recipes("inception_v3")] == [pipeline.HeadRecipe] * 3


@pytest.mark.parametrize("fine_tune_blocks", [0, 2])
def test_image_fit_says_how_the_one_recipe_sees_images(fine_tune_blocks):
    flags = f"--image_dir=d --fine_tune_blocks={fine_tune_blocks}".split()
    assert [r.fit for r in retrain.RetrainConfig.from_args(flags).recipes("efficientnet_lite0")] == ["crop"]
    (padded,) = retrain.RetrainConfig.from_args([*flags, "--image_fit=pad"]).recipes("efficientnet_lite0")
    assert padded.fit == "pad" and "padded" not in padded.name


def test_the_lesson_09_flags_parse():
    args = retrain.RetrainConfig.from_args(
        "--image_dir=d --optimizer=adam --learning_rate_schedule=cosine --l2=0.001 --label_smoothing=0.1 "
        "--early_stopping_patience=5 --standardize_bottlenecks --fine_tune_epochs=4 --recipe=auto "
        "--time_budget=5".split()
    )
    assert (args.optimizer, args.learning_rate_schedule, args.l2, args.label_smoothing) == (
        "adam",
        "cosine",
        0.001,
        0.1,
    )
    assert (args.early_stopping_patience, args.standardize_bottlenecks) == (5, True)
    assert (args.fine_tune_epochs, args.recipe, args.time_budget) == (4, "auto", 5.0)


def test_one_preparation_serves_every_config_that_shows_fewer_views():
    views = finetune.Views([np.full((4, 2), k, np.float16) for k in range(3)], np.zeros(4, int), [None] * 4)
    prepared = finetune.Prepared(1, None, None, bottlenecks.CacheReport(), {}, views, finetune.DEFAULT_DISTORTIONS)
    config = finetune.FineTuneConfig(blocks=1, epochs=2, num_distorted_variants=1)
    shown = prepared.views(config)
    assert [v[0, 0] for v in shown.views] == [0, 1] and not shown.one_per_epoch  # the plain image, variant 0
    assert len(prepared.views(dataclasses.replace(config, num_distorted_variants=0)).views) == 1
    plain = dataclasses.replace(config, distortions=bottlenecks.Distortions())
    with pytest.raises(ValueError, match="prepare again"):
        prepared.views(plain)
    fresh = prepared.views(dataclasses.replace(config, num_distorted_variants=2, fresh_views=True))
    assert len(fresh.views) == 3 and fresh.one_per_epoch
    with pytest.raises(ValueError, match="prepare again"):
        prepared.views(dataclasses.replace(config, num_distorted_variants=3))
    with pytest.raises(ValueError, match="a distorted view per epoch"):
        finetune.FineTuneConfig(epochs=8, num_distorted_variants=4, fresh_views=True)


def test_views_one_per_epoch_show_every_image_its_next_distorted_view():
    views = [np.full((4, 2), k, np.float16) for k in range(3)]  # plain, distorted 1, distorted 2
    rng = np.random.default_rng(0)
    random = finetune.Views(views, np.zeros(4, int), [None] * 4)
    assert set(np.unique(np.concatenate([random.batch(np.arange(4), rng) for _ in range(20)]))) == {0, 1, 2}
    in_turn = finetune.Views(views, np.zeros(4, int), [None] * 4, one_per_epoch=True)
    assert (in_turn.batch(np.arange(4), rng, epoch=0) == 1).all() and (in_turn.batch(np.arange(4), rng, 1) == 2).all()
    with pytest.raises(ValueError, match="one distorted view per epoch"):
        in_turn.batch(np.arange(4), rng, epoch=2)
