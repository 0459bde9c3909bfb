"""Fine-tune the top blocks of an EfficientNet-Lite backbone, in two phases, batch norms frozen.

Training only the new layer keeps the backbone's features as they are. Fine-tuning lets its last
blocks adapt to your images too, and every serious guide warns about the same two traps:

1. **Batch norms in training mode.** A batch norm normalises with the statistics of the current
   batch while training and updates its moving statistics; the pretrained weights were tuned to
   the ImageNet statistics. Keep every ``BatchNormalization`` layer frozen (``trainable=False``,
   which in Keras also means inference mode) and call the backbone with ``training=False``.
2. **A random head at the head's learning rate.** A new layer starts random, so its first
   gradients are large and noisy; flowing into the unfrozen blocks they wreck the pretrained
   weights. Train the head first on the frozen backbone (phase 1), then unfreeze the top blocks
   with a learning rate about 10x lower (phase 2).

The trick that keeps it fast on a CPU: the frozen lower blocks run once per image (in the folded
build, twice as fast) and their output, the *activations* where the trainable top begins, is
cached like a bottleneck; training then runs only the top blocks (the unfolded build, with real
batch norms). What is lost: random crops and flips can no longer be drawn afresh every epoch,
because they would have to go through the frozen part again; the distortion flags cache a fixed
few distorted variants instead.

Python: ``fine_tune(...)``; command line: ``retrain.py --fine_tune_blocks=2``.
Taught in ``notebooks/09_fine_tuning.ipynb``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from tlcourse import bottlenecks, efficientnet_lite, train
from tlcourse.backbones import Backbone, load_backbone
from tlcourse.data import Dataset

BATCH_NORM_MODES = ("frozen", "training")


@dataclass
class FineTuneConfig:
    blocks: int = 2  # how many of the backbone's last blocks to train (the head convolution always is)
    head_learning_rate: float = 1e-3  # phase 1: the new layer alone, on the frozen backbone
    head_epochs: int = 30  # phase 1 (early-stopped)
    learning_rate: float = 1e-4  # phase 2: the top blocks and the layer, about 10x lower
    epochs: int = 15  # phase 2 (early-stopped)
    batch_size: int = 64
    optimizer: str = "adam"  # or "sgd" (with momentum 0.9)
    learning_rate_schedule: str = "constant"  # or "cosine", within each phase
    label_smoothing: float = 0.1
    l2: float = 0.0  # L2 penalty on the new layer's weights
    dropout: float = 0.2
    standardize_bottlenecks: bool = False  # a fixed normalisation of the bottleneck in front of the new layer
    patience: int = 3  # epochs without a better validation accuracy before stopping (the best is kept)
    seed: int = 0
    # The two traps, for the lesson: "training" leaves the batch norms in training mode, and
    # two_phase=False trains a random head together with the top blocks at head_learning_rate.
    batch_norms: str = "frozen"
    two_phase: bool = True
    summaries_dir: str | Path | None = None  # TensorBoard logs of both phases
    final_tensor_name: str = "final_result"
    distortions: train.Distortions = field(default_factory=train.Distortions)
    num_distorted_variants: int = 4

    def __post_init__(self):
        if self.batch_norms not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norms must be one of {BATCH_NORM_MODES}, not {self.batch_norms!r}")
        train.check_optimizer(self.optimizer, self.learning_rate_schedule)
        if self.epochs < 1 or self.head_epochs < 0 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1 (head_epochs at least 0)")


def num_blocks(backbone_name: str) -> int:
    """How many MBConv blocks an EfficientNet-Lite variant has (16 for Lite0)."""
    if backbone_name not in efficientnet_lite.VARIANTS:
        raise ValueError(f"fine-tuning is built for the EfficientNet-Lite backbones, not {backbone_name}")
    width, depth, _ = efficientnet_lite.VARIANTS[backbone_name]
    return len(efficientnet_lite.block_plan(width, depth))


def split_backbone(backbone: Backbone, blocks: int, unfolded: Backbone | None = None) -> tuple[Backbone, keras.Model]:
    """(a frozen lower part as a cacheable ``Backbone`` giving flat activations, a trainable top).

    The lower part comes from ``backbone`` as it is (folded: fast caching). The top takes the
    activations reshaped to an image and returns the bottleneck; it is the *unfolded* build, with
    real ``BatchNormalization`` layers, holding the pretrained weights of ``unfolded`` (loaded
    here when not given).
    """
    total = num_blocks(backbone.name)
    if not 1 <= blocks < total:
        raise ValueError(f"blocks (retrain's fine_tune_blocks) must be between 1 and {total - 1}")
    start = total - blocks
    cut = backbone.network.get_layer(efficientnet_lite.block_output_layer(backbone.name, start - 1)).output
    if unfolded is None:
        unfolded = load_backbone(backbone.name, fold_batch_norms=False)
    if unfolded.batch_norms_folded or unfolded.name != backbone.name:
        raise ValueError(f"unfolded must be the unfolded build of {backbone.name}")
    top = efficientnet_lite.build_model(backbone.name, start_block=start, fold_batch_norms=False)
    for layer in top.layers:
        if layer.weights:
            layer.set_weights(unfolded.network.get_layer(layer.name).get_weights())
    flat = keras.layers.Flatten(name="activations")(cut)
    lower = keras.Model(backbone.network.input, flat, name=f"{backbone.name}_lower")
    size = int(np.prod(cut.shape[1:]))
    spec = dataclasses.replace(backbone.spec, name=f"{backbone.name}-below-block{start}", bottleneck_size=size)
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
    The graded exercise ``freeze_for_fine_tuning`` of ``notebooks/09_fine_tuning.ipynb``.
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


def new_layer(bottleneck_size: int, num_classes: int, config: FineTuneConfig, standardize=None) -> keras.Model:
    """The new layer: (a fixed standardisation,) dropout, a dense softmax layer; bottleneck -> probabilities."""
    inputs = keras.Input((bottleneck_size,), name="bottleneck")
    x = inputs
    if standardize is not None:
        mean, variance = standardize
        x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=regularizer, name=config.final_tensor_name
    )(x)
    return keras.Model(inputs, outputs, name="new_layer")


def fine_tuning_model(top: keras.Model, head: keras.Model, num_blocks: int, batch_norms: str = "frozen") -> keras.Model:
    """Cached flat activations -> probabilities: reshape, the top blocks, the new layer.

    ``batch_norms="frozen"`` (the right way) calls the top with ``training=False`` and freezes its
    batch norms; ``"training"`` (trap 1) leaves them trainable and in training mode.
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


def _optimizer(config: FineTuneConfig, learning_rate: float, steps: int):
    rate = learning_rate
    if config.learning_rate_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, steps))
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9)
    return keras.optimizers.Adam(rate)


def train_phase(
    model: keras.Model,
    train_split: train.Bottlenecks,
    validation: train.Bottlenecks,
    num_classes: int,
    config: FineTuneConfig,
    learning_rate: float,
    epochs: int,
    log_dir: Path | None = None,
    progress: bool = False,
) -> keras.callbacks.History:
    """Compile ``model`` (after any change of ``trainable``) and fit it, early-stopped on validation accuracy."""
    steps = epochs * int(np.ceil(len(train_split) / config.batch_size))
    model.compile(
        optimizer=_optimizer(config, learning_rate, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    callbacks = [keras.callbacks.EarlyStopping("val_accuracy", patience=config.patience, restore_best_weights=True)]
    if log_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(log_dir)))
    return model.fit(
        train_split.vectors,
        keras.utils.to_categorical(train_split.labels, num_classes),
        batch_size=config.batch_size,
        epochs=epochs,
        validation_data=(validation.vectors, keras.utils.to_categorical(validation.labels, num_classes)),
        class_weight=balanced_class_weights(train_split.labels, num_classes),
        callbacks=callbacks,
        verbose=1 if progress else 0,
    )


@dataclass
class FineTuned:
    model: keras.Model  # preprocessed images -> probabilities (last layer ``final_result``)
    trainable: keras.Model  # cached activations -> probabilities
    splits: dict[str, train.Bottlenecks]  # cached activations of each split
    test: train.Evaluation  # after phase 2
    head_test: train.Evaluation | None  # after phase 1 (frozen features, the new layer alone)
    history: keras.callbacks.History  # phase 2
    head_history: keras.callbacks.History | None  # phase 1
    cache_report: bottlenecks.CacheReport  # of the lower part's activations
    config: FineTuneConfig

    def evaluate(self, split: str, class_names: list[str]) -> train.Evaluation:
        return train.evaluate(self.trainable, self.splits[split], class_names)


def cache_activations(
    dataset: Dataset, lower: Backbone, bottleneck_dir, config: FineTuneConfig, progress: bool = False
) -> tuple[bottlenecks.CacheReport, dict[str, train.Bottlenecks]]:
    """Cache the lower part's activations of every image (and distorted variants of the training
    images when ``config.distortions`` is active); the training split holds the variants too."""
    report = bottlenecks.cache_bottlenecks(dataset.images, lower, bottleneck_dir, progress=progress)
    splits = {name: train.gather(dataset, name, lower, bottleneck_dir) for name in ("train", "validation", "test")}
    if config.distortions.active and config.num_distorted_variants > 0:
        settings = train.TrainConfig(
            distortions=config.distortions, num_distorted_variants=config.num_distorted_variants
        )
        train.cache_distorted_variants(dataset, lower, bottleneck_dir, settings, progress)
        pools = [splits["train"], *train.gather_distorted(dataset, lower, bottleneck_dir, settings)]
        splits["train"] = train.Bottlenecks(
            np.concatenate([p.vectors for p in pools]),
            np.concatenate([p.labels for p in pools]),
            [r for p in pools for r in p.records],
        )
    return report, splits


def fine_tune(
    dataset: Dataset,
    backbone: Backbone,
    bottleneck_dir,
    config: FineTuneConfig,
    progress: bool = True,
    unfolded: Backbone | None = None,
    prepared: Prepared | None = None,
) -> FineTuned:
    """Cache the lower part's activations, train the new layer on the frozen top (phase 1), then
    the top blocks and the layer together at ``config.learning_rate`` (phase 2).

    ``prepared`` (from ``prepare``) runs several settings on the same cached activations.
    """
    prepared = prepared or prepare(dataset, backbone, bottleneck_dir, config, unfolded, progress)
    if prepared.blocks != config.blocks:
        raise ValueError(f"prepared for {prepared.blocks} blocks, asked to fine-tune {config.blocks}")
    lower, splits, cache_report = prepared.lower, prepared.splits, prepared.cache_report
    top = keras.models.clone_model(prepared.top)  # every run starts from the pretrained weights
    top.set_weights(prepared.top.get_weights())
    num_classes = len(dataset.class_names)
    keras.utils.set_random_seed(config.seed)
    logs = Path(config.summaries_dir) if config.summaries_dir else None
    head_history = head_test = None
    if config.two_phase:
        bottleneck = prepared.bottlenecks()
        standardize = _standardize(bottleneck["train"]) if config.standardize_bottlenecks else None
        head = new_layer(top.output.shape[-1], num_classes, config, standardize)
        if config.head_epochs:
            head_history = train_phase(
                head,
                bottleneck["train"],
                bottleneck["validation"],
                num_classes,
                config,
                config.head_learning_rate,
                config.head_epochs,
                logs / "phase1_head" if logs else None,
                progress,
            )
        head_test = train.evaluate(head, bottleneck["test"], dataset.class_names)
        phase_2_rate = config.learning_rate
    else:  # trap 2: a random layer, trained with the blocks from the first step at the layer's rate
        standardize = _standardize(prepared.bottlenecks()["train"]) if config.standardize_bottlenecks else None
        head = new_layer(top.output.shape[-1], num_classes, config, standardize)
        phase_2_rate = config.head_learning_rate
    trainable = fine_tuning_model(top, head, config.blocks, config.batch_norms)
    history = train_phase(
        trainable,
        splits["train"],
        splits["validation"],
        num_classes,
        config,
        phase_2_rate,
        config.epochs,
        logs / "phase2_top_blocks" if logs else None,
        progress,
    )
    evaluation = train.evaluate(trainable, splits["test"], dataset.class_names)
    images = keras.Input(backbone.network.input.shape[1:], name="images")
    full = keras.Model(images, trainable(lower.network(images)), name=f"{backbone.name}_fine_tuned")
    return FineTuned(full, trainable, splits, evaluation, head_test, history, head_history, cache_report, config)


@dataclass
class Prepared:
    """A split backbone and its cached activations: what every fine-tuning run on a dataset starts from."""

    blocks: int
    lower: Backbone
    top: keras.Model  # pretrained, never trained itself (each run trains a copy)
    cache_report: bottlenecks.CacheReport
    splits: dict[str, train.Bottlenecks]
    _bottlenecks: dict[str, train.Bottlenecks] | None = None

    def bottlenecks(self) -> dict[str, train.Bottlenecks]:
        """Each split's bottlenecks: the cached activations through the pretrained top (computed once)."""
        if self._bottlenecks is None:
            self._bottlenecks = {name: bottlenecks_through_top(self.top, s) for name, s in self.splits.items()}
        return self._bottlenecks


def prepare(dataset, backbone, bottleneck_dir, config: FineTuneConfig, unfolded=None, progress=False) -> Prepared:
    """Split the backbone below its top ``config.blocks`` blocks and cache the activations there."""
    lower, top = split_backbone(backbone, config.blocks, unfolded)
    cache_report, splits = cache_activations(dataset, lower, bottleneck_dir, config, progress)
    return Prepared(config.blocks, lower, top, cache_report, splits)


def bottlenecks_through_top(top: keras.Model, split: train.Bottlenecks) -> train.Bottlenecks:
    """Bottlenecks of cached activations through the frozen top (inference mode): the same vectors as
    the whole backbone's, within float rounding."""
    images = split.vectors.reshape((-1, *top.input.shape[1:]))
    vectors = top.predict(images, batch_size=256, verbose=0) if len(split) else np.zeros((0, top.output.shape[-1]))
    return train.Bottlenecks(vectors.astype(np.float32), split.labels, split.records)


def _standardize(split: train.Bottlenecks) -> tuple[np.ndarray, np.ndarray]:
    return split.vectors.mean(axis=0), np.maximum(split.vectors.var(axis=0), 1e-6)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Weights that give every label the same total weight, like the tutorial's balanced batches."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return {c: (len(labels) / (num_classes * counts[c]) if counts[c] else 0.0) for c in range(num_classes)}
