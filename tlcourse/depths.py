"""Why the features transfer: the same linear layer on activations taken at several depths.

A backbone's early blocks respond to edges, colours and textures, which any picture has; its
late blocks to object parts that ImageNet's photos taught it. Train the same new layer on the
globally average-pooled output of an early, a middle and a late block and on the bottleneck, and
the accuracy at each depth says how much of what the network learnt helps *your* images.

- ``depth_model``: one pass of the backbone, the pooled activations of several blocks as outputs.
- ``activations_at_depths``: those activations for a list of images, computed in batches (they
  are not cached: the bottleneck cache holds the last depth only).
- ``probe_depths``: k-fold cross-validated accuracy of ``train.fit_linear`` at each depth,
  so every image is tested once by a layer that did not see it.

Taught in ``notebooks/07_why_features_transfer.ipynb``.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tlcourse import backbones
from tlcourse.bottlenecks import image_pipeline
from tlcourse.exercises.data_quality import folds_for
from tlcourse.train import fit_linear

BLOCKS = (2, 4, 6, 10, 14)  # blocks counted from 0; Lite0 has 16, so 2 is early and 14 is near the top
BOTTLENECK = "bottleneck"


def depth_names(blocks=BLOCKS) -> list[str]:
    return [f"block {b}" for b in blocks] + [BOTTLENECK]


def depth_model(backbone, blocks=BLOCKS) -> keras.Model:
    """Preprocessed images -> the pooled output of each block in ``blocks``, then the bottleneck."""
    if not backbone.spec.fine_tunable:  # what fine-tuning cuts at, the probes read from
        names = " and ".join(backbones.fine_tunable_names())
        raise ValueError(f"activations at depths are built for the {names} backbones, not {backbone.name}")
    num_blocks = backbone.spec.blocks.count
    if any(not 0 <= b < num_blocks for b in blocks):
        raise ValueError(f"blocks must be between 0 and {num_blocks - 1}, got {list(blocks)}")
    network = backbone.network
    outputs = [
        keras.layers.GlobalAveragePooling2D(name=f"pooled_block_{b}")(
            network.get_layer(backbone.spec.blocks.output_layer(b)).output
        )
        for b in blocks
    ]
    return keras.Model(network.input, outputs + [network.output], name=f"{backbone.name}_depths")


def describe_depths(backbone, blocks=BLOCKS) -> list[dict]:
    """For each depth: its name, the activation map's side in pixels, and how many numbers pooling gives.

    The bottleneck is the average of the last convolution's map, so its side is that map's.
    """
    rows = []
    for b in blocks:
        shape = backbone.network.get_layer(backbone.spec.blocks.output_layer(b)).output.shape
        rows.append({"depth": f"block {b}", "side": int(shape[1]), "channels": int(shape[-1])})
    last_map = backbone.network.layers[-1].input.shape  # the input of the final average
    rows.append({"depth": BOTTLENECK, "side": int(last_map[1]), "channels": backbone.bottleneck_size})
    return rows


def activations_at_depths(records, backbone, blocks=BLOCKS, batch_size: int = 32, progress: bool = True):
    """(depth name -> [N, channels] pooled activations, kept records), in the order of ``records``.

    Images that fail to decode are left out (and so are their records).
    """
    model = depth_model(backbone, blocks)
    run = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    errors: dict[str, str] = {}
    paths = [os.fsencode(record.path) for record in records]
    dataset = image_pipeline(paths, backbone.preprocess, batch_size, errors)
    names = depth_names(blocks)
    collected = {name: [None] * len(records) for name in names}
    with tqdm(total=len(records), unit="img", desc="activations", disable=not progress) as bar:
        for indices, images in dataset:
            outputs = run(images)
            for name, output in zip(names, outputs, strict=True):
                for index, vector in zip(indices.numpy(), output.numpy(), strict=True):
                    collected[name][index] = vector
            bar.update(len(indices))
    kept = [i for i in range(len(records)) if collected[BOTTLENECK][i] is not None]
    return {name: np.stack([collected[name][i] for i in kept]) for name in names}, [records[i] for i in kept]


def probe_depths(
    activations: dict[str, np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    num_folds: int = 5,
    l2: float = 1e-3,
    folds: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Depth name -> right/wrong of every image, each predicted by a layer trained on the other folds.

    The same layer and settings at every depth (nothing is tuned), so the depths are compared fairly.
    ``folds``: a fold number per image (lesson 07 passes the learner's ``folds_for``); ``folds_for`` by default.
    """
    labels = np.asarray(labels)
    folds = folds_for(labels, num_folds) if folds is None else np.asarray(folds)
    num_folds = int(folds.max()) + 1
    results = {}
    for name, vectors in activations.items():
        correct = np.zeros(len(labels), bool)
        for fold in range(num_folds):
            held = folds == fold
            layer = fit_linear(vectors[~held], labels[~held], num_classes, l2=l2)
            correct[held] = layer.predict(vectors[held]) == labels[held]
        results[name] = correct
    return results


def plot_accuracy_by_depth(results: dict[str, dict], title: str = ""):
    """Accuracy against depth, one line per kind of image, with 95% bootstrap intervals (06).

    ``results``: kind of images -> depth name -> ``tlc.stats.Interval``.
    """
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for kind, by_depth in results.items():
        names = list(by_depth)
        values = [by_depth[n].value for n in names]
        errors = [
            [by_depth[n].value - by_depth[n].low for n in names],
            [by_depth[n].high - by_depth[n].value for n in names],
        ]
        axis.errorbar(range(len(names)), values, yerr=errors, marker="o", capsize=3, label=kind)
        axis.set_xticks(range(len(names)), names)
    axis.set_xlabel("where the activations are taken (early -> late)")
    axis.set_ylabel("cross-validated accuracy")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend()
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return figure
