"""Many classes: reproduce the accuracy collapse, diagnose it, and win it back (lesson 07).

- ``restrict`` and ``class_subset`` make smaller problems out of one dataset, on the same split.
- ``run_recipe`` trains one recipe (backbone + training settings) and measures it: top-1 and
  top-5 test accuracy, train and validation accuracy.
- Diagnosis: ``most_confused_pairs``, ``top_k_accuracy``, per-class accuracy against images per
  class (``plots.plot_per_class_accuracy``).
- ``RECIPES``: the tutorial's command and the techniques that win accuracy back, each a plain
  set of ``TrainConfig`` settings that ``retrain.py`` also takes as flags.

Taught in ``notebooks/07_many_classes.ipynb``; the full table comes from ``bench/many_classes.py``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcourse import backbones, bottlenecks, finetune, train
from tlcourse.data import SPLITS, Dataset

TUTORIAL = {"how_many_training_steps": 1000, "train_batch_size": 100, "learning_rate": 0.01}
TUNED = {  # a better optimiser and schedule, early stopping on the whole validation set
    "optimizer": "adam",
    "learning_rate": 0.001,
    "learning_rate_schedule": "cosine",
    "how_many_training_steps": 3000,
    "validation_batch_size": -1,
    "eval_step_interval": 50,
    "early_stopping_patience": 10,
}
AUGMENT = {"flip_left_right": True, "random_crop": 10, "random_scale": 15, "random_brightness": 15}

# name -> (backbone, TrainConfig settings, distortions or None); each adds one idea to the one before.
RECIPES = {
    "tutorial": ("efficientnet_lite0", TUTORIAL, None),
    "standardized bottlenecks": ("efficientnet_lite0", {**TUTORIAL, "standardize_bottlenecks": True}, None),
    "+ Adam, cosine schedule, early stopping": (
        "efficientnet_lite0",
        {**TUNED, "standardize_bottlenecks": True},
        None,
    ),
    "+ tuned L2": ("efficientnet_lite0", {**TUNED, "standardize_bottlenecks": True, "l2": "tuned"}, None),
    "+ label smoothing 0.1": (
        "efficientnet_lite0",
        {**TUNED, "standardize_bottlenecks": True, "l2": "tuned", "label_smoothing": 0.1},
        None,
    ),
    "+ cached augmentation": (
        "efficientnet_lite0",
        {**TUNED, "standardize_bottlenecks": True, "l2": "tuned", "label_smoothing": 0.1},
        AUGMENT,
    ),
    "+ EfficientNet-Lite2 backbone": (
        "efficientnet_lite2",
        {**TUNED, "standardize_bottlenecks": True, "l2": "tuned", "label_smoothing": 0.1},
        AUGMENT,
    ),
    "fine-tune the top 2 blocks (Lite0)": ("efficientnet_lite0", {"fine_tune_blocks": 2}, None),
}
L2_GRID = (0.0, 1e-4, 1e-3, 1e-2)


def restrict(dataset: Dataset, class_names: list[str]) -> Dataset:
    """The same dataset with only ``class_names`` (each image keeps its split)."""
    keep = set(class_names)
    missing = keep - set(dataset.class_names)
    if missing:
        raise ValueError(f"labels not in the dataset: {sorted(missing)}")
    return dataclasses.replace(
        dataset,
        class_names=[name for name in dataset.class_names if name in keep],
        images=[record for record in dataset.images if record.label in keep],
        skipped=[],
        notes=[],
    )


def class_subset(dataset: Dataset, num_classes: int, seed: int = 0) -> list[str]:
    """``num_classes`` labels drawn at random (seeded), among those with test and validation images."""
    counts = dataset.counts()
    usable = [name for name in dataset.class_names if counts[name]["test"] and counts[name]["validation"]]
    if num_classes > len(usable):
        raise ValueError(f"asked for {num_classes} labels; only {len(usable)} have test and validation images")
    chosen = np.random.default_rng(seed).choice(len(usable), num_classes, replace=False)
    return sorted(usable[i] for i in chosen)


@dataclass
class RecipeResult:
    name: str
    backbone: str
    num_classes: int
    accuracy: float
    top5_accuracy: float
    train_accuracy: float
    validation_accuracy: float
    seconds: float
    settings: dict

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def top_k_accuracy(evaluation: train.Evaluation, k: int = 5) -> float:
    """How often the true label is among the ``k`` most probable."""
    if not len(evaluation.labels):
        return float("nan")
    top = np.argsort(-evaluation.probabilities, axis=1)[:, :k]
    return float(np.mean([label in row for label, row in zip(evaluation.labels, top, strict=True)]))


def most_confused_pairs(evaluation: train.Evaluation, count: int = 10) -> list[tuple[str, str, int]]:
    """(true label, predicted label, how many test images) for the most frequent mistakes."""
    matrix = evaluation.confusion_matrix().copy()
    np.fill_diagonal(matrix, 0)
    order = np.argsort(-matrix, axis=None, kind="stable")[:count]  # ties: in label order
    pairs = [np.unravel_index(index, matrix.shape) for index in order]
    names = evaluation.class_names
    return [(names[t], names[p], int(matrix[t, p])) for t, p in pairs if matrix[t, p] > 0]


class Experiment:
    """One dataset and bottleneck cache, many recipes: backbones are loaded and cached once."""

    def __init__(self, dataset: Dataset, bottleneck_dir: str | Path, progress: bool = False):
        self.dataset = dataset
        self.bottleneck_dir = Path(bottleneck_dir)
        self.progress = progress
        self._backbones = {}

    def backbone(self, name: str):
        if name not in self._backbones:
            backbone = backbones.load_backbone(name)
            bottlenecks.cache_bottlenecks(self.dataset.images, backbone, self.bottleneck_dir, progress=self.progress)
            self._backbones[name] = backbone
        return self._backbones[name]

    def splits(self, dataset: Dataset, backbone) -> dict[str, train.Bottlenecks]:
        return {split: train.gather(dataset, split, backbone, self.bottleneck_dir) for split in SPLITS}

    def run(self, name, backbone_name, settings, distortions=None, dataset: Dataset | None = None):
        """Train one recipe on ``dataset`` (default: the whole one); returns (RecipeResult, Evaluation)."""
        dataset = dataset or self.dataset
        started = time.perf_counter()
        backbone = self.backbone(backbone_name)
        if "fine_tune_blocks" in settings:
            return self._run_fine_tune(name, backbone, settings, dataset, started)
        splits = self.splits(dataset, backbone)
        settings = dict(settings)
        if settings.get("l2") == "tuned":
            settings["l2"] = self.tune_l2(dataset, backbone, splits, settings, distortions)
        config = train.TrainConfig(**settings, distortions=train.Distortions(**(distortions or {})))
        distorted = None
        if config.distortions.active:
            train.cache_distorted_variants(dataset, backbone, self.bottleneck_dir, config, self.progress)
            distorted = train.gather_distorted(dataset, backbone, self.bottleneck_dir, config)
        head, _ = train.train_head(
            splits["train"], splits["validation"], len(dataset.class_names), config, distorted, progress=False
        )
        test = train.evaluate(head, splits["test"], dataset.class_names)
        result = RecipeResult(
            name=name,
            backbone=backbone_name,
            num_classes=len(dataset.class_names),
            accuracy=test.accuracy,
            top5_accuracy=top_k_accuracy(test, 5),
            train_accuracy=train.evaluate(head, splits["train"], dataset.class_names).accuracy,
            validation_accuracy=train.evaluate(head, splits["validation"], dataset.class_names).accuracy,
            seconds=time.perf_counter() - started,
            settings={**settings, "distortions": distortions},
        )
        return result, test

    def _run_fine_tune(self, name, backbone, settings, dataset, started):
        config = finetune.FineTuneConfig(blocks=settings["fine_tune_blocks"])
        tuned = finetune.fine_tune(dataset, backbone, self.bottleneck_dir, config, progress=self.progress)
        result = RecipeResult(
            name=name,
            backbone=backbone.name,
            num_classes=len(dataset.class_names),
            accuracy=tuned.test.accuracy,
            top5_accuracy=top_k_accuracy(tuned.test, 5),
            train_accuracy=tuned.evaluate("train", dataset.class_names).accuracy,
            validation_accuracy=tuned.evaluate("validation", dataset.class_names).accuracy,
            seconds=time.perf_counter() - started,
            settings={**dataclasses.asdict(config)},
        )
        return result, tuned.test

    def tune_l2(self, dataset, backbone, splits, settings, distortions=None) -> float:
        """The L2 penalty of ``L2_GRID`` with the best validation accuracy (the test split is not looked at)."""
        scores = {}
        for l2 in L2_GRID:
            config = train.TrainConfig(**{**settings, "l2": l2})
            head, _ = train.train_head(
                splits["train"], splits["validation"], len(dataset.class_names), config, progress=False
            )
            scores[l2] = train.evaluate(head, splits["validation"], dataset.class_names).accuracy
        return max(scores, key=lambda l2: (scores[l2], l2))

    def accuracy_vs_classes(self, sizes, recipe: str = "tutorial", seed: int = 0) -> list[RecipeResult]:
        """The recipe's test accuracy on random subsets of ``sizes`` labels (and on all of them)."""
        backbone_name, settings, distortions = RECIPES[recipe]
        results = []
        for size in sizes:
            subset = restrict(self.dataset, class_subset(self.dataset, size, seed))
            result, _ = self.run(recipe, backbone_name, settings, distortions, subset)
            results.append(result)
        return results
