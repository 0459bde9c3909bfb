"""Lessons 06 and 07's helpers: the layer they train (``train.fit_linear``), learning curves, planted
signals, flipped labels, near-copies that leak across the split, and activations at several depths."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from tlcourse import data, train, your_data
from tlcourse.bottlenecks import Bottlenecks


def clusters(num_classes=4, per_class=30, dim=32, spread=0.6, seed=0):
    """Vectors around one centre per label: an easy, linearly separable problem."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 3
    labels = np.repeat(np.arange(num_classes), per_class)
    vectors = centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))
    return vectors.astype(np.float32), labels


def as_split(vectors, labels):
    records = [
        data.ImageRecord(path=None, label=str(label), relative=f"{i}.jpg", sha256=f"{i:064x}", split="train")
        for i, label in enumerate(labels)
    ]
    return Bottlenecks(np.asarray(vectors, np.float32), np.asarray(labels), records)


def test_fit_linear_learns_separable_labels_and_is_deterministic():
    vectors, labels = clusters()
    layer = train.fit_linear(vectors, labels, 4)
    assert np.mean(layer.predict(vectors) == labels) == 1.0
    again = train.fit_linear(vectors, labels, 4)
    assert np.array_equal(layer.weights, again.weights)
    probabilities = layer.probabilities(vectors * 1000)  # finite for huge inputs
    assert np.all(np.isfinite(probabilities)) and np.allclose(probabilities.sum(axis=1), 1)


def test_fit_linear_never_predicts_a_label_without_training_images():
    vectors, labels = clusters(num_classes=3)
    layer = train.fit_linear(vectors[labels != 1], labels[labels != 1], 3)
    assert 1 not in set(layer.predict(vectors).tolist())


def test_fit_linear_weighs_every_label_the_same_whatever_its_number_of_images():
    """Two labels drawn from one distribution, 90 images against 10: nothing tells them apart but the
    count, and weighed equally each gets half the probability (unweighted, the small one gets about 0.1)."""
    vectors = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    labels = np.array([0] * 90 + [1] * 10)
    layer = train.fit_linear(vectors, labels, 2, l2=1.0)
    assert 0.4 < layer.probabilities(vectors)[:, 1].mean() < 0.6


def test_fit_linear_is_train_head_read_out_as_arrays():
    vectors, labels = clusters(num_classes=3, per_class=20, dim=6)
    config = train.TrainConfig(how_many_training_steps=5, train_batch_size=-1, standardize_bottlenecks=True)
    head, _ = train.train_head(as_split(vectors, labels), as_split(vectors, labels), 3, config, progress=False)
    expected = head.predict(vectors, verbose=0)
    assert np.allclose(train.LinearLayer.of(head).probabilities(vectors), expected, atol=1e-5)
    plain = dataclasses.replace(config, standardize_bottlenecks=False)
    head, _ = train.train_head(as_split(vectors, labels), as_split(vectors, labels), 3, plain, progress=False)
    assert np.allclose(train.LinearLayer.of(head).probabilities(vectors), head.predict(vectors, verbose=0), atol=1e-5)


def test_fit_linear_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="as many labels"):
        train.fit_linear(np.zeros((3, 2)), np.zeros(2, int), 2)


def test_per_label_sample_takes_at_most_n_of_each_label_and_depends_on_the_seed():
    labels = np.array([0] * 10 + [1] * 3)
    chosen = your_data.per_label_sample(labels, 5, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [5, 3]
    assert not np.array_equal(chosen, your_data.per_label_sample(labels, 5, seed=1))
    assert len(your_data.per_label_sample(labels, None, seed=0)) == 13


def test_learning_curve_rises_with_more_images():
    vectors, labels = clusters(num_classes=5, per_class=40, spread=2.5)
    split = as_split(vectors, labels)
    train = your_data.take(split, np.arange(0, 200, 2))
    held_out = your_data.take(split, np.arange(1, 200, 2))
    points = your_data.learning_curve(train, held_out, 5, sizes=(1, 20), seeds=(0, 1, 2))
    rows = your_data.summarize_curve(points)
    assert [row["per_label"] for row in rows] == [1, 20] and rows[0]["seeds"] == 3
    assert rows[1]["mean"] > rows[0]["mean"]
    assert rows[0]["low"] <= rows[0]["mean"] <= rows[0]["high"]


def test_flip_labels_flips_the_asked_fraction_to_other_labels():
    labels = np.arange(100) % 5
    noisy, flipped = your_data.flip_labels(labels, 0.2, 5, seed=3)
    assert flipped.sum() == 20
    assert np.all(noisy[flipped] != labels[flipped]) and np.all(noisy[~flipped] == labels[~flipped])


def test_rank_by_loss_puts_flipped_labels_first():
    vectors, labels = clusters(num_classes=4, per_class=50)
    noisy, flipped = your_data.flip_labels(labels, 0.1, 4, seed=0)
    layer = train.fit_linear(vectors, noisy, 4, l2=1e-1)
    top = your_data.rank_by_loss(layer, vectors, noisy)[: flipped.sum()]
    assert flipped[top].mean() > 0.8


def test_out_of_fold_losses_put_flipped_labels_first():
    vectors, labels = clusters(num_classes=4, per_class=40, dim=256, spread=3.0)
    noisy, flipped = your_data.flip_labels(labels, 0.2, 4, seed=0)
    losses = your_data.out_of_fold_losses(vectors, noisy, 4)
    top = np.argsort(-losses)[: flipped.sum()]
    assert flipped[top].mean() > 0.8


def test_tint_frame_and_background():
    image = np.full((20, 30, 3), 255, np.uint8)
    image[5:15, 10:20] = 0
    assert your_data.tint(image, (0, 0, 255), 1.0)[0, 0].tolist() == [0, 0, 255]
    assert np.array_equal(your_data.tint(image, (0, 0, 255), 0.0), image)
    moved = your_data.on_background(image, (10, 20, 30))
    assert moved[0, 0].tolist() == [10, 20, 30] and moved[10, 15].tolist() == [0, 0, 0]
    framed = your_data.frame(image, (1, 2, 3), width=0.1)
    assert framed[0, 0].tolist() == [1, 2, 3] and framed[10, 15].tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        your_data.tint(image, strength=2)


def make_dataset(folder, labels=("cats", "dogs"), per_label=6):
    rng = np.random.default_rng(0)
    for label in labels:
        (folder / label).mkdir(parents=True)
        for i in range(per_label):
            pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{label}{i}.jpg")
    return data.scan_dataset(folder)


def test_write_copies_keeps_names_and_splits(tmp_path):
    dataset = make_dataset(tmp_path / "photos")
    folder = your_data.write_copies(dataset.images, tmp_path / "tinted", your_data.tint, "tint")
    copies = data.scan_dataset(folder)
    assert {(r.label, r.relative, r.split) for r in copies.images} == {
        (r.label, r.relative, r.split) for r in dataset.images
    }
    assert not {r.sha256 for r in copies.images} & {r.sha256 for r in dataset.images}
    before = (folder / "cats" / "cats0.jpg").stat().st_mtime_ns
    your_data.write_copies(dataset.images, folder, your_data.tint, "tint")  # same: kept
    assert (folder / "cats" / "cats0.jpg").stat().st_mtime_ns == before


def test_swap_in_replaces_only_the_chosen_images():
    vectors, labels = clusters(num_classes=2, per_class=3)
    split, other = as_split(vectors, labels), as_split(vectors + 100, labels)
    swapped = your_data.swap_in(split, other, lambda record: record.label == "1")
    assert np.array_equal(swapped.vectors[labels == 0], vectors[labels == 0])
    assert np.array_equal(swapped.vectors[labels == 1], vectors[labels == 1] + 100)


def test_near_copies_land_in_other_splits_unless_named_nohash(tmp_path):
    dataset = make_dataset(tmp_path / "photos", per_label=12)
    leaky, families = your_data.write_with_near_copies(dataset.images, tmp_path / "leaky", copies=2)
    grouped, grouped_families = your_data.write_with_near_copies(
        dataset.images, tmp_path / "grouped", copies=2, nohash=True
    )
    assert len(families) == len(grouped_families) == 3 * len(dataset.images)

    def split_families(folder, families):
        seen = {}
        scanned = data.scan_dataset(folder)
        for record in scanned.images:
            seen.setdefault(families[f"{record.label}/{record.relative}"], set()).add(record.split)
        borrowed = sum("borrowed" in note for note in scanned.notes)  # an empty split takes one image from training
        return sum(len(s) > 1 for s in seen.values()), borrowed

    split, borrowed = split_families(grouped, grouped_families)
    assert split <= borrowed
    split, borrowed = split_families(leaky, families)
    assert split > borrowed
    copy = next((leaky / "cats").glob("*_copy1.jpg"))
    same = grouped / "cats" / copy.name.replace("_copy1", "_nohash_1")
    assert copy.read_bytes() == same.read_bytes()  # one set of copies: cached once


def test_folds_are_stratified():
    labels = np.repeat(np.arange(3), 10)
    folds = your_data.folds_for(labels, 5)
    for label in range(3):
        assert np.bincount(folds[labels == label], minlength=5).tolist() == [2] * 5


def test_probe_depths_scores_every_image_once():
    from tlcourse import depths

    vectors, labels = clusters(num_classes=3, per_class=10)
    noise = np.random.default_rng(0).normal(size=vectors.shape).astype(np.float32)
    results = depths.probe_depths({"noise": noise, "signal": vectors}, labels, 3)
    assert results["signal"].shape == labels.shape
    assert results["signal"].mean() > results["noise"].mean()


@pytest.mark.slow
def test_depth_model_gives_pooled_activations_and_the_bottleneck():
    from tlcourse import backbones, depths

    backbone = backbones.load_backbone("efficientnet_lite0")
    model = depths.depth_model(backbone, (2, 14))
    outputs = model(np.zeros((1, 224, 224, 3), np.float32))
    assert [tuple(o.shape) for o in outputs] == [(1, 24), (1, 192), (1, 1280)]
    bottleneck = backbone.network(np.zeros((1, 224, 224, 3), np.float32))
    assert np.allclose(outputs[-1], bottleneck, atol=1e-5)
    with pytest.raises(ValueError):
        depths.depth_model(backbone, (16,))
    rows = depths.describe_depths(backbone, (2, 14))
    assert [(row["side"], row["channels"]) for row in rows] == [(56, 24), (7, 192), (7, 1280)]  # pooled 7x7 maps
