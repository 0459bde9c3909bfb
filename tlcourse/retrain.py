"""The tutorial's ``retrain.py``: every classic flag, safer data handling, better outputs.

    python retrain.py --image_dir=Dataset_Name
    python retrain.py --bottleneck_dir=bottlenecks --how_many_training_steps=1000 \\
      --train_batch_size=100 --model_dir=inception --summaries_dir=training_summaries/basic \\
      --output_graph=retrained_graph.pb --output_labels=retrained_labels.txt --image_dir=Dataset_Name

Steps: scan the image folder, cache the bottlenecks, train the new layer, print the final test
accuracy, write the model files (all atomically). Also installed as ``tlcourse-retrain``.

From Python, the same run without a command line (as TensorFlow Hub's ``make_image_classifier_lib``):

    result = retrain(RetrainConfig(image_dir="Dataset_Name", how_many_training_steps=1000))
    result.paths["graph"], result.evaluation.accuracy, result.final_validation_accuracy

Every field of ``RetrainConfig`` is the flag of the same name; ``RetrainConfig.from_args(argv)``
reads a command line. Taught in ``notebooks/03_retrain.ipynb``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import functools
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcourse.quiet import import_tensorflow

import_tensorflow()  # first, so that a command line shows none of TensorFlow's start-up notes (its CUDA probe)

from tlcourse import (  # noqa: E402
    backbones,
    bottlenecks,
    finetune,
    formats,
    hardware,
    model_card,
    pipeline,
    tflite,
    train,
)
from tlcourse.atomic import atomic_path  # noqa: E402
from tlcourse.data import scan_dataset  # noqa: E402
from tlcourse.errors import SettingError, command_line  # noqa: E402
from tlcourse.preprocessing import FITS  # noqa: E402

SCALING = "beyond one machine"
BEYOND = "beyond the tutorial (lesson 09: many classes)"


def _setting(default, help: str, choices=None, group: str | None = None):
    """A field of ``RetrainConfig``: its classic default and one line saying what it does (the flag's help).

    A setting that a stage's config takes too reads its default from that config (``_TRAIN.l2``), so
    the default is written once, where the stage is.
    """
    return field(default=default, metadata={"help": help, "choices": choices, "group": group})


_TRAIN = train.TrainConfig()  # the new layer's defaults: the classic tutorial's
_DISTORTIONS = _TRAIN.distortions  # none, as in the tutorial


# Settings that do not apply with fine_tune_blocks, and why (lesson 10). The others apply: see fine_tune_config.
FINE_TUNING_REFUSES = {
    "how_many_training_steps": "fine-tuning trains in epochs: use {fine_tune_epochs}",
    "eval_step_interval": "fine-tuning measures the whole validation split after every epoch",
    "validation_batch_size": "fine-tuning measures the whole validation split after every epoch",
    "early_stopping_patience": "fine-tuning keeps the epoch with the best validation accuracy",
    "optimizer": "fine-tuning uses AdamW, with weight decay instead of an L2 penalty",
    "l2": "fine-tuning uses AdamW, with weight decay instead of an L2 penalty",
    "learning_rate_schedule": "fine-tuning warms its rates up, then decays them on a cosine",
    "standardize_bottlenecks": "the fine-tuned blocks adapt what the new layer sees",
}
RECIPES = ("flags", "auto")


@dataclass
class RetrainConfig:
    """Everything ``retrain`` runs with; each field is the ``retrain.py`` flag of the same name.

    The defaults are the classic tutorial's. Under ``fine_tune_blocks``, ``learning_rate``,
    ``optimizer``, ``train_batch_size``, ``l2`` and ``label_smoothing`` keep the fine-tuning
    defaults unless set (see ``fine_tune_config``).
    """

    image_dir: str | Path = _setting(dataclasses.MISSING, "folder with one sub-folder of images per label")
    output_graph: str | Path = _setting("retrained_graph.pb", "frozen graph to write (a .keras file goes beside it)")
    output_labels: str | Path = _setting("retrained_labels.txt", "labels file to write, one per line")
    summaries_dir: str | Path = _setting("retrain_logs", "TensorBoard summaries ('' to skip)")
    how_many_training_steps: int = _setting(_TRAIN.how_many_training_steps, "training steps")
    learning_rate: float = _setting(_TRAIN.learning_rate, "SGD learning rate")
    testing_percentage: float = _setting(10.0, "percentage of images for the test split")
    validation_percentage: float = _setting(10.0, "percentage of images for validation")
    eval_step_interval: int = _setting(_TRAIN.eval_step_interval, "evaluate on validation every N steps")
    train_batch_size: int = _setting(
        _TRAIN.train_batch_size, "images per training step (-1: every training image, each label weighing the same)"
    )
    test_batch_size: int = _setting(-1, "test images to evaluate (-1: all)")
    validation_batch_size: int = _setting(_TRAIN.validation_batch_size, "validation images per evaluation (-1: all)")
    print_misclassified_test_images: bool = _setting(False, "list the test images it got wrong")
    model_dir: str | Path | None = _setting(None, "where pretrained weights are downloaded or converted")
    bottleneck_dir: str | Path = _setting("bottlenecks", "bottleneck cache folder")
    final_tensor_name: str = _setting(_TRAIN.final_tensor_name, "name of the output tensor in the graph")
    flip_left_right: bool = _setting(_DISTORTIONS.flip_left_right, "randomly mirror training images")
    random_crop: float = _setting(_DISTORTIONS.random_crop, "random crop margin, in percent")
    random_scale: float = _setting(_DISTORTIONS.random_scale, "random zoom, in percent")
    random_brightness: float = _setting(_DISTORTIONS.random_brightness, "random brightness change, in percent")
    architecture: str | None = _setting(
        None, "backbone (default: Inception-v3 if fetched, else efficientnet_lite0)", sorted(backbones.REGISTRY)
    )
    saved_model_dir: str | Path = _setting("", "also write a SavedModel folder here")
    output_tflite: str | Path = _setting("", "also write a TFLite model for phones here (fixed-size uint8 input)")
    tflite_quantization: str = _setting(
        "float32",
        "int8: a full-integer TFLite model (uint8 in and out), calibrated on training images",
        list(tflite.QUANTIZATIONS),
    )
    num_distorted_variants: int = _setting(_TRAIN.num_distorted_variants, "distorted copies cached per training image")
    seed: int = _setting(_TRAIN.seed, "random seed: the same seed and data give the same model")
    num_shards: int = _setting(1, "split bottleneck caching into N shards ...", group=SCALING)
    shard_index: int = _setting(0, "... and cache only shard K, then stop", group=SCALING)
    distribution_strategy: str = _setting(
        "default",
        "tf.distribute strategy for training; train_batch_size is the global batch",
        ["default", "mirrored", "multi_worker_mirrored"],
        SCALING,
    )
    precision: str | None = _setting(
        None,
        "default: bfloat16 where the CPU (AMX, AVX512-BF16) or GPU has bfloat16 units, else float32 "
        "(the same accuracy on many_classes: bench/results/precision.md)",
        ["float32", "bfloat16"],
        SCALING,
    )
    optimizer: str = _setting(_TRAIN.optimizer, "optimizer of the new layer", train.OPTIMIZERS, BEYOND)
    learning_rate_schedule: str = _setting(
        _TRAIN.learning_rate_schedule, "constant, or cosine decay to 0", train.LEARNING_RATE_SCHEDULES, BEYOND
    )
    l2: float = _setting(_TRAIN.l2, "L2 penalty on the new layer's weights", group=BEYOND)
    label_smoothing: float = _setting(_TRAIN.label_smoothing, "e.g. 0.1", group=BEYOND)
    early_stopping_patience: int = _setting(
        _TRAIN.early_stopping_patience, "stop after N evaluations without progress; keep the best", group=BEYOND
    )
    standardize_bottlenecks: bool = _setting(
        _TRAIN.standardize_bottlenecks, "scale each feature by the training mean and std", group=BEYOND
    )
    fine_tune_blocks: int = _setting(
        0,
        "also train the backbone's last N blocks (EfficientNet-Lite) on cached augmented views (lesson 10)",
        group=BEYOND,
    )
    fine_tune_epochs: int = _setting(
        finetune.FineTuneConfig.epochs, "epochs of fine-tuning (the best on validation is kept)", group=BEYOND
    )
    image_fit: str = _setting(
        "crop",
        "how an image becomes the backbone's square: its centre cropped (ImageNet's way) or the whole image "
        "padded with white (often better for drawings and clip art); --recipe=auto tries both (lesson 10)",
        list(FITS),
        BEYOND,
    )
    recipe: str = _setting(
        "flags",
        "flags: train as the flags say; auto: try the flags' new layer, a tuned new layer (images cropped, then "
        "padded), the top blocks fine-tuned and that averaged with the tuned layer (both seeing images as the "
        "better tuned layer did), and keep the best on validation (lesson 10)",
        list(RECIPES),
        BEYOND,
    )
    time_budget: float = _setting(60.0, "minutes --recipe=auto may spend training (caching included)", group=BEYOND)
    # Not a flag: the settings given on purpose, even at their classic default (the command line's
    # flags, or the keywords passed from Python).
    given: frozenset[str] = field(default=frozenset(), repr=False, metadata={"flag": False})

    def __post_init__(self):
        for setting in settings():
            choices, value = setting.metadata.get("choices"), getattr(self, setting.name)
            if choices and value is not None and value not in choices:
                raise SettingError(f"{{{setting.name}}} must be one of {', '.join(choices)}, not {value!r}")
        problem = self._refused_under_fine_tuning() if self.fine_tune_blocks or self.recipe == "auto" else None
        if problem:
            raise SettingError(problem)
        self.train_config()  # its own checks, here: a wrong flag stops the run before any work
        if self.precision == "bfloat16" and self.output_tflite:
            raise SettingError(
                "{output_tflite}: TFLite has no bfloat16 convolutions, so a run that exports one computes in "
                "float32; leave out {precision}"
            )
        if self.tflite_quantization != "float32" and not self.output_tflite:
            raise SettingError(
                f"{{tflite_quantization}}={self.tflite_quantization} needs {{output_tflite}}=PATH (the file to write)"
            )

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> RetrainConfig:
        """The command line (``sys.argv[1:]`` by default) as a config; a mistake exits 2 naming the flag."""
        argv = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser()
        fix = _space_after_equals(argv)
        if fix:
            parser.error(fix)
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            known = [option for action in parser._actions for option in action.option_strings]
            messages = []
            for word in unknown:
                flag = word.split("=", 1)[0]
                close = difflib.get_close_matches(flag, known, n=3, cutoff=0.6)
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                messages.append(f"unknown argument {word!r}{hint}")
            parser.error("; ".join(messages))
        try:
            return cls(**vars(args), given=_given_flags(parser, argv))
        except SettingError as error:
            parser.error(error.for_command_line())

    def is_set(self, name: str) -> bool:
        """True when the setting ``name`` was given (a flag, or a keyword from Python) or differs from its
        classic default."""
        return name in self.given or getattr(self, name) != _DEFAULTS[name]

    def _refused_under_fine_tuning(self) -> str | None:
        """A message naming the first setting that cannot apply together with fine_tune_blocks (or
        with recipe=auto, which may fine-tune), or None."""
        if self.recipe == "auto":  # the flags describe the first recipe tried; fine-tuning keeps its own
            if self.validation_percentage <= 0:
                return "{recipe}=auto chooses on validation images: set {validation_percentage} above 0"
            if self.time_budget <= 0:
                return "{time_budget} must be above 0 minutes"
            if self.is_set("image_fit"):
                return "{recipe}=auto tries each {image_fit} and keeps the better on validation; leave it out"
        else:
            for name, reason in FINE_TUNING_REFUSES.items():
                if self.is_set(name):
                    return f"{{{name}}} does not apply with {{fine_tune_blocks}} ({reason}); leave it out"
        who = "{recipe}=auto" if self.recipe == "auto" else "{fine_tune_blocks}"
        if self.precision == "bfloat16":
            return f"{{precision}}: {who} fine-tunes in float32; leave out {{precision}}"
        if self.distribution_strategy != "default":
            return f"{{distribution_strategy}}: {who} fine-tunes on one device here; leave it out"
        if self.num_shards > 1 or self.is_set("shard_index"):
            return f"{{num_shards}}/{{shard_index}} cache the frozen layer's bottlenecks; not with {who}"
        if self.fine_tune_blocks and self.architecture and not backbones.REGISTRY[self.architecture].fine_tunable:
            fine_tunable = " or ".join(backbones.fine_tunable_names())
            return f"{{architecture}}={self.architecture}: {{fine_tune_blocks}} is built for {fine_tunable}"
        if self.fine_tune_blocks < 0 or self.fine_tune_epochs < 1:
            return "{fine_tune_blocks} must be positive and {fine_tune_epochs} at least 1"
        if self.fine_tune_blocks and self.train_batch_size < 1:
            return (
                "{train_batch_size} must be at least 1 with {fine_tune_blocks}: fine-tuning trains on batches of images"
            )
        return None

    def chosen_precision(self) -> tuple[str, str]:
        """``(precision, why)`` of the backbone: ``precision`` if set, else what this machine runs fastest."""
        if self.precision:
            return self.precision, "as asked"
        if self.fine_tune_blocks or self.recipe == "auto":
            return "float32", "fine-tuning trains in float32 (bfloat16 was no faster: bench/results/fine_tuning.md)"
        if self.output_tflite:
            return "float32", "a TFLite model computes in float32"
        return hardware.default_precision()

    def _shared(self) -> dict:
        """The settings training and fine-tuning take alike."""
        return dict(
            seed=self.seed,
            summaries_dir=self.summaries_dir or None,
            final_tensor_name=self.final_tensor_name,
            num_distorted_variants=self.num_distorted_variants,
        )

    def distortions(self) -> bottlenecks.Distortions:
        return bottlenecks.Distortions(
            self.flip_left_right, self.random_crop, self.random_scale, self.random_brightness
        )

    def train_config(self) -> train.TrainConfig:
        """The settings of the new layer's training (``train.train_head``)."""
        return train.TrainConfig(
            how_many_training_steps=self.how_many_training_steps,
            learning_rate=self.learning_rate,
            train_batch_size=self.train_batch_size,
            eval_step_interval=self.eval_step_interval,
            validation_batch_size=self.validation_batch_size,
            optimizer=self.optimizer,
            l2=self.l2,
            label_smoothing=self.label_smoothing,
            early_stopping_patience=self.early_stopping_patience,
            learning_rate_schedule=self.learning_rate_schedule,
            standardize_bottlenecks=self.standardize_bottlenecks,
            distortions=self.distortions(),
            **self._shared(),
        )

    def fine_tune_config(self) -> finetune.FineTuneConfig:
        """The settings of ``finetune.fine_tune``: its measured defaults, and the flags that apply.

        ``learning_rate`` is the new layer's peak rate and the top block's is a tenth of it (the
        classic 0.01 gives the defaults); ``train_batch_size`` and ``label_smoothing`` apply when
        set. Under ``recipe=auto`` those flags describe the new layer tried first, and fine-tuning
        keeps its defaults. The distortion flags, when any is set, replace the default views.
        """
        options = {}
        if self.recipe != "auto":
            if self.is_set("learning_rate"):
                options.update(head_learning_rate=self.learning_rate, learning_rate=self.learning_rate / 10)
            if self.is_set("train_batch_size"):
                options["batch_size"] = self.train_batch_size
            if self.is_set("label_smoothing"):
                options["label_smoothing"] = self.label_smoothing
        if self.distortions().active:
            options["distortions"] = self.distortions()
        blocks = self.fine_tune_blocks or finetune.FineTuneConfig.blocks
        return finetune.FineTuneConfig(blocks=blocks, epochs=self.fine_tune_epochs, **self._shared(), **options)

    def recipes(self, backbone_name: str) -> list[pipeline.Recipe]:
        """The recipes this run trains: one as the flags say, or under ``recipe=auto`` several, cheapest first."""
        spec = backbones.REGISTRY.get(backbone_name)
        fine_tunable = spec is not None and spec.fine_tunable
        if self.recipe == "auto":
            return pipeline.auto_recipes(self.train_config(), self.fine_tune_config() if fine_tunable else None)
        if self.fine_tune_blocks:
            name = f"top {self.fine_tune_blocks} blocks fine-tuned"
            return [pipeline.FineTuneRecipe(name, self.fine_tune_config(), fit=self.image_fit)]
        return [pipeline.HeadRecipe("new layer", self.train_config(), fit=self.image_fit)]

    def output_paths(self) -> dict[str, Path]:
        """The files ``retrain`` writes for these settings (``formats.output_paths``)."""
        return formats.output_paths(self.output_graph, self.output_labels, self.saved_model_dir, self.output_tflite)

    def model_paths(self) -> dict[str, Path]:
        """The model files ``retrain`` writes, by format (``formats.FORMATS``); SavedModel and TFLite when asked for."""
        return {name: path for name, path in self.output_paths().items() if name in formats.FORMATS}

    def to_json(self) -> dict:
        """The settings, as the report stores them."""
        return {setting.name: getattr(self, setting.name) for setting in settings()}


def _recording_given(init):
    """``RetrainConfig.__init__`` that also records which settings were passed (as the command line does)."""

    @functools.wraps(init)
    def __init__(self, *args, given=None, **kwargs):
        init(self, *args, given=frozenset(kwargs) if given is None else given, **kwargs)

    return __init__


RetrainConfig.__init__ = _recording_given(RetrainConfig.__init__)


def settings() -> list[dataclasses.Field]:
    """The fields of ``RetrainConfig`` that are settings (each one a flag)."""
    return [item for item in dataclasses.fields(RetrainConfig) if item.metadata.get("flag", True)]


_DEFAULTS = {item.name: item.default for item in settings()}


@dataclass
class RetrainResult:
    """What ``retrain`` wrote and measured."""

    paths: dict[str, Path]  # the files written: graph, keras, labels, report (tflite, saved_model when asked)
    evaluation: train.Evaluation | None  # on the test split (None for a caching-only shard run)
    final_validation_accuracy: float | None  # of the model written, on the whole validation split
    report: dict  # the evaluation report, as written to paths["report"] (a shard run: its counts)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per ``RetrainConfig`` setting, its help and default from the field."""
    parser = argparse.ArgumentParser(
        prog="retrain.py",
        description="Retrain the final layer of a pretrained image model on your own labelled photos.",
        allow_abbrev=False,
    )
    groups = {}
    for setting in settings():
        group = setting.metadata["group"]
        if group and group not in groups:
            groups[group] = parser.add_argument_group(group)
        add = groups[group].add_argument if group else parser.add_argument
        flag, help_line = f"--{setting.name}", setting.metadata["help"]
        if setting.default is dataclasses.MISSING:
            add(flag, required=True, help=help_line)
        elif isinstance(setting.default, bool):
            add(flag, action="store_true", help=help_line)
        else:
            kind = type(setting.default) if setting.default is not None else str
            kind = str if kind is Path else kind
            add(flag, type=kind, default=setting.default, choices=setting.metadata["choices"], help=help_line)
    return parser


def _space_after_equals(argv: list[str]) -> str | None:
    """The corrected command when a flag was typed as ``--flag= value`` (a space after '=')."""
    for position, word in enumerate(argv[:-1]):
        if word.startswith("--") and word.endswith("=") and not argv[position + 1].startswith("-"):
            fixed = argv[:position] + [word + argv[position + 1]] + argv[position + 2 :]
            return (
                f"there is a space after '{word}', so the shell passed '{argv[position + 1]}' as a separate word.\n"
                f"Run instead:\n  python retrain.py {shlex.join(fixed)}"
            )
    return None


def _given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> frozenset[str]:
    """The destinations of the flags typed on the command line (not left at their defaults)."""
    given = set()
    for action in parser._actions:
        for option in action.option_strings:
            if any(word == option or word.startswith(option + "=") for word in argv):
                given.add(action.dest)
    return frozenset(given)


def retrain(config: RetrainConfig, progress: bool = True) -> RetrainResult:
    """Run the whole flow for ``config``; returns what it wrote and measured (the report is also on disk).

    With ``num_shards`` above 1 it only caches its shard of the bottlenecks and returns. The
    training goes through ``pipeline``: one recipe as the flags say, or with ``recipe=auto`` several
    within ``time_budget`` minutes, the one with the best validation accuracy kept (test accuracy is
    measured once, for the model written).
    """
    strategy = train.make_strategy(config.distribution_strategy)  # first: multi-worker needs it so
    if config.distribution_strategy != "default":
        print(f"training on {strategy.num_replicas_in_sync} replica(s) with {config.distribution_strategy}")
    dataset = scan_dataset(config.image_dir, config.validation_percentage, config.testing_percentage)
    print(dataset.summary(), flush=True)
    precision, why = config.chosen_precision()
    print(f"precision: {precision} ({why})")
    backbone = backbones.load_backbone(config.architecture, config.model_dir, precision)
    print(f"backbone: {backbone.name} ({backbone.bottleneck_size}-d bottleneck, fingerprint {backbone.fingerprint})")
    print(f"engine: {backbone.engine}")

    if config.num_shards > 1:
        cached = bottlenecks.cache_bottlenecks(
            dataset.images,
            backbone,
            config.bottleneck_dir,
            progress=progress,
            num_shards=config.num_shards,
            shard_index=config.shard_index,
        )
        print(f"cached shard {config.shard_index} of {config.num_shards}; run without num_shards above 1 to train")
        counts = {"shard_index": config.shard_index, "num_shards": config.num_shards, "computed": cached.computed}
        return RetrainResult({}, None, None, {**counts, "cached": cached.hits, "failed": len(cached.failures)})
    recipes = config.recipes(backbone.name)
    if len(recipes) == 1:
        trained = pipeline.run(recipes[0], dataset, backbone, config.bottleneck_dir, progress, strategy)
        search = None
    else:
        search = pipeline.search(recipes, dataset, backbone, config.bottleneck_dir, config.time_budget, progress)
        print(search, flush=True)
        trained = search.chosen
        print(f"chosen on validation: {trained.name}")
    backbone = backbone.fitting(trained.fit)  # how the chosen model sees an image: in the report and the card
    test = _sample(trained.splits["test"], config.test_batch_size, config.seed)
    evaluation = train.evaluate(trained.classifier, test, dataset.class_names)
    final_validation_accuracy = None
    if len(trained.splits["validation"]):
        final_validation_accuracy = trained.evaluate("validation").accuracy
        print(f"Final validation accuracy = {final_validation_accuracy:.1%} (N={len(trained.splits['validation'])})")
    print(f"Final test accuracy = {evaluation.accuracy:.1%} (N={len(evaluation.labels)})")
    if config.print_misclassified_test_images:
        for record, true, predicted in evaluation.misclassified():
            print(f"misclassified: {record.path}  label={true}  predicted={predicted}")

    report = evaluation.to_json()
    report.update(
        backbone=backbone.name,
        fingerprint=backbone.fingerprint,
        final_validation_accuracy=final_validation_accuracy,
        skipped_files=[{"image": str(s.path), "reason": s.reason} for s in dataset.skipped + trained.failures],
        settings=config.to_json(),
        recipe={
            "name": trained.name,
            "settings": trained.settings,
            "seconds": round(trained.seconds, 1),
            **trained.notes,
        },
    )
    if search is not None:
        report["recipe_search"] = {
            "budget_minutes": config.time_budget,
            "tried": search.table(),
            "skipped": search.skipped,
        }
    report["model_card"] = model_card.build(
        dataset, backbone, report["recipe"], evaluation, recipe_search=report.get("recipe_search")
    )
    model = trained.exported(backbone)
    paths = write_outputs(
        config,
        model,
        dataset.class_names,
        report,
        calibration_records=dataset.split("train"),
        test_records=test.records,
    )
    return RetrainResult(paths, evaluation, final_validation_accuracy, report)


def _sample(split: bottlenecks.Bottlenecks, size: int, seed: int) -> bottlenecks.Bottlenecks:
    if size < 0 or size >= len(split):
        return split
    chosen = np.sort(np.random.default_rng(seed).choice(len(split), size, replace=False))
    return bottlenecks.Bottlenecks(split.vectors[chosen], split.labels[chosen], [split.records[i] for i in chosen])


def write_outputs(
    config: RetrainConfig, model, class_names: list[str], report: dict, calibration_records=None, test_records=()
) -> dict[str, Path]:
    """Write every output to a temporary name first, then move them all into place together.

    ``calibration_records`` (training images) calibrate an int8 TFLite model (``tflite_quantization``).
    ``report["model_card"]`` (``model_card.build``) gets the model files' hashes and, for an int8
    model, its agreement with ``model`` on ``test_records``; it is written beside the model too.
    Returns the paths written (``config.output_paths()``); the model files' writers, and the lines
    that say what each holds, are ``formats.FORMATS``'.
    """
    paths = config.output_paths()
    representative = None
    if "tflite" in paths and config.tflite_quantization == "int8":
        if not calibration_records:
            raise SettingError("{tflite_quantization}=int8 needs training images to calibrate on, and there are none")
        images, labels = tflite.calibration_images(calibration_records, tflite.model_preprocessing(model))
        representative = tflite.representative_dataset(images, labels, len(images))
    options = formats.WriteOptions(config.final_tensor_name, class_names, config.tflite_quantization, representative)
    models = config.model_paths()
    try:
        with contextlib.ExitStack() as stack:
            temporary = {name: stack.enter_context(atomic_path(path, keep_suffix=True)) for name, path in paths.items()}
            for name in models:
                formats.FORMATS[name].write(model, temporary[name], options)
            temporary["labels"].write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
            written = {path.name: temporary[name] for name, path in paths.items() if name in models or name == "labels"}
            agreement = None
            if "tflite" in models and config.tflite_quantization == "int8":
                agreement = model_card.int8_agreement(model, temporary["tflite"], test_records)
            model_card.add_files(report["model_card"], written, agreement)
            text = json.dumps(report, indent=2, default=str)
            temporary["report"].write_text(text, encoding="utf-8")
            card = model_card.to_markdown(json.loads(text)["model_card"], paths["graph"].name)  # as the report says
            temporary["model_card"].write_text(card, encoding="utf-8")
    except OSError as error:
        advice = "free some disk space" if error.errno == errno.ENOSPC else "choose another output folder"
        raise OSError(
            f"could not write the model files next to {paths['graph']} ({error.strerror or error}); {advice} "
            "and run again. Earlier outputs there were left as they were."
        ) from error
    for name, path in models.items():
        print(f"wrote {formats.FORMATS[name].describe(model, path, options)}")
    print(f"wrote {paths['labels']}, {paths['report']}, {paths['model_card']}")
    return paths


@command_line  # exit codes: tlcourse.errors
def main(argv: list[str] | None = None) -> int:
    config = RetrainConfig.from_args(argv)
    if (
        config.architecture is None and not config.fine_tune_blocks and config.recipe != "auto"
    ):  # classic: Inception-v3 if online
        config = dataclasses.replace(
            config, architecture=backbones.fetch_default_backbone(config.model_dir, announce=True)
        )
    try:
        retrain(config)
    except SettingError as error:  # the library names parameters; here they are flags
        raise SettingError(error.for_command_line()) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
