"""Fine-tune the top blocks of an EfficientNet-Lite backbone and a new layer, on a CPU.

Training only the new layer keeps the backbone's features as they are. Fine-tuning lets its last
blocks adapt to your images too. The recipe (``FineTuneConfig``'s defaults, each measured by
``bench/fine_tuning.py``):

- **One phase, rates warmed up.** The new layer starts random and its first gradients are large
  and noisy; every rate rises from 0 over the first steps (``warmup``), then decays to 0 on a
  cosine, so those gradients cannot wreck the pretrained blocks (the classic answer, training the
  new layer alone first, is built by hand in the lesson).
- **A rate per depth.** The new layer learns 10x faster than the top block; each block below can
  learn ``layer_decay`` times slower than the one above (``optimizers_by_depth``).
- **Batch norms** in training mode (``"training"``) or kept as pretrained (``"frozen"``, which in
  Keras also means inference mode): measured on many_classes, training mode was ahead on
  validation (and on test ahead or within noise, run to run).

The trick that keeps it fast on a CPU: the frozen lower blocks run once per image (in the folded
build, twice as fast) and their output, the *activations* where the trainable top begins, is
cached like a bottleneck, and so are a few random views of each training image (crops and
mirror images, ``distortions``); training then runs only the top blocks (the unfolded build, with
real batch norms), showing each image through one of its views each epoch. What is lost: a fresh
crop every epoch, which would have to go through the frozen part again.

Python: ``fine_tune(...)``; command line: ``retrain.py --fine_tune_blocks=5`` (or ``--recipe=auto``).
Taught in ``notebooks/10_fine_tuning.ipynb``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tlcourse import backbones, bottlenecks, train
from tlcourse.backbones import Backbone, load_backbone
from tlcourse.data import Dataset

BATCH_NORM_MODES = ("frozen", "training")
# Random views of each training image: a crop keeping 59-100% of each side (35-100% of the area) and a
# mirror image half the time. Set flip_left_right=False where a flip changes the label (letters, signs).
DEFAULT_DISTORTIONS = bottlenecks.Distortions(flip_left_right=True, random_crop=30, random_scale=30)


@dataclass
class FineTuneConfig:
    """How ``fine_tune`` trains the top blocks and the new layer: one phase, measured defaults.

    Each default was chosen by ``bench/fine_tuning.py`` on many_classes' validation split
    (``bench/results/fine_tuning.md``): every rate warms up linearly, then decays to 0 on a cosine;
    the new layer learns at ``head_learning_rate``, the top block at ``learning_rate`` and each
    block below it ``layer_decay`` times slower; the batch norms train (``"training"``) or stay as
    pretrained (``"frozen"``); the training images are seen through ``distortions``, as
    ``num_distorted_variants`` cached views each plus the plain image, one view of each image per epoch
    (drawn at random; with ``fresh_views``, epoch ``e``'s own distorted view).
    """

    blocks: int = 5  # how many of the backbone's last blocks train (the head convolution always does)
    epochs: int = 8  # passes over the training images; the epoch with the best validation accuracy is kept
    learning_rate: float = 1e-3  # peak rate of the top block (AdamW)
    head_learning_rate: float = 1e-2  # peak rate of the new layer: random at first, it has the most to learn
    layer_decay: float = 1.0  # each block below the top learns this many times slower (1: all alike)
    warmup: float = 0.05  # fraction of the steps over which the rates rise from 0 to their peak
    weight_decay: float = 0.05  # AdamW's decoupled weight decay
    batch_size: int = 64
    label_smoothing: float = 0.1
    dropout: float = 0.2  # in front of the new layer
    batch_norms: str = "training"  # or "frozen": statistics and scales kept as pretrained
    seed: int = 0
    summaries_dir: str | Path | None = None  # TensorBoard logs: training loss, validation accuracy
    final_tensor_name: str = "final_result"
    distortions: bottlenecks.Distortions = field(default_factory=lambda: DEFAULT_DISTORTIONS)
    num_distorted_variants: int = 4
    fresh_views: bool = False  # epoch e shows every image its distorted view e: a new one each epoch (``Views``)

    def __post_init__(self):
        if self.batch_norms not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norms must be one of {BATCH_NORM_MODES}, not {self.batch_norms!r}")
        if self.fresh_views and (not self.distortions.active or self.num_distorted_variants < self.epochs):
            raise ValueError("fresh_views needs distortions and a distorted view per epoch (num_distorted_variants)")
        if self.epochs < 1 or self.batch_size < 1 or self.blocks < 1:
            raise ValueError("blocks, epochs and batch size must be at least 1")
        if not 0 <= self.warmup < 1 or self.layer_decay <= 0 or min(self.learning_rate, self.head_learning_rate) <= 0:
            raise ValueError("warmup must be in [0, 1), layer_decay and the learning rates above 0")


def blocks_of(spec: backbones.BackboneSpec | None, name: str = "") -> backbones.Blocks:
    """How the backbone of ``spec`` is cut into blocks; a ``ValueError`` for one that cannot be fine-tuned."""
    if spec is None or not spec.fine_tunable:
        names = " and ".join(backbones.fine_tunable_names())
        raise ValueError(f"fine-tuning is built for the {names} backbones, not {spec.name if spec else name}")
    return spec.blocks


def num_blocks(backbone_name: str) -> int:
    """How many blocks a fine-tunable backbone has (16 for EfficientNet-Lite0's MBConv blocks)."""
    return blocks_of(backbones.REGISTRY.get(backbone_name), backbone_name).count


def split_backbone(backbone: Backbone, blocks: int, unfolded: Backbone | None = None) -> tuple[Backbone, keras.Model]:
    """(a frozen lower part as a cacheable ``Backbone`` giving flat activations, a trainable top).

    The lower part comes from ``backbone`` as it is (folded: fast caching). The top takes the
    activations reshaped to an image and returns the bottleneck; it is the *unfolded* build, with
    real ``BatchNormalization`` layers, holding the pretrained weights of ``unfolded`` (loaded
    here when not given).
    """
    structure = blocks_of(backbone.spec)
    total = structure.count
    if not 1 <= blocks < total:
        raise ValueError(f"blocks (retrain's fine_tune_blocks) must be between 1 and {total - 1}")
    start = total - blocks
    cut = backbone.network.get_layer(structure.output_layer(start - 1)).output
    if unfolded is None:
        unfolded = load_backbone(backbone.name, fold_batch_norms=False)
    if unfolded.batch_norms_folded or unfolded.name != backbone.name:
        raise ValueError(f"unfolded must be the unfolded build of {backbone.name}")
    top = structure.build_top(start)
    for layer in top.layers:
        if layer.weights:
            layer.set_weights(unfolded.network.get_layer(layer.name).get_weights())
    flat = keras.layers.Flatten(name="activations")(cut)
    lower = keras.Model(backbone.network.input, flat, name=f"{backbone.name}_lower")
    size = int(np.prod(cut.shape[1:]))
    spec = dataclasses.replace(
        backbone.spec, name=f"{backbone.name}-below-block{start}", bottleneck_size=size, blocks=None
    )
    return Backbone(spec, lower, backbone.weights_digest), top


def _all_layers(model: keras.Model):
    """Every layer of ``model``, nested models opened, in order (a nested model before its layers)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The ``BatchNormalization`` layers of ``model``, nested models included."""
    return [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def freeze_for_fine_tuning(model: keras.Model, num_blocks: int) -> None:
    """Make only the top ``num_blocks`` blocks and what follows them trainable, batch norms frozen.

    Blocks are the layers named ``blocks.{i}.…``; everything from the first layer of the lowest
    trained block on trains (the head convolution and the new layer included), everything before
    it is frozen, and every ``BatchNormalization`` layer is frozen (so it also runs in inference
    mode). ``num_blocks=0`` trains only what follows the last block. Recompile after calling it.
    The graded exercise ``freeze_for_fine_tuning`` of ``notebooks/10_fine_tuning.ipynb``.
    """
    layers = list(_all_layers(model))
    block_of = [int(m.group(1)) if (m := re.match(r"blocks\.(\d+)\.", layer.name)) else None for layer in layers]
    blocks = [b for b in block_of if b is not None]
    if not blocks:
        raise ValueError(f"{model.name} has no layers named 'blocks.N.…'")
    first = max(blocks) + 1 - num_blocks
    if num_blocks > 0:
        start = block_of.index(first)
    else:  # just after the last layer of the last block
        start = max(i for i, b in enumerate(block_of) if b is not None) + 1
    model.trainable = True
    for position, layer in enumerate(layers):
        if isinstance(layer, keras.Model):
            continue  # a container: its own layers are set one by one
        layer.trainable = position >= start and not isinstance(layer, keras.layers.BatchNormalization)


def trainable_summary(model: keras.Model) -> dict[str, int]:
    """How many numbers train and how many are frozen (a quick check after freezing)."""
    count = lambda weights: int(sum(np.prod(w.shape) for w in weights))  # noqa: E731
    return {"trainable": count(model.trainable_weights), "frozen": count(model.non_trainable_weights)}


def new_layer(bottleneck_size: int, num_classes: int, dropout: float, name: str = "final_result") -> keras.Model:
    """The new layer: dropout, then a dense softmax layer; bottleneck -> probabilities."""
    inputs = keras.Input((bottleneck_size,), name="bottleneck")
    x = keras.layers.Dropout(dropout, name="dropout")(inputs)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=name)(x)
    return keras.Model(inputs, outputs, name="new_layer")


def fine_tuning_model(top: keras.Model, head: keras.Model, num_blocks: int, batch_norms: str = "frozen") -> keras.Model:
    """Cached flat activations -> probabilities: reshape, the top blocks, the new layer.

    ``batch_norms="frozen"`` calls the top with ``training=False`` and freezes its batch norms;
    ``"training"`` leaves them trainable and in training mode while the model trains.
    """
    if batch_norms not in BATCH_NORM_MODES:
        raise ValueError(f"batch_norms must be one of {BATCH_NORM_MODES}, not {batch_norms!r}")
    side_channels = tuple(top.input.shape[1:])
    activations = keras.Input((int(np.prod(side_channels)),), name="activations")
    x = keras.layers.Reshape(side_channels, name="to_image")(activations)
    x = top(x, training=False) if batch_norms == "frozen" else top(x)
    model = keras.Model(activations, head(x), name="fine_tuned_top")
    freeze_for_fine_tuning(model, num_blocks)
    if batch_norms == "training":
        for layer in batch_norm_layers(model):
            layer.trainable = True
    return model


def depth_groups(model: keras.Model) -> dict[int, list]:
    """The trainable weights of ``model`` by depth from the top: 0 for the new layer and the head
    convolution, 1 for the top block, 2 for the block below it, ... (what ``layer_decay`` slows)."""
    layers = list(_all_layers(model))
    blocks = [int(m.group(1)) for layer in layers if (m := re.match(r"blocks\.(\d+)\.", layer.name))]
    top_block = max(blocks, default=0)
    groups: dict[int, list] = {}
    for layer in layers:
        if isinstance(layer, keras.Model) or not layer.trainable_weights:
            continue
        match = re.match(r"blocks\.(\d+)\.", layer.name)
        depth = top_block + 1 - int(match.group(1)) if match else 0
        groups.setdefault(depth, []).extend(layer.trainable_weights)
    return groups


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """A rate rising linearly from 0 to ``peak`` over ``warmup_steps``, then falling to 0 on a cosine.

    ``warmup_steps=0``: no warm-up, the first step at the peak. The formula of the graded exercise
    ``warmup_cosine`` (``tlcourse/exercises/finetuning.py``), here on Keras tensors; a test keeps them equal.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak, self.total_steps, self.warmup_steps = peak, max(1, total_steps), max(0, warmup_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        rising = step / max(1, self.warmup_steps)  # unused when warmup_steps is 0: step < 0 never happens
        progress = keras.ops.minimum(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        falling = 0.5 * (1.0 + keras.ops.cos(np.pi * progress))
        return self.peak * keras.ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


class RisingRate(keras.optimizers.schedules.LearningRateSchedule):
    """A rate rising exponentially from ``low`` to ``high`` over ``steps`` (the range test's)."""

    def __init__(self, low: float, high: float, steps: int):
        self.low, self.high, self.steps = low, high, max(1, steps)

    def __call__(self, step):
        return self.low * (self.high / self.low) ** (keras.ops.cast(step, "float32") / self.steps)

    def get_config(self) -> dict:
        return {"low": self.low, "high": self.high, "steps": self.steps}


def optimizers_by_depth(model: keras.Model, head: keras.Model, config: FineTuneConfig, schedule) -> list:
    """(AdamW optimizer, its weights) pairs: the new layer ``head`` at ``head_learning_rate``, the head
    convolution and the top block at ``learning_rate``, each block below ``layer_decay`` times slower.
    ``schedule(peak)`` gives each rate its schedule (``WarmupCosine`` when training)."""
    new = {id(w) for w in head.trainable_weights}
    pairs = [(config.head_learning_rate, head.trainable_weights)]
    for depth, weights in sorted(depth_groups(model).items()):
        weights = [w for w in weights if id(w) not in new]
        if weights:
            pairs.append((config.learning_rate * config.layer_decay ** max(0, depth - 1), weights))
    return [
        (keras.optimizers.AdamW(schedule(rate), weight_decay=config.weight_decay), weights) for rate, weights in pairs
    ]


@dataclass
class Views:
    """The cached activations of one split: ``views[k][i]`` is view ``k`` of image ``i`` (view 0 the plain image).

    Each epoch shows each image through one of its views drawn at random; with ``one_per_epoch``,
    epoch ``e`` shows every image through its distorted view ``e`` (cache as many as there are
    epochs): a new random view each epoch, as augmentation drawn fresh inside the training graph
    gives, computed ahead.
    """

    views: list[np.ndarray]
    labels: np.ndarray
    records: list
    one_per_epoch: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def plain(self) -> bottlenecks.Bottlenecks:
        return bottlenecks.Bottlenecks(self.views[0], self.labels, self.records)

    def batch(self, indices: np.ndarray, rng: np.random.Generator, epoch: int = 0) -> np.ndarray:
        """One view of each image in ``indices`` (at random, or epoch ``epoch``'s), as a float32 batch."""
        if self.one_per_epoch:
            if epoch + 1 >= len(self.views):
                raise ValueError(f"epoch {epoch + 1} needs its own view: cache one distorted view per epoch")
            chosen = np.full(len(indices), epoch + 1)
        else:
            chosen = rng.integers(0, len(self.views), len(indices))
        return np.stack([self.views[k][i] for k, i in zip(chosen, indices, strict=True)]).astype(np.float32)


@dataclass
class FineTuned:
    model: keras.Model  # preprocessed images -> probabilities (last layer ``final_result``)
    trainable: keras.Model  # cached activations -> probabilities
    splits: dict[str, bottlenecks.Bottlenecks]  # cached (plain) activations of each split
    history: dict[str, list[float]]  # per epoch: training loss, validation accuracy, seconds
    best_epoch: int  # the epoch kept (best validation accuracy)
    cache_report: bottlenecks.CacheReport  # of the lower part's activations
    config: FineTuneConfig
    stopped_early: bool = False  # the deadline came before the last epoch

    def evaluate(self, split: str, class_names: list[str]) -> train.Evaluation:
        return train.evaluate(self.trainable, self.splits[split], class_names)

    @property
    def images_per_second(self) -> float:
        """Training images per second over the epochs run (forward and backward, cached activations)."""
        return len(self.splits["train"]) * len(self.history["seconds"]) / max(1e-9, sum(self.history["seconds"]))


@dataclass
class Prepared:
    """A split backbone and its cached activations: what every fine-tuning run on a dataset starts from."""

    blocks: int
    lower: Backbone
    top: keras.Model  # pretrained, never trained itself (each run trains a copy)
    cache_report: bottlenecks.CacheReport
    splits: dict[str, bottlenecks.Bottlenecks]  # plain activations of every split
    train_views: Views  # the training images' plain and distorted activations
    distortions: bottlenecks.Distortions
    _bottlenecks: dict[str, bottlenecks.Bottlenecks] | None = None

    def bottlenecks(self) -> dict[str, bottlenecks.Bottlenecks]:
        """Each split's bottlenecks: the cached activations through the pretrained top (computed once)."""
        if self._bottlenecks is None:
            self._bottlenecks = {name: bottlenecks_through_top(self.top, s) for name, s in self.splits.items()}
        return self._bottlenecks

    def views(self, config: FineTuneConfig) -> Views:
        """The training views ``config`` shows: the plain image and its first ``num_distorted_variants``
        distorted views (the plain image alone without distortions), in turn with ``fresh_views``.
        Variant ``k`` of an image is the same however many were cached, so one preparation with the
        most views serves every config that shows fewer (``bench/fine_tuning.py``'s ablations)."""
        if self.blocks != config.blocks or self.distortions != config.distortions:
            raise ValueError("prepared for other blocks or distortions than config asks for: prepare again")
        shown = 1 + (config.num_distorted_variants if config.distortions.active else 0)
        if shown > len(self.train_views.views):
            raise ValueError(
                f"config shows {shown} views of each training image, {len(self.train_views.views)} were prepared:"
                " prepare again with its num_distorted_variants"
            )
        views = self.train_views.views[:shown]
        return dataclasses.replace(self.train_views, views=views, one_per_epoch=config.fresh_views)


def prepare(dataset: Dataset, backbone, bottleneck_dir, config: FineTuneConfig, unfolded=None, progress=False):
    """Split the backbone below its top ``config.blocks`` blocks and cache the activations there:
    of every image, and of ``config.num_distorted_variants`` distorted views of each training image."""
    lower, top = split_backbone(backbone, config.blocks, unfolded)
    distorted = config.distortions, config.num_distorted_variants
    gathered = bottlenecks.cache_and_gather(dataset, lower, bottleneck_dir, *distorted, progress)
    views = [gathered.splits["train"], *gathered.distorted]
    # An image whose view failed to decode is left out of training, so that every view lines up.
    common = set.intersection(*({r.sha256 for r in view.records} for view in views))
    keep = [[i for i, r in enumerate(view.records) if r.sha256 in common] for view in views]
    train_views = Views(
        [view.vectors[k] for view, k in zip(views, keep, strict=True)],
        views[0].labels[keep[0]],
        [views[0].records[i] for i in keep[0]],
    )
    return Prepared(config.blocks, lower, top, gathered.report, gathered.splits, train_views, config.distortions)


def bottlenecks_through_top(top: keras.Model, split: bottlenecks.Bottlenecks) -> bottlenecks.Bottlenecks:
    """Bottlenecks of cached activations through the frozen top (inference mode): the same vectors as
    the whole backbone's, within float rounding."""
    images = split.vectors.reshape((-1, *top.input.shape[1:]))
    vectors = top.predict(images, batch_size=256, verbose=0) if len(split) else np.zeros((0, top.output.shape[-1]))
    return bottlenecks.Bottlenecks(vectors.astype(np.float32), split.labels, split.records)


def pretrained_copy(top: keras.Model) -> keras.Model:
    """A fresh copy of the pretrained top (``Prepared.top`` itself never trains)."""
    copy = keras.models.clone_model(top)
    copy.set_weights(top.get_weights())
    return copy


def fine_tune(
    dataset: Dataset,
    backbone: Backbone,
    bottleneck_dir,
    config: FineTuneConfig,
    progress: bool = True,
    unfolded: Backbone | None = None,
    prepared: Prepared | None = None,
    deadline: float | None = None,
) -> FineTuned:
    """Train the top ``config.blocks`` blocks and a new layer together on cached activations.

    One phase: every rate warms up from 0 (so the random new layer's first, noisy gradients
    cannot wreck the pretrained blocks), then decays on a cosine; each epoch shows every training
    image once, through one of its cached views drawn at random; the weights of the epoch with the
    best validation accuracy are kept (the last, without validation images). ``prepared`` (from
    ``prepare``) runs several settings on the same cache; ``deadline`` (a ``time.monotonic()``
    value) ends training after the epoch that passes it. Command line: ``retrain.py --fine_tune_blocks=N``.
    """
    prepared = prepared or prepare(dataset, backbone, bottleneck_dir, config, unfolded, progress)
    if prepared.lower.spec.preprocessing != backbone.spec.preprocessing:
        raise ValueError("prepared with the images seen another way (fit) than backbone sees them: prepare again")
    views, validation = prepared.views(config), prepared.splits["validation"]
    keras.utils.set_random_seed(config.seed)
    num_classes = len(dataset.class_names)
    top = pretrained_copy(prepared.top)
    head = new_layer(top.output.shape[-1], num_classes, config.dropout, config.final_tensor_name)
    model = fine_tuning_model(top, head, config.blocks, config.batch_norms)
    if len(views) == 0:
        raise ValueError("no training images: cache them first (is the dataset empty?)")
    steps_per_epoch = int(np.ceil(len(views) / config.batch_size))
    total = config.epochs * steps_per_epoch
    schedule = lambda peak: WarmupCosine(peak, total, int(config.warmup * total))  # noqa: E731
    optimizers = optimizers_by_depth(model, head, config, schedule)
    step = training_step(model, optimizers, num_classes, config.label_smoothing)
    rng = np.random.default_rng(config.seed)
    history = {"loss": [], "val_accuracy": [], "seconds": []}
    best = (-1.0, None)
    writer = _summary_writer(config.summaries_dir)
    bar = tqdm(total=config.epochs * steps_per_epoch, unit="step", desc="fine-tuning", disable=not progress)
    with bar:
        for epoch in range(config.epochs):
            started = time.monotonic()
            order = rng.permutation(len(views))
            losses = []
            for batch in np.array_split(order, steps_per_epoch):
                losses.append(float(step(views.batch(batch, rng, epoch), views.labels[batch])))
                bar.update(1)
            accuracy = train.evaluate(model, validation, dataset.class_names).accuracy if len(validation) else 0.0
            history["loss"].append(float(np.mean(losses)))
            history["val_accuracy"].append(accuracy)
            history["seconds"].append(time.monotonic() - started)
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses):.3f}", val_acc=f"{accuracy:.1%}")
            _write_epoch(writer, epoch + 1, history)
            if accuracy > best[0] or not len(validation):  # without validation images: the last epoch
                best = (accuracy, model.get_weights(), epoch + 1)
            if deadline is not None and time.monotonic() > deadline and epoch + 1 < config.epochs:
                break
    model.set_weights(best[1])
    images = keras.Input(backbone.network.input.shape[1:], name="images")
    full = keras.Model(images, model(prepared.lower.network(images)), name=f"{backbone.name}_fine_tuned")
    stopped = len(history["loss"]) < config.epochs
    return FineTuned(full, model, prepared.splits, history, best[2], prepared.cache_report, config, stopped)


def learning_rate_range_test(
    prepared: Prepared, num_classes: int, config: FineTuneConfig, low: float = 1e-6, high: float = 1.0, steps: int = 100
) -> dict:
    """fastai's ``lr_find`` for the recipe's model: one batch a step while every rate rises exponentially
    (the top block's from ``low`` to ``high``, the others in the recipe's proportions), the training
    loss recorded, smoothed, until it is four times its lowest. Suggests a tenth of the rate with
    the lowest smoothed loss: fast, but short of where the loss turns up. The model is thrown away.
    """
    keras.utils.set_random_seed(config.seed)
    top = pretrained_copy(prepared.top)
    head = new_layer(top.output.shape[-1], num_classes, config.dropout, config.final_tensor_name)
    model = fine_tuning_model(top, head, config.blocks, config.batch_norms)
    schedule = lambda peak: RisingRate(low * peak / config.learning_rate, high * peak / config.learning_rate, steps)  # noqa: E731
    step = training_step(model, optimizers_by_depth(model, head, config, schedule), num_classes, config.label_smoothing)
    views, rng = prepared.views(config), np.random.default_rng(config.seed)
    rates, losses, smoothed = [], [], 0.0
    for i in tqdm(range(steps), desc="learning-rate range test", unit="step", leave=False):
        batch = rng.choice(len(views), min(config.batch_size, len(views)), replace=False)
        loss = float(step(views.batch(batch, rng), views.labels[batch]))
        smoothed = 0.9 * smoothed + 0.1 * loss
        rates.append(low * (high / low) ** (i / steps))
        losses.append(smoothed / (1 - 0.9 ** (i + 1)))  # bias-corrected, as fastai does
        if not np.isfinite(loss) or losses[-1] > 4 * min(losses):
            break
    lowest = rates[int(np.argmin(losses))]
    return {"rates": rates, "losses": losses, "lowest_loss_rate": lowest, "suggested": lowest / 10}


def training_step(model: keras.Model, optimizers: list[tuple], num_classes: int, label_smoothing: float):
    loss_function = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    weights = [w for _, group in optimizers for w in group]

    @tf.function(reduce_retracing=True, autograph=False)  # no tensor-dependent Python control flow to convert
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_function(tf.one_hot(y, num_classes), model(x, training=True))
        gradients = tape.gradient(loss, weights)
        start = 0
        for optimizer, group in optimizers:
            optimizer.apply_gradients(zip(gradients[start : start + len(group)], group, strict=True))
            start += len(group)
        return loss

    return step


def _summary_writer(summaries_dir):
    return tf.summary.create_file_writer(str(Path(summaries_dir) / "fine_tuning")) if summaries_dir else None


def _write_epoch(writer, epoch: int, history: dict) -> None:
    if writer is not None:
        with writer.as_default(step=epoch):
            tf.summary.scalar("loss", history["loss"][-1])
            tf.summary.scalar("validation_accuracy", history["val_accuracy"][-1])


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Weights that give every label the same total weight, like the tutorial's balanced batches."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return {c: (len(labels) / (num_classes * counts[c]) if counts[c] else 0.0) for c in range(num_classes)}
