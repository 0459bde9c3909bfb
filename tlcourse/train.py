"""Train a new final layer on cached bottlenecks, the way retrain.py does, and evaluate it.

- A softmax layer on the frozen bottleneck, plain SGD at the tutorial's learning rate.
- Class-balanced batches: pick a label at random, then an image of that label; or, with
  ``train_batch_size=-1``, every image in every step, weighted so that each label weighs the same.
  ``fit_linear`` (the data lessons' layer, read out as numpy arrays: ``LinearLayer``) trains that way.
- Validation accuracy and cross-entropy every ``eval_step_interval`` steps, on a progress line
  and (optionally) as TensorBoard summaries under ``summaries_dir/train`` and ``/validation``.
- Seeded: the same data and settings give the same layer.

What it trains on comes from the cache (``tlcourse.bottlenecks``): each split's
``bottlenecks.Bottlenecks``, and the training images' distorted variants to sample among, which
``TrainConfig`` names (``bottlenecks.Distortions``, ``num_distorted_variants``).

Taught in ``notebooks/03_retrain.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tlcourse import bottlenecks
from tlcourse.data import ImageRecord
from tlcourse.errors import SettingError

OPTIMIZERS = ("sgd", "adam")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")  # cosine: decays to 0 over the training


def check_optimizer(optimizer: str, learning_rate_schedule: str) -> None:
    """A ``SettingError`` for an optimizer or schedule the trainers (new layer, fine-tuning) do not have."""
    if optimizer not in OPTIMIZERS:
        raise SettingError(f"{{optimizer}} must be one of {', '.join(OPTIMIZERS)}, not {optimizer!r}")
    if learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
        schedules = ", ".join(LEARNING_RATE_SCHEDULES)
        raise SettingError(f"{{learning_rate_schedule}} must be one of {schedules}, not {learning_rate_schedule!r}")


@dataclass
class TrainConfig:
    how_many_training_steps: int = 4000
    learning_rate: float = 0.01
    train_batch_size: int = 100  # -1: every training image in every step, each label weighing the same
    eval_step_interval: int = 10
    validation_batch_size: int = 100  # -1: the whole validation set
    seed: int = 0
    summaries_dir: str | Path | None = None
    distortions: bottlenecks.Distortions = field(default_factory=bottlenecks.Distortions)
    num_distorted_variants: int = 4
    final_tensor_name: str = "final_result"
    # Beyond the tutorial (lesson 09, many classes); the defaults reproduce the tutorial.
    optimizer: str = "sgd"  # "sgd" or "adam"
    learning_rate_schedule: str = "constant"  # or "cosine": decays to 0 over the training steps
    l2: float = 0.0  # L2 penalty on the new layer's weights
    label_smoothing: float = 0.0
    early_stopping_patience: int = 0  # evaluations without a better validation score before stopping; 0: off
    standardize_bottlenecks: bool = False  # scale each feature by the training mean and std, inside the model

    def __post_init__(self):
        check_optimizer(self.optimizer, self.learning_rate_schedule)
        if self.how_many_training_steps < 1 or self.eval_step_interval < 1:
            raise SettingError("{how_many_training_steps} and {eval_step_interval} must be at least 1")
        if self.train_batch_size < 1 and self.train_batch_size != -1:
            raise SettingError("{train_batch_size} must be at least 1, or -1 for every training image in every step")


@dataclass
class TrainingHistory:
    steps: list[int] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    train_cross_entropy: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    validation_cross_entropy: list[float] = field(default_factory=list)


def new_head(
    bottleneck_size: int, num_classes: int, name: str = "final_result", l2: float = 0.0, standardize=None
) -> keras.Sequential:
    """The new final layer: one dense layer with a softmax, as in the tutorial.

    ``l2`` adds a weight penalty; ``standardize`` (mean, variance of the training bottlenecks)
    puts a fixed normalisation in front, so the exported model applies it too.
    """
    layers = [keras.Input((bottleneck_size,))]
    if standardize is not None:
        mean, variance = standardize
        layers.append(keras.layers.Normalization(mean=mean, variance=variance, name="standardize"))
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    layers.append(keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer, name=name))
    return keras.Sequential(layers, name="retrained_head")


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all GPUs of this machine) or ``multi_worker_mirrored``
    (several machines, each started with its ``TF_CONFIG``). Create it first thing in a program."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {name!r}; choose default, mirrored or multi_worker_mirrored")


def _optimizer(config: TrainConfig):
    rate = config.learning_rate
    if config.learning_rate_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.how_many_training_steps)
    return keras.optimizers.Adam(rate) if config.optimizer == "adam" else keras.optimizers.SGD(rate)


def _batches(rng: np.random.Generator, vectors: np.ndarray, labels: np.ndarray, size: int):
    """Endless ``(vectors, labels, weights)`` training batches in which every label weighs the same.

    ``size`` images drawn the tutorial's way (a label at random, then one of its images), each
    weighing 1; or, with ``size`` -1, every image in every batch, weighted by one over its label's
    count (the weights average 1), which is the same balance without the draw.
    """
    by_class = [members for c in range(labels.max() + 1) if len(members := np.flatnonzero(labels == c))]
    if size == -1:
        counts = np.bincount(labels)
        weights = (len(labels) / (len(by_class) * counts[labels])).astype(np.float32)
        every = (tf.constant(vectors), tf.constant(labels), tf.constant(weights))
        while True:
            yield every
    ones = np.ones(size, np.float32)
    while True:
        classes = rng.integers(0, len(by_class), size)
        batch = np.array([by_class[c][rng.integers(0, len(by_class[c]))] for c in classes])
        yield vectors[batch], labels[batch], ones


def train_head(
    train: bottlenecks.Bottlenecks,
    validation: bottlenecks.Bottlenecks,
    num_classes: int,
    config: TrainConfig,
    distorted: list[bottlenecks.Bottlenecks] | None = None,
    progress: bool = True,
    strategy: tf.distribute.Strategy | None = None,
) -> tuple[keras.Model, TrainingHistory]:
    """Train the new layer; ``distorted`` holds extra variants of the training images to sample from.

    Under a ``tf.distribute`` strategy, ``train_batch_size`` is the global batch: every worker
    draws the same seeded batch and each replica takes its own slice of it, so the result is the
    single-process one, computed in parallel.
    """
    if len(train) == 0:
        raise ValueError("no training bottlenecks: cache them first (is the dataset empty?)")
    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    pools = [train] + [d for d in (distorted or []) if len(d)]
    vectors = np.concatenate([p.vectors for p in pools]).astype(np.float32)
    labels = np.concatenate([p.labels for p in pools]).astype(np.int64)
    batch_size = len(labels) if config.train_batch_size == -1 else config.train_batch_size

    standardize = None
    if config.standardize_bottlenecks:
        standardize = (vectors.mean(axis=0), np.maximum(vectors.var(axis=0), 1e-6))
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        head = new_head(vectors.shape[1], num_classes, config.final_tensor_name, config.l2, standardize)
        optimizer = _optimizer(config)
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing, reduction="none")

    def replica_step(x, y, weights):
        with tf.GradientTape() as tape:
            probabilities = head(x, training=True)
            per_example = loss_fn(tf.one_hot(y, num_classes), probabilities) * weights
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
            total = loss + tf.nn.scale_regularization_loss(tf.add_n(head.losses)) if head.losses else loss
        gradients = tape.gradient(total, head.trainable_variables)
        optimizer.apply_gradients(zip(gradients, head.trainable_variables, strict=True))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, axis=1), y), tf.float32))
        return loss, correct

    @tf.function(reduce_retracing=True)
    def train_step(x, y, weights):
        def my_slice(context):  # replica r of R takes examples r, r + R, r + 2R, ... of the global batch
            replica = context.replica_id_in_sync_group
            return x[replica::replicas], y[replica::replicas], weights[replica::replicas]

        inputs = strategy.experimental_distribute_values_from_function(my_slice)
        loss, correct = strategy.run(replica_step, args=inputs)
        total_loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        accuracy = strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None) / batch_size
        return total_loss, accuracy

    writers = _summary_writers(config.summaries_dir)
    history = TrainingHistory()
    best = (-1.0, 0.0, None)  # (validation accuracy, -cross-entropy, weights) of the best evaluation
    waited = 0
    steps = config.how_many_training_steps
    bar = tqdm(range(1, steps + 1), desc="training", unit="step", disable=not progress)
    batches = _batches(rng, vectors, labels, config.train_batch_size)
    for step in bar:
        loss, accuracy = train_step(*next(batches))
        if step % config.eval_step_interval == 0 or step == steps:
            val_loss, val_accuracy = _evaluate_sample(head, validation, config.validation_batch_size, rng)
            history.steps.append(step)
            history.train_accuracy.append(float(accuracy))
            history.train_cross_entropy.append(float(loss))
            history.validation_accuracy.append(val_accuracy)
            history.validation_cross_entropy.append(val_loss)
            bar.set_postfix(train_acc=f"{float(accuracy):.1%}", val_acc=f"{val_accuracy:.1%}", xent=f"{val_loss:.3f}")
            _write_summaries(writers, step, float(accuracy), float(loss), val_accuracy, val_loss)
            if config.early_stopping_patience:
                if (val_accuracy, -val_loss) > best[:2]:
                    best, waited = (val_accuracy, -val_loss, head.get_weights()), 0
                else:
                    waited += 1
                if waited >= config.early_stopping_patience:
                    break
    for writer in writers.values():
        writer.close()
    if best[2] is not None:
        head.set_weights(best[2])  # early stopping keeps the best layer seen on validation
    return head, history


@dataclass
class LinearLayer:
    """A trained new layer as numpy arrays: ``softmax(((x - mean) / scale) @ weights + biases)``.

    Fast to apply in a loop over many small experiments, and open to look inside (lessons 06-09).
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # [D, C]
    biases: np.ndarray  # [C]

    @classmethod
    def of(cls, head: keras.Model) -> LinearLayer:
        """The arrays of ``new_head``'s model (its standardisation, if any, and its dense layer)."""
        dense = head.layers[-1]
        kernel, biases = (np.asarray(w, np.float32) for w in dense.get_weights())
        mean, scale = np.zeros(kernel.shape[0], np.float32), np.ones(kernel.shape[0], np.float32)
        if "standardize" in [layer.name for layer in head.layers]:
            standardize = head.get_layer("standardize")
            mean = np.asarray(standardize.mean, np.float32).reshape(-1)
            scale = np.sqrt(np.asarray(standardize.variance, np.float32)).reshape(-1)
        return cls(mean, scale, kernel, biases)

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return ((np.asarray(vectors, np.float32) - self.mean) / self.scale) @ self.weights + self.biases

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = self.logits(vectors)
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        return self.logits(vectors).argmax(axis=1)

    def losses(self, vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each image's cross-entropy against ``labels``: large when the layer disagrees with the label."""
        probabilities = self.probabilities(vectors)
        return -np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-12))


def fit_linear(
    vectors: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    l2: float = 1e-3,
    steps: int = 300,
    learning_rate: float = 0.01,  # at 0.05 Adam oscillated on some draws (training accuracy fell as steps grew)
) -> LinearLayer:
    """The new layer of the data lessons: ``train_head`` on every training vector in every step.

    Adam from the same seed every time, the features standardised, every label weighing the same
    whatever its number of images, and no validation split: the same data give the same layer, in
    about a second for hundreds of images and a few seconds for thousands, so a learning curve of
    dozens of layers takes minutes at most. A label without training images is never predicted. Taught in
    ``notebooks/06_your_data.ipynb``.
    """
    vectors = np.asarray(vectors, np.float32)
    labels = np.asarray(labels, np.int64)
    if len(vectors) == 0 or len(vectors) != len(labels):
        raise ValueError(f"need as many labels as vectors, and at least one (got {len(vectors)} and {len(labels)})")
    config = TrainConfig(
        how_many_training_steps=steps,
        learning_rate=learning_rate,
        train_batch_size=-1,
        eval_step_interval=steps,
        optimizer="adam",
        l2=l2,
        standardize_bottlenecks=True,
    )
    nothing = bottlenecks.Bottlenecks(np.zeros((0, vectors.shape[1]), np.float32), np.zeros(0, np.int64), [])
    head, _ = train_head(bottlenecks.Bottlenecks(vectors, labels, []), nothing, num_classes, config, progress=False)
    layer = LinearLayer.of(head)
    layer.biases[np.bincount(labels, minlength=num_classes) == 0] = -1e9
    return layer


def _evaluate_sample(head, split: bottlenecks.Bottlenecks, batch_size: int, rng) -> tuple[float, float]:
    if len(split) == 0:
        return float("nan"), float("nan")
    chosen = np.arange(len(split)) if batch_size < 0 else rng.integers(0, len(split), batch_size)
    probabilities = head(split.vectors[chosen], training=False)
    loss = keras.losses.sparse_categorical_crossentropy(split.labels[chosen], probabilities)
    accuracy = np.mean(np.argmax(probabilities, axis=1) == split.labels[chosen])
    return float(np.mean(loss)), float(accuracy)


def _summary_writers(summaries_dir) -> dict:
    if not summaries_dir:
        return {}
    return {part: tf.summary.create_file_writer(str(Path(summaries_dir) / part)) for part in ("train", "validation")}


def _write_summaries(writers, step, train_accuracy, train_loss, val_accuracy, val_loss) -> None:
    for part, (accuracy, loss) in (("train", (train_accuracy, train_loss)), ("validation", (val_accuracy, val_loss))):
        if part in writers:
            with writers[part].as_default(step=step):
                tf.summary.scalar("accuracy", accuracy)
                tf.summary.scalar("cross_entropy", loss)


@dataclass
class Evaluation:
    """How the retrained layer does on one split."""

    class_names: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    records: list[ImageRecord]

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.labels == self.predictions)) if len(self.labels) else float("nan")

    def confusion_matrix(self) -> np.ndarray:
        """Rows: true label; columns: predicted label."""
        size = len(self.class_names)
        matrix = np.zeros((size, size), dtype=np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix

    def per_class_accuracy(self) -> dict[str, float]:
        matrix = self.confusion_matrix()
        totals = matrix.sum(axis=1)
        return {
            name: (float(matrix[i, i] / totals[i]) if totals[i] else float("nan"))
            for i, name in enumerate(self.class_names)
        }

    def misclassified(self) -> list[tuple[ImageRecord, str, str]]:
        """(record, true label, predicted label) of every wrong answer."""
        return [
            (record, self.class_names[true], self.class_names[predicted])
            for record, true, predicted in zip(self.records, self.labels, self.predictions, strict=True)
            if true != predicted
        ]

    def to_json(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "num_images": int(len(self.labels)),
            "class_names": self.class_names,
            "per_class_accuracy": self.per_class_accuracy(),
            "confusion_matrix": self.confusion_matrix().tolist(),
            "misclassified": [
                {"image": str(record.path), "label": true, "predicted": predicted}
                for record, true, predicted in self.misclassified()
            ],
        }


def evaluate(head: keras.Model, split: bottlenecks.Bottlenecks, class_names: list[str]) -> Evaluation:
    probabilities = head.predict(split.vectors, verbose=0) if len(split) else np.zeros((0, len(class_names)))
    return Evaluation(class_names, split.labels, probabilities.argmax(axis=1), probabilities, split.records)
