"""One pipeline: a dataset, a backbone and a recipe in; a trained model, its splits and its time out.

Every caller that trains goes through here: ``retrain.py`` (one recipe, or ``--recipe=auto``),
the benches and the lessons. A recipe is a config, not a dict of settings:

- ``HeadRecipe``: a new layer on the frozen backbone's cached bottlenecks (``train.train_head``),
  optionally with its L2 penalty chosen on validation from a grid;
- ``FineTuneRecipe``: the backbone's top blocks and a new layer on cached activations
  (``finetune.fine_tune``);
- ``AveragedRecipe``: a new layer's and fine-tuned models' probabilities averaged, the new layer's
  weight chosen on validation.

Each recipe says how an image becomes the backbone's square (``fit``: its centre cropped, as
ImageNet was seen, or the whole image padded with white; ``Preprocessing``). ``search`` runs
several recipes within a time budget, cheapest first, and keeps the one with the best validation
accuracy; the test split is never looked at to choose. A recipe whose ``fit`` is ``None`` takes the
fit of the best new layer trained before it, so the cheap recipes choose how the costly ones see.
Taught in ``notebooks/10_fine_tuning.ipynb``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from tlcourse import bottlenecks, finetune, stats, train
from tlcourse.data import Dataset, SkippedFile


@dataclass
class Trained:
    """What one recipe made: the model to export and the cached splits it was measured on."""

    name: str
    model: keras.Model  # preprocessed images -> probabilities (``backbone.exported_classifier`` wraps it)
    classifier: keras.Model  # what ``splits`` hold (bottlenecks or activations) -> probabilities
    splits: dict[str, bottlenecks.Bottlenecks]
    class_names: list[str]
    seconds: float
    settings: dict  # the recipe's config, as the report stores it
    failures: list[SkippedFile] = field(default_factory=list)  # images that could not be decoded
    whole_network: bool = False  # ``model`` includes the backbone's top blocks (fine-tuned)
    notes: dict = field(default_factory=dict)  # what the recipe chose or measured on its way (L2, epochs)
    history: object = None  # what training recorded: ``train.TrainingHistory``, or fine-tuning's per-epoch dict
    fit: str = "crop"  # how the images became the backbone's square (``Preprocessing.fit``)

    def evaluate(self, split: str) -> train.Evaluation:
        return train.evaluate(self.classifier, self.splits[split], self.class_names)

    def exported(self, backbone) -> keras.Model:
        """Images (uint8, any size) -> probabilities, seen through the recipe's fit: what ``retrain`` writes."""
        return backbone.fitting(self.fit).exported_classifier(self.model, whole_network=self.whole_network)


FIT_NAMES = {"crop": "", "pad": ", whole image padded"}  # what a recipe's fit adds to its name


def _with_fit(recipe, fit: str):
    """``recipe`` seeing images through ``fit``, named so (the same recipe when it already does)."""
    if recipe.fit == fit:
        return recipe
    return dataclasses.replace(recipe, name=recipe.name + FIT_NAMES[fit], fit=fit)


@dataclass(frozen=True)
class HeadRecipe:
    """A new layer on frozen bottlenecks; with ``l2_grid``, its L2 penalty is chosen on validation."""

    name: str
    config: train.TrainConfig
    l2_grid: tuple[float, ...] = ()
    fit: str | None = "crop"  # None: chosen by ``search``

    with_fit = _with_fit

    def train(
        self,
        dataset: Dataset,
        backbone,
        bottleneck_dir,
        progress=True,
        strategy=None,
        deadline=None,
        earlier=None,
        prepared: finetune.Prepared | None = None,  # fine-tuning's activations: a new layer trains on bottlenecks
    ) -> Trained:
        started = time.perf_counter()
        config = self.config
        backbone = backbone.fitting(self.fit)
        views = config.distortions, config.num_distorted_variants
        gathered = bottlenecks.cache_and_gather(dataset, backbone, bottleneck_dir, *views, progress)
        splits, distorted = gathered.splits, gathered.distorted
        notes = {}
        if self.l2_grid:
            scores = {}
            for l2 in self.l2_grid:
                candidate = dataclasses.replace(config, l2=l2)
                head, _ = train.train_head(
                    splits["train"], splits["validation"], len(dataset.class_names), candidate, distorted, False
                )
                scores[l2] = train.evaluate(head, splits["validation"], dataset.class_names).accuracy
            config = dataclasses.replace(config, l2=max(scores, key=lambda l2: (scores[l2], l2)))
            notes["l2_validation_accuracy"] = scores
        head, history = train.train_head(
            splits["train"], splits["validation"], len(dataset.class_names), config, distorted, progress, strategy
        )
        notes["steps"] = history.steps[-1] if history.steps else 0
        return Trained(
            self.name,
            head,
            head,
            splits,
            dataset.class_names,
            time.perf_counter() - started,
            {**_settings(config), "fit": self.fit},
            gathered.report.failures,
            notes=notes,
            history=history,
            fit=self.fit,
        )


@dataclass(frozen=True)
class FineTuneRecipe:
    """The backbone's top ``config.blocks`` blocks and a new layer, trained on cached activations."""

    name: str
    config: finetune.FineTuneConfig
    fit: str | None = "crop"  # None: chosen by ``search``

    with_fit = _with_fit

    def train(
        self,
        dataset: Dataset,
        backbone,
        bottleneck_dir,
        progress=True,
        strategy=None,
        deadline=None,
        earlier=None,
        prepared: finetune.Prepared | None = None,
    ) -> Trained:
        started = time.perf_counter()
        backbone = backbone.fitting(self.fit)
        tuned = finetune.fine_tune(
            dataset, backbone, bottleneck_dir, self.config, progress, prepared=prepared, deadline=deadline
        )
        notes = {
            "epochs_run": len(tuned.history["loss"]),
            "best_epoch": tuned.best_epoch,
            "stopped_at_the_deadline": tuned.stopped_early,
            "training_images_per_second": round(tuned.images_per_second, 1),
            "seconds_per_epoch": round(float(np.mean(tuned.history["seconds"])), 1),
            "validation_accuracy_by_epoch": tuned.history["val_accuracy"],
        }
        return Trained(
            self.name,
            tuned.model,
            tuned.trainable,
            tuned.splits,
            dataset.class_names,
            time.perf_counter() - started,
            {**_settings(self.config), "fit": self.fit},
            tuned.cache_report.failures,
            True,
            notes,
            tuned.history,
            self.fit,
        )


@dataclass(frozen=True)
class AveragedRecipe:
    """A frozen-feature recipe's probabilities averaged with fine-tuned ones; the frozen layer's weight
    is chosen on validation from ``head_weights`` (0: the fine-tuned models alone).

    Fine-tuning gains on labels with many training images and can lose on labels with few, where
    the frozen layer, with far fewer weights to fit, errs less; averaging keeps some of each. Members
    already trained in the same search (``earlier``, by name) are reused, not trained again.
    """

    name: str
    head: HeadRecipe
    fine_tuned: tuple[FineTuneRecipe, ...]
    head_weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)

    def __post_init__(self):
        if not self.fine_tuned or len({recipe.config.blocks for recipe in self.fine_tuned}) != 1:
            raise ValueError("an averaged recipe needs fine-tuned members that all fine-tune the same blocks")

    def members(self) -> tuple[Recipe, ...]:
        return (self.head, *self.fine_tuned)

    @property
    def fit(self) -> str | None:
        """The members' fit: one for all (``None`` while ``search`` has still to choose it)."""
        fits = {recipe.fit for recipe in self.fine_tuned}
        return self.head.fit if fits == {self.head.fit} else None

    def with_fit(self, fit: str) -> AveragedRecipe:
        fine_tuned = tuple(recipe.with_fit(fit) for recipe in self.fine_tuned)
        name = self.name if self.fit == fit else self.name + FIT_NAMES[fit]
        return dataclasses.replace(self, name=name, head=self.head.with_fit(fit), fine_tuned=fine_tuned)

    def train(
        self,
        dataset: Dataset,
        backbone,
        bottleneck_dir,
        progress=True,
        strategy=None,
        deadline=None,
        earlier=None,
        prepared: finetune.Prepared | None = None,
    ) -> Trained:
        started = time.perf_counter()
        if self.fit is None:
            raise ValueError("the members of an averaged recipe must see images through one fit")
        backbone = backbone.fitting(self.fit)
        earlier = earlier or {}
        members = [
            earlier.get(recipe.name)
            or recipe.train(dataset, backbone, bottleneck_dir, progress, strategy, deadline, prepared=prepared)
            for recipe in self.members()
        ]
        head, tuned = members[0], members[1:]
        lower, top = finetune.split_backbone(backbone, self.fine_tuned[0].config.blocks)
        # On the fine-tuned models' inputs (the cached activations), the frozen layer sees its bottleneck
        # through the pretrained top, which is the whole backbone's bottleneck within float rounding.
        activations = keras.Input(tuned[0].classifier.input.shape[1:], name="activations")
        bottleneck = top(keras.layers.Reshape(top.input.shape[1:], name="to_image")(activations), training=False)
        frozen_part = keras.Model(activations, head.classifier(bottleneck), name="frozen_layer")
        tuned_part = [
            keras.Model(activations, t.classifier(activations), name=f"fine_tuned_{i}") for i, t in enumerate(tuned)
        ]

        validation = tuned[0].splits["validation"]
        if not len(validation):
            raise ValueError("choosing the new layer's weight needs validation images: raise validation_percentage")
        frozen_probabilities = frozen_part.predict(validation.vectors, verbose=0)
        tuned_probabilities = np.mean([part.predict(validation.vectors, verbose=0) for part in tuned_part], axis=0)
        scores = {
            weight: float(
                np.mean(
                    (weight * frozen_probabilities + (1 - weight) * tuned_probabilities).argmax(1) == validation.labels
                )
            )
            for weight in self.head_weights
        }
        weight = max(scores, key=lambda w: (scores[w], -w))  # ties: the smaller weight of the frozen layer
        classifier = _weighted_average(
            activations, [frozen_part, *tuned_part], [weight] + [(1 - weight) / len(tuned)] * len(tuned)
        )
        images = keras.Input(backbone.network.input.shape[1:], name="images")
        model = keras.Model(images, classifier(lower.network(images)), name=f"{backbone.name}_averaged")
        # Its cost: what ran here, and the members reused from earlier in the search.
        seconds = time.perf_counter() - started + sum(t.seconds for t in members if t.name in earlier)
        return Trained(
            self.name,
            model,
            classifier,
            tuned[0].splits,
            dataset.class_names,
            seconds,
            {"members": [t.name for t in members], "head_weights": list(self.head_weights)},
            tuned[0].failures,
            True,
            {"head_weight": weight, "validation_accuracy_by_head_weight": scores},
            fit=self.fit,
        )


def _weighted_average(inputs, parts: list[keras.Model], weights: list[float]) -> keras.Model:
    """``inputs`` -> the weighted sum of ``parts``' outputs (weights summing to 1), built of plain layers."""
    outputs = [
        keras.layers.Rescaling(w, name=f"weight_{i}")(part(inputs))
        for i, (part, w) in enumerate(zip(parts, weights, strict=True))
    ]
    return keras.Model(inputs, keras.layers.Add(name="averaged")(outputs), name="averaged")


Recipe = HeadRecipe | FineTuneRecipe | AveragedRecipe


def _settings(config) -> dict:
    return {key: value for key, value in dataclasses.asdict(config).items() if key != "summaries_dir"}


def run(
    recipe: Recipe,
    dataset: Dataset,
    backbone,
    bottleneck_dir,
    progress=True,
    strategy=None,
    prepared: finetune.Prepared | None = None,
) -> Trained:
    """Train ``recipe`` on ``dataset``: the one way every caller trains (a fit left to choose: cropped).

    ``prepared`` (``finetune.prepare``, through the recipe's fit): activations already cached and
    gathered, shared by several fine-tuning recipes on one dataset (``bench/fine_tuning.py``'s
    ablations); a new layer on frozen features does not use them.
    """
    recipe = recipe if recipe.fit else recipe.with_fit("crop")
    return recipe.train(dataset, backbone, Path(bottleneck_dir), progress, strategy, prepared=prepared)


def best_fit(trained: list[Trained], validation: list[stats.Interval]) -> str:
    """The fit of the new layer (on frozen features) with the best validation accuracy so far
    (ties: the earlier); ``"crop"`` before any has run."""
    scored = enumerate(zip(trained, validation, strict=True))
    heads = [(interval.value, -i, t.fit) for i, (t, interval) in scored if not t.whole_network]
    return max(heads)[2] if heads else "crop"


@dataclass
class Search:
    """Recipes tried on the same splits, each with its validation accuracy, and the one chosen."""

    trained: list[Trained]
    validation: list[stats.Interval]  # of each recipe tried, in the same order
    skipped: dict[str, str]  # recipe -> why it did not run (the budget was spent, or it could not win)
    budget_minutes: float

    @property
    def chosen(self) -> Trained:
        """The best validation accuracy (ties: the earlier, cheaper recipe). Never looks at test."""
        best = max(range(len(self.trained)), key=lambda i: (self.validation[i].value, -i))
        return self.trained[best]

    def table(self) -> list[dict]:
        """One row per recipe tried: validation accuracy with its interval, and seconds."""
        chosen = self.chosen
        return [
            {
                "recipe": trained.name,
                "validation_accuracy": interval.value,
                "validation_interval": [interval.low, interval.high],
                "validation_images": interval.total,
                "seconds": round(trained.seconds, 1),
                "chosen": trained is chosen,
                "settings": trained.settings,
                "notes": trained.notes,
            }
            for trained, interval in zip(self.trained, self.validation, strict=True)
        ]

    def __str__(self) -> str:
        lines = ["recipe                                      validation [95% interval]      seconds"]
        for row in self.table():
            low, high = row["validation_interval"]
            mark = "  <- chosen" if row["chosen"] else ""
            lines.append(
                f"{row['recipe'][:43]:<43} {row['validation_accuracy']:6.1%} [{low:.1%}, {high:.1%}]"
                f"   {row['seconds']:7.0f}{mark}"
            )
        lines += [f"{name[:43]:<43} not run: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def validation_accuracy(trained: Trained) -> stats.Interval:
    """``trained``'s accuracy on the whole validation split, with its bootstrap interval."""
    evaluation = trained.evaluate("validation")
    return stats.bootstrap_interval(evaluation.labels == evaluation.predictions)


def search(
    recipes: list[Recipe], dataset: Dataset, backbone, bottleneck_dir, time_budget_minutes: float = 60, progress=True
) -> Search:
    """Train ``recipes`` in order (cheapest first) until the budget is spent; choose on validation.

    After the first, a recipe starts only while time is left, and only while no recipe has been
    right on every validation image (a later one could then at best tie, and ties go to the
    cheaper). A recipe left to choose its fit gets ``best_fit``'s. A fine-tuning recipe that runs
    past the budget stops after the epoch that crosses it, keeping its best epoch so far.
    """
    if not len(dataset.split("validation")):
        raise ValueError("choosing a recipe needs validation images: raise validation_percentage")
    deadline = time.monotonic() + 60 * time_budget_minutes
    trained, validation, skipped = [], [], {}
    for recipe in recipes:
        earlier = {t.name: t for t in trained}
        if recipe.fit is None:
            recipe = recipe.with_fit(best_fit(trained, validation))
        if validation and max(v.value for v in validation) == 1.0:
            skipped[recipe.name] = "an earlier recipe was right on every validation image"
            continue
        if isinstance(recipe, AveragedRecipe) and not all(m.name in earlier for m in recipe.members()):
            skipped[recipe.name] = "the recipes it averages did not all run"
            continue
        # The first, cheapest recipe always runs; an average of recipes that ran costs seconds.
        if trained and time.monotonic() >= deadline and not isinstance(recipe, AveragedRecipe):
            skipped[recipe.name] = f"the time budget ({time_budget_minutes:g} min) was spent"
            continue
        if progress:
            print(f"recipe: {recipe.name}", flush=True)
        trained.append(
            recipe.train(dataset, backbone, Path(bottleneck_dir), progress, deadline=deadline, earlier=earlier)
        )
        validation.append(validation_accuracy(trained[-1]))
    return Search(trained, validation, skipped, time_budget_minutes)


# The tuned new layer of notebooks/09_many_classes.ipynb: Adam, a cosine schedule, early stopping on
# the whole validation split, standardised bottlenecks; its L2 penalty chosen from L2_GRID.
TUNED_HEAD = train.TrainConfig(
    optimizer="adam",
    learning_rate=0.001,
    learning_rate_schedule="cosine",
    how_many_training_steps=3000,
    train_batch_size=100,
    validation_batch_size=-1,
    eval_step_interval=50,
    early_stopping_patience=10,
    standardize_bottlenecks=True,
)
L2_GRID = (0.0, 1e-4, 1e-3, 1e-2)


def auto_recipes(given: train.TrainConfig, fine_tune: finetune.FineTuneConfig | None) -> list[Recipe]:
    """What ``retrain.py --recipe=auto`` tries, cheapest first: the new layer the flags describe, the
    tuned new layer on the images cropped and on the whole images padded, and (for a backbone that
    can be fine-tuned) the top blocks fine-tuned, then averaged with the tuned new layer (which costs
    seconds once both have run), both seeing the images as the best new layer did."""
    shared = {"seed": given.seed, "final_tensor_name": given.final_tensor_name, "summaries_dir": given.summaries_dir}
    tuned = HeadRecipe("tuned new layer (L2 chosen on validation)", dataclasses.replace(TUNED_HEAD, **shared), L2_GRID)
    recipes: list[Recipe] = [HeadRecipe("new layer, as the flags say", given), tuned, tuned.with_fit("pad")]
    if fine_tune is not None:
        fine_tuned = FineTuneRecipe(f"top {fine_tune.blocks} blocks fine-tuned", fine_tune, fit=None)
        recipes += [
            fine_tuned,
            AveragedRecipe(f"{fine_tuned.name}, averaged with the tuned new layer", tuned, (fine_tuned,)),
        ]
    return recipes
