"""Exercise of the fine-tuning lesson (09): freeze a model so that only its top blocks and head train."""

from __future__ import annotations

import re

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, register


def freeze_for_fine_tuning(model, num_blocks):
    """Set ``trainable`` on every layer of ``model`` so that one training step changes only the top
    ``num_blocks`` blocks and everything after them (head convolution, new layer), and no batch norm.

    Blocks are the layers named ``blocks.{i}.…`` (the highest ``i`` is the top block). Layers before
    the lowest trained block are frozen; every ``keras.layers.BatchNormalization`` layer is frozen.
    The backbone may be nested in ``model`` as a sub-model: open it (``layer.layers``). Returns nothing.
    Taught in notebooks/09_fine_tuning.ipynb.
    """
    import re

    import keras

    def every_layer(container):
        for layer in container.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from every_layer(layer)

    layers = list(every_layer(model))
    block_of = []
    for layer in layers:
        match = re.match(r"blocks\.(\d+)\.", layer.name)
        block_of.append(int(match.group(1)) if match else None)
    top_block = max(b for b in block_of if b is not None)
    start = block_of.index(top_block + 1 - num_blocks)  # the first layer of the lowest trained block
    model.trainable = True  # also sets every nested layer; then each leaf layer is set below
    for position, layer in enumerate(layers):
        if isinstance(layer, keras.Model):
            continue  # a nested model: its own layers are set one by one
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = position >= start and not is_batch_norm


def _block(name: str) -> int | None:
    match = re.match(r"blocks\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def _leaf_layers(model):
    import keras  # noqa: PLC0415

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        elif layer.weights:
            yield layer


def _grading_model(rng: np.random.Generator, nested: bool):
    """The top of an unfolded EfficientNet-Lite0 (random weights, varied batch-norm statistics) and a new layer."""
    import keras  # noqa: PLC0415

    from tlcourse import efficientnet_lite  # noqa: PLC0415

    start = int(rng.integers(11, 14))
    keras.utils.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    top = efficientnet_lite.build_model("efficientnet_lite0", start_block=start, fold_batch_norms=False)
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, size).astype("float32"),
                    rng.normal(0, 0.1, size).astype("float32"),
                    rng.normal(0, 0.1, size).astype("float32"),
                    rng.uniform(0.5, 2.0, size).astype("float32"),
                ]
            )
    head = keras.layers.Dense(5, activation="softmax", name="final_result")
    if nested:
        inputs = keras.Input(top.input.shape[1:], name="activations")
        model = keras.Model(inputs, head(top(inputs, training=False)), name="fine_tuned")
    else:
        model = keras.Model(top.input, head(top.output), name="fine_tuned")
    return model, start


def _grade(candidate, rng: np.random.Generator) -> None:
    import keras  # noqa: PLC0415

    for nested in (False, True):
        model, start = _grading_model(rng, nested)
        top_block = 15
        num_blocks = int(rng.integers(1, top_block - start + 1))
        first = top_block + 1 - num_blocks
        candidate(model, num_blocks)
        before = {id(v): np.array(v.numpy()) for v in model.weights}
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy", run_eagerly=True)
        x = rng.normal(0, 1, (4, *model.input.shape[1:])).astype("float32")
        y = np.eye(5, dtype="float32")[rng.integers(0, 5, 4)]
        model.train_on_batch(x, y)
        changed = {}
        for layer in _leaf_layers(model):
            moved = [w for w in layer.weights if not np.array_equal(before[id(w)], w.numpy())]
            changed[layer.name] = (layer, moved)
        where = f"(num_blocks={num_blocks}: blocks {first} to {top_block} of a model whose blocks end at {top_block}"
        where += ", the backbone nested as a sub-model)" if nested else ")"
        head_layer, head_moved = changed["final_result"]
        if not head_moved:
            raise GradingFailure(
                f"the new layer `final_result` did not change after a training step {where}: the head must train. "
                "Did the function freeze the whole model (model.trainable = False) after setting the layers?"
            )
        if nested:
            inner = [bool(moved) for layer, moved in changed.values() if layer.name != "final_result"]
            if all(inner) or not any(inner):
                raise GradingFailure(
                    f"inside the nested backbone, {'every' if all(inner) else 'no'} layer changed {where}. Here the "
                    "backbone is a model nested inside the model, and a nested model is one entry of "
                    "`model.layers`: open it (its own `.layers`) and set its layers one by one."
                )
        too_low = [n for n, (_, moved) in changed.items() if moved and _block(n) is not None and _block(n) < first]
        if too_low:
            lowest = min(_block(n) for n in too_low)
            raise GradingFailure(
                f"layers below the top {num_blocks} blocks changed (e.g. {too_low[0]}, block {lowest}) {where}. "
                f"Only blocks {first} and above train: count from the top block, and freeze everything before "
                f"the first layer of block {first}."
            )
        batch_norms = [
            (n, moved) for n, (layer, moved) in changed.items() if isinstance(layer, keras.layers.BatchNormalization)
        ]
        touched = [(n, moved) for n, moved in batch_norms if moved]
        if touched:
            name, moved = touched[0]
            what = "moving statistics" if any("moving" in w.path for w in moved) else "scale and offset"
            raise GradingFailure(
                f"the batch norm {name} changed its {what} in one training step ({len(touched)} batch norms did) "
                f"{where}. Set trainable = False on every BatchNormalization layer, even inside the trained "
                "blocks: in Keras a frozen batch norm also runs in inference mode, so it keeps the pretrained "
                "statistics that the weights around it were trained with."
            )
        untrained = [
            n
            for n, (layer, moved) in changed.items()
            if not moved
            and not isinstance(layer, keras.layers.BatchNormalization)
            and (_block(n) is None or _block(n) >= first)
        ]
        if untrained:
            raise GradingFailure(
                f"{untrained[0]} did not change after a training step {where}, but it is in (or above) the top "
                f"{num_blocks} blocks, which must train ({len(untrained)} such layers stayed frozen)."
            )


register(
    Exercise(
        name="freeze_for_fine_tuning",
        lesson="09_fine_tuning",
        signature="(model, num_blocks) -> None (sets layer.trainable in place)",
        reference=freeze_for_fine_tuning,
        grade=_grade,
        may_return_none=True,
    )
)
