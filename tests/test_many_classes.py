import numpy as np
import pytest

from tlcourse import many_classes, train
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
    settings = {**many_classes.TUNED, "how_many_training_steps": 200, "standardize_bottlenecks": True, "l2": "tuned"}
    result, test = experiment.run("tuned", "efficientnet_lite0", settings)
    assert result.num_classes == 5 and result.accuracy == test.accuracy > 0.6
    assert result.top5_accuracy == 1.0  # five labels: the true one is always in the top 5
    assert result.settings["l2"] in many_classes.L2_GRID
