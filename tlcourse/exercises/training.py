"""Exercise of lesson 03: the new layer trained in plain Keras (``Sequential``, ``compile``, ``fit``), stopped on
the validation split with the best epoch's weights kept.

Graded by behaviour, not by the code's text. While the learner's function runs, the grader watches
``keras.Model.fit``: what each call was given (which vectors, which labels, which validation data) and, through a
callback it adds, the weights at the end of every epoch. Then it checks what the returned model outputs, how well it
labels fresh vectors, and which epoch's weights it holds.

Two small synthetic cases keep a grade to seconds, and give each classic mistake its own signal on every seed:

- a learning case (6 labels, a label of 24 vectors beside one of 120): probabilities out, one ``Dense`` layer, a
  model that labels fresh vectors well;
- a case whose validation labels disagree with the training ones (each cluster's validation vectors carry the next
  label): the validation loss is lowest within the first epochs and rises after, so a layer stopped on
  validation stops early and keeps an early epoch, whatever its optimizer.

The grader bounds each run by stopping it the way ``EarlyStopping`` does (``model.stop_training``): a learning run
as soon as its weights label the grader's own fresh vectors well (or after 30 epochs, when it has not learnt), a run
of the second case after 12 epochs. The learner's ``EarlyStopping`` then restores its best weights at the end of
training as it always does, so the bound changes how long a correct answer trains, not its verdict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, LearnerError, describe, register


def train_keras_layer(train_vectors, train_labels, validation_vectors, validation_labels, num_classes):
    """The new layer in plain Keras: one softmax ``Dense`` layer, fitted on the training split, stopped when the
    validation loss stops improving, with the best epoch's weights kept. Taught in notebooks/03_retrain.ipynb.
    """
    import keras

    model = keras.Sequential(
        [keras.Input((train_vectors.shape[1],)), keras.layers.Dense(num_classes, activation="softmax")]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    model.fit(
        train_vectors,
        train_labels,
        validation_data=(validation_vectors, validation_labels),  # judges each epoch; never trained on
        epochs=500,  # an upper bound: early stopping ends training long before (near 100 on the stamps)
        batch_size=32,
        callbacks=[stop],
        verbose=0,
    )
    return model


# ---------------------------------------------------------------------------------------------
# Watching fit


@dataclasses.dataclass
class _Run:
    """One ``fit`` call: what it was given, and what happened at the end of each epoch."""

    model: object
    arguments: dict
    callbacks: list
    logs: list = dataclasses.field(default_factory=list)  # one dict of metrics per epoch
    weights: list = dataclasses.field(default_factory=list)  # the weights at the end of each epoch
    ended: str = "running"  # "stopped" (by the learner's callbacks), "capped" (by the grader), "exhausted"

    @property
    def epochs(self) -> int:
        return int(self.arguments.get("epochs", 1) or 1) - int(self.arguments.get("initial_epoch", 0) or 0)


class _Watch:
    """Replaces ``keras.Model.fit`` while the learner's function runs: records every call, and stops a run after
    ``cap`` epochs, or as soon as ``good_enough(model)`` is true, unless the learner's own callbacks stopped it
    first."""

    def __init__(self, cap: int, good_enough=None):
        self.cap, self.good_enough, self.runs = cap, good_enough, []

    @contextlib.contextmanager
    def watching(self):
        import keras

        original = keras.Model.fit
        signature = inspect.signature(original)
        watch = self

        class Spy(keras.callbacks.Callback):
            def __init__(self, run):
                super().__init__()
                self.run = run

            def on_epoch_end(self, epoch, logs=None):
                self.run.logs.append({key: float(np.asarray(value)) for key, value in (logs or {}).items()})
                self.run.weights.append([np.array(w) for w in self.model.get_weights()])
                if self.model.stop_training:  # the learner's callbacks run before this one
                    self.run.ended = "stopped"
                elif len(self.run.logs) >= watch.cap or (watch.good_enough and watch.good_enough(self.model)):
                    self.run.ended = "capped"
                    self.model.stop_training = True

        def fit(model, *args, **kwargs):
            arguments = signature.bind(model, *args, **kwargs).arguments
            arguments.pop(next(iter(signature.parameters)))  # self
            arguments.update(arguments.pop("kwargs", {}))
            given = arguments.get("callbacks")
            callbacks = list(given) if given is not None else []
            run = _Run(model, dict(arguments), callbacks)
            watch.runs.append(run)
            arguments["callbacks"] = [*callbacks, Spy(run)]
            history = original(model, **arguments)
            if run.ended == "running":
                run.ended = "exhausted"
            return history

        keras.Model.fit = fit
        try:
            yield self
        finally:
            keras.Model.fit = original


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The vectors and labels a ``fit`` argument holds, or None when the grader cannot read them (a generator)."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        if int(x.cardinality()) < 0:  # infinite or unknown: a repeat()
            return None
        vectors, labels = [], []
        for batch in x:
            if isinstance(batch, (tuple, list)):
                vectors.append(np.asarray(batch[0]))
                labels.append(np.asarray(batch[1]) if len(batch) > 1 else None)
            else:
                vectors.append(np.asarray(batch))
                labels.append(None)
        if not vectors:
            return np.zeros((0, 0)), None
        have_labels = all(label is not None for label in labels)
        return np.concatenate(vectors), np.concatenate(labels) if have_labels else None
    try:
        vectors = np.asarray(x, dtype=np.float64)
        labels = None if y is None else np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return vectors, labels


def _keys(vectors: np.ndarray) -> list[bytes]:
    vectors = np.asarray(vectors, dtype=np.float64)
    return [row.tobytes() for row in np.round(vectors.reshape(len(vectors), -1), 3)]


def _as_label_ids(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer labels from integer, float or one-hot (or smoothed) labels."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim == 2 and labels.shape[1] == num_classes:
        return labels.argmax(axis=1)
    return np.rint(labels.reshape(len(labels), -1)[:, 0]).astype(int)


# ---------------------------------------------------------------------------------------------
# The cases


@dataclasses.dataclass
class _Case:
    train_vectors: np.ndarray
    train_labels: np.ndarray
    validation_vectors: np.ndarray
    validation_labels: np.ndarray
    num_classes: int
    where: str
    centres: np.ndarray
    scales: np.ndarray


_NUM_FEATURES = 1024
_SPREAD = 0.35  # of each cluster, in units of each feature's scale (the centres are about 1.4 apart)


def _clusters(rng, num_classes: int):
    scales = 10.0 ** rng.uniform(-0.5, 0.5, _NUM_FEATURES)  # features on scales from 0.3 to 3, like bottlenecks
    centres = rng.normal(0.0, 1.0, (num_classes, _NUM_FEATURES)) * scales
    return centres, scales


def _sample(rng, centres, scales, counts) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(len(centres)), counts)
    labels = labels[rng.permutation(len(labels))]
    vectors = centres[labels] + rng.normal(0.0, _SPREAD, (len(labels), centres.shape[1])) * scales
    return vectors.astype(np.float32), labels


_LEARNING_COUNTS = (120, 80, 48, 32, 24, 24)


def _learning_case(rng) -> _Case:
    """6 labels, as unequal as the stamps' (a label of 24 vectors beside one of 120), 5 validation vectors each."""
    num_classes = len(_LEARNING_COUNTS)
    centres, scales = _clusters(rng, num_classes)
    train_vectors, train_labels = _sample(rng, centres, scales, _LEARNING_COUNTS)
    validation_vectors, validation_labels = _sample(rng, centres, scales, [5] * num_classes)
    where = (
        f"{len(train_labels)} training vectors of {_NUM_FEATURES} numbers, {num_classes} labels "
        f"({', '.join(map(str, _LEARNING_COUNTS))} each)"
    )
    return _Case(
        train_vectors, train_labels, validation_vectors, validation_labels, num_classes, where, centres, scales
    )


def _disagreeing_case(rng) -> _Case:
    """5 labels of 8 training vectors; each cluster's 4 validation vectors carry the NEXT label, so the validation
    loss is lowest after the first epoch and rises with every epoch that fits the training labels better."""
    num_classes = 5
    centres, scales = _clusters(rng, num_classes)
    train_vectors, train_labels = _sample(rng, centres, scales, [8] * num_classes)
    validation_vectors, validation_labels = _sample(rng, centres, scales, [4] * num_classes)
    where = (
        "a case whose validation labels disagree with the training ones, each cluster's validation vectors carrying "
        "the next label, so that the validation loss only gets worse as training goes on"
    )
    return _Case(
        train_vectors,
        train_labels,
        validation_vectors,
        (validation_labels + 1) % num_classes,
        num_classes,
        where,
        centres,
        scales,
    )


# When the grader stops a run its callbacks have not stopped. The learning case's validation loss keeps falling for
# hundreds of epochs: the run is stopped as soon as its weights label the grader's own fresh vectors well (so a slow
# but sound optimizer gets the epochs it needs), or after _LEARNING_CAP epochs, when it has not learnt. The
# disagreeing case's validation loss is lowest within the first epochs: a small patience stops on its own before
# the cap, and a larger one is stopped by it, then restored as usual.
_LEARNING_CAP = 30
_DISAGREEING_CAP = 12
_GOOD_ENOUGH = 0.95  # mean recall on the grader's fresh vectors at which a learning run has learnt
_PASS = 0.9  # mean recall the returned model must reach on other fresh vectors


# ---------------------------------------------------------------------------------------------
# Checks


def _call(candidate, case: _Case, cap: int, good_enough=None) -> tuple[object, list[_Run]]:
    import keras

    watch = _Watch(cap, good_enough)
    with watch.watching():
        try:
            model = candidate(
                case.train_vectors, case.train_labels, case.validation_vectors, case.validation_labels, case.num_classes
            )
        except LearnerError as error:
            _explain_a_loss_error(error, watch.runs, case)
            raise
    if isinstance(model, keras.callbacks.History):
        raise GradingFailure(
            "train_keras_layer should return the trained Keras model, got the History that fit returns (its "
            "`.history` holds the curves): `model.fit(...)`, then `return model`."
        )
    if not isinstance(model, keras.Model):
        raise GradingFailure(f"train_keras_layer should return the trained Keras model, got {describe(model)}.")
    if not watch.runs:
        raise GradingFailure(
            f"the function never called model.fit ({case.where}): build the layer with keras.Sequential, then "
            f"model.compile(...) and model.fit(...). The grader watches what fit is given."
        )
    return model, watch.runs


def _explain_a_loss_error(error: LearnerError, runs: list[_Run], case: _Case) -> None:
    """Labels whose form does not fit the loss make Keras raise inside fit: say which mismatch it is."""
    if not runs:
        return
    run = runs[-1]
    loss = getattr(run.model, "loss", None)
    name = (loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__)).lower()
    pairs = _pairs(run.arguments.get("x"), run.arguments.get("y"))
    labels = None if pairs is None else pairs[1]
    if labels is None:
        return
    one_hot = labels.ndim == 2 and labels.shape[1] > 1
    if one_hot and "sparse" in name:
        raise GradingFailure(
            f"fit raised {type(error.error).__name__}: it was given one-hot labels with "
            f"sparse_categorical_crossentropy (labels of shape {list(labels.shape)}). The 'sparse' losses take "
            f"integer labels, one per vector, as train_labels already is: pass train_labels as it is (or keep the "
            f"one-hot labels and use categorical_crossentropy)."
        ) from None
    if not one_hot and "categorical" in name and "sparse" not in name:
        raise GradingFailure(
            f"fit raised {type(error.error).__name__}: it was given integer labels with categorical_crossentropy "
            f"(labels of shape {list(labels.shape)}), which wants one-hot labels. For integer labels use "
            f"loss='sparse_categorical_crossentropy'."
        ) from None


def _check_fit_calls(runs: list[_Run], case: _Case) -> None:
    where = case.where
    train_keys, validation_keys = _keys(case.train_vectors), _keys(case.validation_vectors)
    label_of = dict(zip(train_keys, case.train_labels.tolist(), strict=True))
    validation_label_of = dict(zip(validation_keys, case.validation_labels.tolist(), strict=True))
    for run in runs:
        pairs = _pairs(run.arguments.get("x"), run.arguments.get("y"))
        if pairs is None:
            raise GradingFailure(
                f"fit was given {describe(run.arguments.get('x'))} ({where}), which the grader cannot read (an "
                f"endless tf.data pipeline or a generator): give fit the training vectors and labels as arrays."
            )
        rows, labels = pairs
        keys = _keys(rows) if rows.ndim else []
        from_train = [key for key in keys if key in label_of]
        from_validation = sum(key in validation_label_of for key in keys)
        if from_validation and not from_train:
            raise GradingFailure(
                f"fit trained on the validation split ({where}): train on the training vectors, and give the "
                f"validation split as validation_data=(validation_vectors, validation_labels) to judge each epoch."
            )
        if from_validation:
            raise GradingFailure(
                f"fit trained on {len(from_train)} training and {from_validation} validation vectors ({where}): the "
                f"validation images must only judge the model (validation_data), never train it, or they stop "
                f"being a fair judge of when to stop."
            )
        if not from_train:
            raise GradingFailure(
                f"none of the {len(keys)} vectors given to fit is a training vector as the function received it "
                f"({where}): give fit train_vectors as they are. The model returned is used on bottlenecks as they "
                f"come; a model that needs scaled inputs must scale them itself (keras.layers.Normalization)."
            )
        if len(set(from_train)) != len(train_keys) or len(from_train) != len(keys):
            raise GradingFailure(
                f"fit trained on {len(set(from_train))} of the {len(train_keys)} training vectors ({where}): train on "
                f"the whole training split, and nothing else."
            )
        if labels is not None:
            given = _as_label_ids(labels, case.num_classes)
            right = np.array([label_of[key] for key in keys])
            wrong = int(np.sum(given != right)) if len(given) == len(right) else len(right)
            if wrong:
                raise GradingFailure(
                    f"the labels given to fit do not belong to the vectors given with them: {wrong} of {len(right)} "
                    f"vectors carry another vector's label ({where}). Were the vectors or the labels shuffled, "
                    f"sorted or cut on their own? Keep each vector with its label: train_labels[i] is the label of "
                    f"train_vectors[i]."
                )
        if _compiled_from_logits(run.model) and _are_probabilities(_outputs(run.model, rows[:16])):
            raise GradingFailure(
                f"the model ends in a softmax, but its loss was compiled with from_logits=True ({where}): the loss "
                f"then reads the probabilities as logits and applies a second softmax, so it trains on the wrong "
                f"quantity (Keras warns about it). With the softmax in the layer, leave from_logits out."
            )
        if run.arguments.get("validation_split"):
            raise GradingFailure(
                f"fit was given validation_split={run.arguments['validation_split']} ({where}): that holds back the "
                f"last part of the TRAINING vectors instead of using the validation split. Pass "
                f"validation_data=(validation_vectors, validation_labels)."
            )
        validation = run.arguments.get("validation_data")
        if validation is None:
            raise GradingFailure(
                f"fit had no validation data to judge each epoch ({where}): pass validation_data=(validation_vectors, "
                f"validation_labels), so that training can stop when the validation loss stops improving."
            )
        if isinstance(validation, (tuple, list)):
            pairs = _pairs(validation[0], validation[1] if len(validation) > 1 else None)
        else:
            pairs = _pairs(validation, None)
        if pairs is None:
            continue
        rows, labels = pairs
        keys = _keys(rows)
        if any(key in label_of for key in keys):
            raise GradingFailure(
                f"the validation_data given to fit holds training vectors ({where}): a model judged on the vectors it "
                f"trains on keeps getting better, so it never stops where new images would be labelled best. Pass "
                f"validation_data=(validation_vectors, validation_labels)."
            )
        if labels is not None and all(key in validation_label_of for key in keys):
            given = _as_label_ids(labels, case.num_classes)
            right = np.array([validation_label_of[key] for key in keys])
            if len(given) != len(right) or np.any(given != right):
                raise GradingFailure(
                    f"the labels in validation_data do not belong to the validation vectors ({where}): pass "
                    f"validation_data=(validation_vectors, validation_labels), each vector with its own label."
                )


def _outputs(model, vectors: np.ndarray) -> np.ndarray:
    try:
        output = model(vectors, training=False)
    except (TypeError, ValueError):
        output = model.predict(vectors, verbose=0)
    return np.asarray(output, dtype=np.float64)


def _are_probabilities(output: np.ndarray) -> bool:
    """Each row non-negative and summing to 1: a softmax's output."""
    return bool(
        np.all(np.isfinite(output)) and np.all(output >= -1e-6) and np.allclose(output.sum(axis=1), 1, atol=1e-3)
    )


def _compiled_from_logits(model) -> bool:
    """Whether ``model`` was compiled with a loss that takes logits (``from_logits=True``)."""
    loss = getattr(model, "loss", None)
    try:
        return bool(loss.get_config().get("from_logits"))
    except AttributeError:  # a loss given by name or as a plain function: probabilities
        return False


def _check_probabilities(model, case: _Case, probe: np.ndarray) -> None:
    output = _outputs(model, probe)
    where, num_classes = case.where, case.num_classes
    if output.shape != (len(probe), num_classes):
        raise GradingFailure(
            f"the model's output for {len(probe)} vectors has shape {list(output.shape)} ({where}): it gives one "
            f"probability per label, [{len(probe)}, {num_classes}]: Dense(num_classes)."
        )
    if _are_probabilities(output):
        return
    sums = output.sum(axis=1)
    if np.any(output < -1e-6) or np.any(output > 1 + 1e-6):
        raise GradingFailure(
            f"the model outputs logits (any real numbers, from {output.min():.3g} to {output.max():.3g}), not "
            f"probabilities ({where}). The new layer ends in a softmax: Dense(num_classes, activation='softmax'), "
            f"so that each vector's scores are probabilities that add up to 1 (with the softmax in the layer, the "
            f"loss takes probabilities: no from_logits=True)."
        )
    raise GradingFailure(
        f"the model's outputs are each between 0 and 1, but a vector's add up to anything from {sums.min():.3g} to "
        f"{sums.max():.3g} ({where}): a sigmoid scores each label on its own. One label per image is a softmax: "
        f"Dense(num_classes, activation='softmax') with loss='sparse_categorical_crossentropy'."
    )


def _check_one_layer(model, case: _Case) -> None:
    import keras

    size = case.train_vectors.shape[1]
    expected = size * case.num_classes + case.num_classes
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if trainable != expected or len(dense) != 1:
        raise GradingFailure(
            f"the model has {trainable:,} trainable parameters in {len(dense)} Dense layer(s); the new layer is one "
            f"Dense layer on the bottleneck, {size} x {case.num_classes} weights and {case.num_classes} biases = "
            f"{expected} ({case.where}). A hidden layer makes another model (lesson 10 shows what training more "
            f"layers needs)."
        )


def _higher_is_better(key: str) -> bool:
    return not any(word in key for word in ("loss", "error", "entropy"))


def _monitored(run: _Run) -> list:
    return [c for c in run.callbacks if isinstance(getattr(c, "monitor", None), str)]


def _best_epochs(run: _Run) -> dict[str, int]:
    """The best epoch (first reached, as Keras counts) by the validation loss and by every validation quantity a
    callback of the run watches, each in its right direction."""
    keys = {"val_loss"} | {c.monitor for c in _monitored(run) if c.monitor.startswith("val_")}
    best = {}
    for key in sorted(keys):
        values = [logs.get(key) for logs in run.logs]
        if not values or any(value is None for value in values):
            continue
        values = np.array(values)
        best[key] = int(np.argmax(values) if _higher_is_better(key) else np.argmin(values))
    return best


def _epoch_held(model, run: _Run) -> int | None:
    """The epoch whose end-of-epoch weights the model holds (the last such epoch), or None."""
    held = [np.array(w) for w in model.get_weights()]
    for epoch in range(len(run.weights) - 1, -1, -1):
        saved = run.weights[epoch]
        if len(saved) == len(held) and all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(saved, held, strict=True)
        ):
            return epoch
    return None


def _advice(run: _Run) -> str:
    """What the callbacks given to fit explain about a run that did not stop on validation or kept other weights."""
    import keras

    stops = [c for c in run.callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
    epochs = run.epochs
    if not stops:
        return (
            "fit was given no EarlyStopping callback. Stop on validation: a generous number of epochs, and "
            "callbacks=[keras.callbacks.EarlyStopping(monitor='val_loss', patience=..., restore_best_weights=True)]."
        )
    advice = []
    for stop in stops:
        monitor, mode = stop.monitor, getattr(stop, "mode", "auto")
        if not monitor.startswith("val_"):
            advice.append(
                f"Your EarlyStopping watches '{monitor}', measured on the training vectors, which keeps improving "
                f"while the model gets worse on new ones: monitor='val_loss'."
            )
        elif (mode == "min" and _higher_is_better(monitor)) or (mode == "max" and not _higher_is_better(monitor)):
            advice.append(
                f"Your EarlyStopping has mode='{mode}' for '{monitor}', so it counts the worse epochs as the "
                f"better ones: leave mode='auto' (it knows that a loss falls and an accuracy rises)."
            )
        elif not getattr(stop, "restore_best_weights", False):
            advice.append(
                "Your EarlyStopping ends training, but without restore_best_weights=True the model keeps the last "
                "epoch's weights, patience epochs past the best: EarlyStopping(..., restore_best_weights=True)."
            )
        elif stop.patience >= epochs - 1:
            advice.append(
                f"With epochs={epochs} and patience={stop.patience}, early stopping can never end training: allow "
                f"far more epochs than the patience (epochs=500, say: early stopping ends training long before)."
            )
    if not advice:
        advice.append(
            "Stop on validation: EarlyStopping(monitor='val_loss', patience=..., restore_best_weights=True) in fit's "
            "callbacks, and a generous number of epochs."
        )
    return " ".join(advice)


def _epochs(count: int) -> str:
    return f"{count} epoch" + ("" if count == 1 else "s")


def _check_stopping(model, runs: list[_Run], case: _Case) -> None:
    """Training ended on validation (by the learner's callbacks, or by the grader's cap before a large patience ran
    out), not by running out of epochs, and the model holds the weights of a best epoch of its last fit."""
    run = next((r for r in reversed(runs) if r.model is model), runs[-1])
    if not run.logs:
        raise GradingFailure(f"the last fit ran no epoch ({case.where}): give it epochs=... (500, say).")
    held = _epoch_held(model, run)
    best = _best_epochs(run)
    losses = [logs.get("val_loss", np.nan) for logs in run.logs]
    best_loss = best.get("val_loss", int(np.nanargmin(losses)) if not np.all(np.isnan(losses)) else 0)
    last = len(run.logs) - 1
    curve = f"the validation loss was lowest after epoch {best_loss + 1} ({losses[best_loss]:.3f})"
    if last != best_loss:
        curve += f" and {losses[last]:.3f} after epoch {last + 1}"
    if run.ended == "exhausted":
        raise GradingFailure(
            f"fit ran all {_epochs(run.epochs)} it was given and training never stopped on validation ({case.where}; "
            f"{curve}). {_advice(run)}"
        )
    if held in best.values():
        return
    if held is None:
        raise GradingFailure(
            f"the model returned holds the weights of none of the {len(run.logs)} epochs of its last fit "
            f"({case.where}): return the model fit trained, as fit (and EarlyStopping) left it."
        )
    if run.ended == "capped":
        happened = (
            f"after {len(run.logs)} epochs training had not stopped (the grader stopped it there), and the model "
            f"holds the weights of epoch {held + 1}"
        )
    elif run.ended == "exhausted":
        happened = (
            f"fit ran all {_epochs(run.epochs)} it was given, and the model holds the weights of epoch {held + 1}"
        )
    elif held == last:
        happened = f"training stopped after epoch {last + 1}, but the model holds the weights of that last epoch"
    else:
        happened = f"training stopped after epoch {last + 1}, and the model holds the weights of epoch {held + 1}"
    raise GradingFailure(f"{happened}, not the best epoch's ({case.where}; {curve}). {_advice(run)}")


def _recalls(model, vectors: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    predictions = _outputs(model, vectors).argmax(axis=1)
    return np.array([np.mean(predictions[labels == c] == c) for c in range(num_classes)])


def _mean_recall(model, vectors: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """The mean recall of the model as it is now, or 0 when it does not give one score per label."""
    try:
        return float(_recalls(model, vectors, labels, num_classes).mean())
    except (ValueError, TypeError, IndexError):
        return 0.0


def _check_modes(runs: list[_Run]) -> None:
    """An EarlyStopping told to count an accuracy's lower values (or a loss's higher ones) as better.

    Read from the callback, not seen in behaviour: on these cases a layer is as accurate after its first epoch as
    ever, so such a run can keep the same epoch as a right one; on real photos it keeps a bad one."""
    import keras

    for run in runs:
        for stop in run.callbacks:
            if not isinstance(stop, keras.callbacks.EarlyStopping):
                continue
            monitor, mode = stop.monitor, getattr(stop, "mode", "auto")
            if (mode == "min" and _higher_is_better(monitor)) or (mode == "max" and not _higher_is_better(monitor)):
                raise GradingFailure(
                    f"your EarlyStopping has mode='{mode}' for '{monitor}', so it counts the worse epochs as the "
                    f"better ones. Here the layer was as good after its first epoch as ever, so it did no harm; on "
                    f"your photos it would keep a bad epoch. Leave mode='auto' (it knows that a loss falls and an "
                    f"accuracy rises)."
                )


def _check_accuracy(model, case: _Case, rng, runs: list[_Run]) -> None:
    vectors, labels = _sample(rng, case.centres, case.scales, [40] * case.num_classes)
    recalls = _recalls(model, vectors, labels, case.num_classes)
    if recalls.mean() >= _PASS:
        return
    run = runs[-1]
    raise GradingFailure(
        f"on {len(labels)} fresh vectors of the same labels the model found {recalls.mean():.0%} (per label: "
        f"{', '.join(f'{r:.0%}' for r in recalls)}), where a layer trained on these labels finds over 95% "
        f"({case.where}). Its last fit ran {_epochs(len(run.logs))}: too small a learning rate or too few epochs "
        f"leave the layer half-trained; let early stopping end training (a generous number of epochs), with a "
        f"learning rate such as Adam's default 0.001 or SGD's 0.01."
    )


def _grade_train_keras_layer(candidate, rng: np.random.Generator) -> None:
    import keras

    keras.utils.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    # Case 1: it learns, and the model is one softmax layer.
    case = _learning_case(rng)
    watched, watched_labels = _sample(rng, case.centres, case.scales, [20] * case.num_classes)
    model, runs = _call(
        candidate,
        case,
        _LEARNING_CAP,
        lambda model: _mean_recall(model, watched, watched_labels, case.num_classes) >= _GOOD_ENOUGH,
    )
    _check_fit_calls(runs, case)
    ambiguous = (case.centres[rng.permutation(case.num_classes)] + case.centres) / 2  # between two labels
    probe = np.concatenate([case.validation_vectors, ambiguous, 0.0 * case.centres[:1]]).astype(np.float32)
    _check_probabilities(model, case, probe)
    _check_one_layer(model, case)
    _check_stopping(model, runs, case)
    _check_accuracy(model, case, rng, runs)
    # Case 2: validation that only gets worse: training must stop early and keep an early epoch.
    case = _disagreeing_case(rng)
    model, runs = _call(candidate, case, _DISAGREEING_CAP)
    _check_fit_calls(runs, case)
    _check_stopping(model, runs, case)
    _check_modes(runs)


register(
    Exercise(
        name="train_keras_layer",
        lesson="03_retrain",
        signature=(
            "(train_vectors [N, D], train_labels [N], validation_vectors [M, D], validation_labels [M], "
            "num_classes: int) -> keras.Model"
        ),
        reference=train_keras_layer,
        grade=_grade_train_keras_layer,
    )
)
