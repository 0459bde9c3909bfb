"""Fine-tune the top blocks of an EfficientNet-Lite backbone together with the new layer.

Training only the new layer keeps the backbone's features as they are. Fine-tuning lets its last
blocks adapt to your images too. The trick that keeps it fast on a CPU: the frozen lower blocks
still run once per image, and their output (the *activations* where the trainable top begins)
is cached like a bottleneck; training then only runs the top blocks.

Python: ``fine_tune(...)``; command line: ``retrain.py --fine_tune_blocks=2``.
Taught in ``notebooks/07_many_classes.ipynb``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np

from tlcourse import bottlenecks, efficientnet_lite, train
from tlcourse.backbones import Backbone
from tlcourse.data import Dataset


@dataclass
class FineTuneConfig:
    blocks: int = 2  # how many of the backbone's last blocks to train (the head convolution always is)
    learning_rate: float = 3e-4
    epochs: int = 15
    batch_size: int = 64
    label_smoothing: float = 0.1
    patience: int = 3  # epochs without a better validation accuracy before stopping (the best is kept)
    seed: int = 0


def split_backbone(backbone: Backbone, blocks: int) -> tuple[Backbone, keras.Model]:
    """(a frozen lower part as a cacheable ``Backbone`` giving flat activations, a trainable top).

    The top takes the activations reshaped to an image and returns the bottleneck; it starts
    with the pretrained weights.
    """
    if backbone.name not in efficientnet_lite.VARIANTS:
        raise ValueError(f"fine-tuning is built for the EfficientNet-Lite backbones, not {backbone.name}")
    width, depth, _ = efficientnet_lite.VARIANTS[backbone.name]
    num_blocks = len(efficientnet_lite.block_plan(width, depth))
    if not 1 <= blocks < num_blocks:
        raise ValueError(f"--fine_tune_blocks must be between 1 and {num_blocks - 1}")
    start = num_blocks - blocks
    cut = backbone.features.get_layer(efficientnet_lite.block_output_layer(backbone.name, start - 1)).output
    top = efficientnet_lite.build_model(backbone.name, start_block=start)
    for layer in top.layers:
        if layer.weights:
            layer.set_weights(backbone.features.get_layer(layer.name).get_weights())
    flat = keras.layers.Flatten(name="activations")(cut)
    lower = keras.Model(backbone.features.input, flat, name=f"{backbone.name}_lower")
    size = int(np.prod(cut.shape[1:]))
    spec = dataclasses.replace(backbone.spec, name=f"{backbone.name}-below-block{start}", bottleneck_size=size)
    return Backbone(spec, lower, backbone.weights_digest), top


@dataclass
class FineTuned:
    model: keras.Model  # preprocessed images -> probabilities (last layer ``final_result``)
    trainable: keras.Model  # cached activations -> probabilities
    splits: dict[str, train.Bottlenecks]  # cached activations of each split
    test: train.Evaluation
    history: keras.callbacks.History
    cache_report: bottlenecks.CacheReport  # of the lower part's activations

    def evaluate(self, split: str, class_names: list[str]) -> train.Evaluation:
        return train.evaluate(self.trainable, self.splits[split], class_names)


def fine_tune(
    dataset: Dataset, backbone: Backbone, bottleneck_dir, config: FineTuneConfig, progress: bool = True
) -> FineTuned:
    """Cache the lower part's activations, then train the top blocks and a new layer on them."""
    lower, top = split_backbone(backbone, config.blocks)
    cache_report = bottlenecks.cache_bottlenecks(dataset.images, lower, bottleneck_dir, progress=progress)
    splits = {name: train.gather(dataset, name, lower, bottleneck_dir) for name in ("train", "validation", "test")}
    keras.utils.set_random_seed(config.seed)
    activations = keras.Input((lower.bottleneck_size,), name="activations")
    x = keras.layers.Reshape(top.input.shape[1:])(activations)
    x = top(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(len(dataset.class_names), activation="softmax", name="final_result")(x)
    trainable = keras.Model(activations, outputs, name="fine_tuned_top")
    trainable.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    num_classes = len(dataset.class_names)
    history = trainable.fit(
        splits["train"].vectors,
        keras.utils.to_categorical(splits["train"].labels, num_classes),
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(
            splits["validation"].vectors,
            keras.utils.to_categorical(splits["validation"].labels, num_classes),
        ),
        class_weight=_balanced_class_weights(splits["train"].labels, num_classes),
        callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=config.patience, restore_best_weights=True)],
        verbose=1 if progress else 0,
    )
    evaluation = train.evaluate(trainable, splits["test"], dataset.class_names)
    images = keras.Input(backbone.features.input.shape[1:], name="images")
    full = keras.Model(images, trainable(lower.features(images)), name=f"{backbone.name}_fine_tuned")
    return FineTuned(full, trainable, splits, evaluation, history, cache_report)


def _balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Weights that give every label the same total weight, like the tutorial's balanced batches."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return {c: (len(labels) / (num_classes * counts[c]) if counts[c] else 0.0) for c in range(num_classes)}
