"""Many classes: reproduce the accuracy collapse, diagnose it, and win it back (lesson 09).

- ``restrict`` and ``class_subset`` make smaller problems out of one dataset, on the same split.
- ``run_recipe`` trains one recipe (backbone + training settings) and measures it: top-1 and
  top-5 test accuracy, train and validation accuracy.
- Diagnosis: ``most_confused_pairs``, ``top_k_accuracy``, per-class accuracy against images per
  class (``plots.plot_per_class_accuracy``).
- ``RECIPES``: the tutorial's command and the techniques that win accuracy back, each a backbone
  and a ``pipeline`` recipe (a ``TrainConfig`` whose fields ``retrain.py`` also takes as flags).

Taught in ``notebooks/09_many_classes.ipynb``; the full table comes from ``bench/many_classes.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tlcourse import backbones, bottlenecks, finetune, pipeline, stats, train
from tlcourse.data import Dataset
from tlcourse.exercises.tuning import choose_on_validation as choose  # lesson 09 has the learner write it: one rule

L2_GRID = pipeline.L2_GRID
TUTORIAL = train.TrainConfig(how_many_training_steps=1000, train_batch_size=100, learning_rate=0.01)
# A better optimiser and schedule, early stopping on the whole validation set, standardised
# bottlenecks: what retrain.py's --recipe=auto tries as its tuned new layer (with its L2 chosen).
TUNED = pipeline.TUNED_HEAD
AUGMENT = bottlenecks.Distortions(flip_left_right=True, random_crop=10, random_scale=15, random_brightness=15)
LITE0 = "efficientnet_lite0"


class Row(NamedTuple):
    """A row of the lesson's table: which backbone, and how the new layer (or the top blocks) train."""

    backbone: str
    recipe: pipeline.Recipe


def _rows(backbone: str, recipes: list[pipeline.Recipe]) -> dict[str, Row]:
    return {recipe.name: Row(backbone, recipe) for recipe in recipes}


_SMOOTHED = dataclasses.replace(TUNED, label_smoothing=0.1)
# The ladder: each of these rows adds one idea to the row before it, on frozen Lite0 features.
LADDER = _rows(
    LITE0,
    [
        pipeline.HeadRecipe("tutorial", TUTORIAL),
        pipeline.HeadRecipe("+ standardized bottlenecks", dataclasses.replace(TUTORIAL, standardize_bottlenecks=True)),
        pipeline.HeadRecipe("+ Adam, cosine schedule, early stopping", TUNED),
        pipeline.HeadRecipe("+ tuned L2", TUNED, L2_GRID),
        pipeline.HeadRecipe("+ label smoothing 0.1", _SMOOTHED, L2_GRID),
        pipeline.HeadRecipe("+ cached augmentation", dataclasses.replace(_SMOOTHED, distortions=AUGMENT), L2_GRID),
    ],
)
# Not rungs of the ladder: each changes the features themselves.
OTHER_FEATURES = {
    **_rows("efficientnet_lite2", [pipeline.HeadRecipe("Lite2 instead of Lite0 (tuned L2 settings)", TUNED, L2_GRID)]),
    **_rows(
        LITE0,
        [pipeline.FineTuneRecipe("fine-tune the top 5 blocks (Lite0, the tool's recipe)", finetune.FineTuneConfig())],
    ),
}
RECIPES = {**LADDER, **OTHER_FEATURES}
# The row each recipe changes exactly one thing from (None: a separate recipe, compared with the chosen one).
CHANGES_FROM = {
    **{name: previous for previous, name in zip(list(LADDER)[:-1], list(LADDER)[1:], strict=True)},
    "tutorial": None,
    "Lite2 instead of Lite0 (tuned L2 settings)": "+ tuned L2",
    "fine-tune the top 5 blocks (Lite0, the tool's recipe)": None,
}


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
    accuracy: float  # top-1 on the test split
    top5_accuracy: float
    train_accuracy: float
    validation_accuracy: float  # on the whole validation split: what recipes are chosen by
    seconds: float
    settings: dict
    test_correct: str = ""  # one "1" (right) or "0" (wrong) per test image, in the split's order
    subset_seed: int | None = None  # which random label subset (accuracy_vs_classes), None: all labels

    @property
    def correct(self) -> np.ndarray:
        """Per test image: right (True) or wrong, for ``stats.bootstrap_interval`` / ``paired_comparison``."""
        return np.array([c == "1" for c in self.test_correct], dtype=bool)

    def interval(self) -> stats.Interval:
        """The test accuracy with its 95% bootstrap interval over the test images."""
        return stats.bootstrap_interval(self.correct)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RecipeResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def choose_on_validation(results: list[RecipeResult]) -> RecipeResult:
    """The recipe with the best validation accuracy (ties: the earlier, simpler row). Never looks at test."""
    accuracy = {"train": "train_accuracy", "validation": "validation_accuracy", "test": "accuracy"}
    chosen, _, _ = choose(results, lambda result: result, lambda result, split: getattr(result, accuracy[split]))
    return chosen


def compare(a: RecipeResult, b: RecipeResult) -> stats.PairedComparison:
    """B against A on the same test images (a paired bootstrap and McNemar test, ``tlcourse.stats``)."""
    return stats.paired_comparison(a.correct, b.correct)


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

    def __init__(self, dataset: Dataset, bottleneck_dir: str | Path, progress: bool = False, precision="float32"):
        self.dataset = dataset
        self.bottleneck_dir = Path(bottleneck_dir)
        self.progress = progress
        self.precision = precision  # of the backbone; "bfloat16" is for frozen-feature recipes (fine-tuning is float32)
        self._backbones = {}

    def backbone(self, name: str):
        """The backbone ``name``, loaded once; the first time, every image of the dataset is cached for it."""
        if name not in self._backbones:
            backbone = backbones.load_backbone(name, precision=self.precision)
            bottlenecks.cache_bottlenecks(self.dataset.images, backbone, self.bottleneck_dir, progress=self.progress)
            self._backbones[name] = backbone
        return self._backbones[name]

    def splits(self, dataset: Dataset, backbone) -> dict[str, bottlenecks.Bottlenecks]:
        """Every split of ``dataset`` (the whole one, or a subset of its labels) through ``backbone``."""
        return bottlenecks.cache_and_gather(dataset, backbone, self.bottleneck_dir, progress=self.progress).splits

    def run(self, backbone_name: str, recipe: pipeline.Recipe, dataset: Dataset | None = None):
        """Train ``recipe`` on ``dataset`` (default: the whole one); returns (RecipeResult, Evaluation).

        ``experiment.run(*RECIPES[name])`` runs a row of the lesson's table.
        """
        dataset = dataset or self.dataset
        backbone = self.backbone(backbone_name)
        trained = pipeline.run(recipe, dataset, backbone, self.bottleneck_dir, False)
        test = trained.evaluate("test")
        result = RecipeResult(
            name=recipe.name,
            backbone=backbone_name,
            num_classes=len(dataset.class_names),
            accuracy=test.accuracy,
            top5_accuracy=top_k_accuracy(test, 5),
            train_accuracy=trained.evaluate("train").accuracy,
            validation_accuracy=trained.evaluate("validation").accuracy,
            seconds=trained.seconds,
            settings=trained.settings,
            test_correct=_right_or_wrong(test),
        )
        return result, test

    def accuracy_vs_classes(
        self, sizes, recipe: str = "tutorial", seeds=(0, 1, 2), recipes: dict[str, Row] | None = None
    ) -> list[RecipeResult]:
        """The recipe's test accuracy on random subsets of ``sizes`` labels, one subset per seed.

        Which labels are drawn changes the accuracy a lot when there are few of them, so each size
        is measured on several subsets (``subset_seed`` tells them apart); a size equal to the
        number of labels is measured once.
        """
        row = (recipes or RECIPES)[recipe]
        results = []
        for size in sizes:
            for seed in seeds if size < len(self.dataset.class_names) else seeds[:1]:
                subset = restrict(self.dataset, class_subset(self.dataset, size, seed))
                result, _ = self.run(*row, subset)
                result.subset_seed = seed
                results.append(result)
        return results


def as_measured(row: Row, settings: dict) -> Row:
    """``row`` with the L2 penalty its measured result chose (``RecipeResult.settings``), not chosen again:
    for a curve's label subsets, or the same recipe at another precision."""
    recipe = row.recipe
    if isinstance(recipe, pipeline.HeadRecipe) and recipe.l2_grid:
        recipe = dataclasses.replace(recipe, config=dataclasses.replace(recipe.config, l2=settings["l2"]), l2_grid=())
    return Row(row.backbone, recipe)


def _right_or_wrong(evaluation: train.Evaluation) -> str:
    return "".join("1" if right else "0" for right in evaluation.labels == evaluation.predictions)
