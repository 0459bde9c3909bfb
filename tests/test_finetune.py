import json

import keras
import numpy as np
import pytest

from tests.test_retrain import config_for, small_stamps
from tlcourse import backbones, finetune, label, retrain
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
def test_batch_norm_statistics_move_only_in_the_trap(lite0, unfolded, batch_norms, moves):
    _, top = finetune.split_backbone(lite0, 1, unfolded)
    head = finetune.new_layer(top.output.shape[-1], 3, finetune.FineTuneConfig())
    model = finetune.fine_tuning_model(top, head, 1, batch_norms)
    statistics = [(w, w.numpy().copy()) for layer in finetune.batch_norm_layers(model) for w in layer.weights]
    lower = [(w, w.numpy().copy()) for w in model.get_layer(top.name).get_layer("conv_head").weights]
    _fit_once(model)
    assert any(not np.array_equal(before, w.numpy()) for w, before in statistics) == moves
    assert any(not np.array_equal(before, w.numpy()) for w, before in lower)  # the head convolution trains
    summary = finetune.trainable_summary(model)
    assert summary["trainable"] > 0 and summary["frozen"] > 0


def test_retrain_with_fine_tuning_applies_its_flags_and_exports_a_model_that_labels(stamps_dir, tmp_path):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=10)
    settings = config_for(
        tmp_path,
        image_dir,
        fine_tune_blocks=1,
        fine_tune_epochs=2,
        learning_rate=0.003,
        l2=0.0001,
        flip_left_right=True,
        num_distorted_variants=1,
        test_batch_size=2,
    )
    result = retrain.retrain(settings, False)
    assert result.final_validation_accuracy > 0.5  # 3 labels: chance is 1/3
    assert len(result.evaluation.labels) == 2  # test_batch_size
    report = json.loads((tmp_path / "out" / "g.report.json").read_text())
    assert report["fine_tuning"]["head_learning_rate"] == 0.003
    assert report["fine_tuning"]["learning_rate"] == pytest.approx(0.0003)
    assert report["fine_tuning"]["l2"] == 0.0001
    assert {p.name for p in (tmp_path / "logs").iterdir()} == {"phase1_head", "phase2_top_blocks"}  # --summaries_dir
    assert any("distorted" in p.name for p in (tmp_path / "bn").rglob("*") if p.is_dir())  # --flip_left_right
    photo = sorted((stamps_dir / "fruit").iterdir())[-1]
    for model in ("g.pb", "g.keras"):
        (labelled,) = label.label_images([photo], tmp_path / "out" / model, tmp_path / "out" / "labels.txt")
        assert len(labelled.top) == 3 and abs(sum(score for _, score in labelled.top) - 1) < 1e-3


def test_flags_map_onto_the_fine_tuning_config():
    settings = retrain.RetrainConfig.from_args(
        "--image_dir=d --fine_tune_blocks=2 --optimizer=sgd --learning_rate=0.01 --learning_rate_schedule=cosine "
        "--l2=0.001 --label_smoothing=0 --early_stopping_patience=5 --train_batch_size=32 --standardize_bottlenecks "
        "--random_crop=10 --summaries_dir=logs --seed=3 --final_tensor_name=out".split()
    )
    config = settings.fine_tune_config()
    assert (config.optimizer, config.head_learning_rate, config.learning_rate) == ("sgd", 0.01, pytest.approx(0.001))
    assert (config.learning_rate_schedule, config.l2, config.label_smoothing) == ("cosine", 0.001, 0.0)
    assert (config.patience, config.batch_size, config.standardize_bottlenecks) == (5, 32, True)
    assert (config.distortions.random_crop, str(config.summaries_dir), config.seed) == (10, "logs", 3)
    assert config.final_tensor_name == "out"
    defaults = retrain.RetrainConfig.from_args(["--image_dir=d", "--fine_tune_blocks=2"]).fine_tune_config()
    assert defaults == finetune.FineTuneConfig(blocks=2, summaries_dir="retrain_logs")  # the fine-tuning defaults
    same = retrain.RetrainConfig(image_dir="d", fine_tune_blocks=2, optimizer="adam", train_batch_size=32)
    assert (same.fine_tune_config().optimizer, same.fine_tune_config().batch_size) == ("adam", 32)


@pytest.mark.parametrize(
    "flag",
    [
        "--how_many_training_steps=100",
        "--eval_step_interval=5",
        "--validation_batch_size=50",
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


def test_the_lesson_07_flags_parse():
    args = retrain.RetrainConfig.from_args(
        "--image_dir=d --optimizer=adam --learning_rate_schedule=cosine --l2=0.001 --label_smoothing=0.1 "
        "--early_stopping_patience=5 --standardize_bottlenecks --fine_tune_blocks=2 --fine_tune_epochs=4".split()
    )
    assert (args.optimizer, args.learning_rate_schedule, args.l2, args.label_smoothing) == (
        "adam",
        "cosine",
        0.001,
        0.1,
    )
    assert (args.early_stopping_patience, args.standardize_bottlenecks) == (5, True)
    assert (args.fine_tune_blocks, args.fine_tune_epochs) == (2, 4)
