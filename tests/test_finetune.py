import numpy as np
import pytest

from tests.test_retrain import args_for, small_stamps
from tlcourse import finetune, label, retrain
from tlcourse.images import load_image


@pytest.mark.parametrize("blocks", [1, 3])
def test_the_split_backbone_computes_the_same_bottleneck(lite0, photo, blocks):
    lower, top = finetune.split_backbone(lite0, blocks)
    images = lite0.preprocess(load_image(photo("chelsea.png"))[None])
    activations = lower.features(images).numpy().reshape((1, *top.input.shape[1:]))
    np.testing.assert_allclose(top(activations).numpy(), lite0.features(images).numpy(), atol=1e-4)
    assert lower.fingerprint != lite0.fingerprint  # cached activations never pass for bottlenecks


def test_fine_tuning_is_refused_for_too_many_blocks(lite0):
    with pytest.raises(ValueError, match="between 1 and 15"):
        finetune.split_backbone(lite0, 16)


def test_retrain_with_fine_tuning_exports_a_model_that_labels(stamps_dir, tmp_path):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=10)
    result = retrain.retrain(args_for(tmp_path, image_dir, "--fine_tune_blocks=1", "--fine_tune_epochs=2"), False)
    assert result["accuracy"] > 0.5 and result["final_validation_accuracy"] > 0.5  # 3 labels: chance is 1/3
    photo = sorted((stamps_dir / "fruit").iterdir())[-1]
    for model in ("g.pb", "g.keras"):
        (labelled,) = label.label_images([photo], tmp_path / "out" / model, tmp_path / "out" / "labels.txt")
        assert len(labelled.top) == 3 and abs(sum(score for _, score in labelled.top) - 1) < 1e-3


def test_the_lesson_07_flags_parse():
    args = retrain.parse_args(
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
