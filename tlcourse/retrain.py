"""The tutorial's ``retrain.py``: every classic flag, safer data handling, better outputs.

    python retrain.py --image_dir=Dataset_Name
    python retrain.py --bottleneck_dir=bottlenecks --how_many_training_steps=1000 \\
      --train_batch_size=100 --model_dir=inception --summaries_dir=training_summaries/basic \\
      --output_graph=retrained_graph.pb --output_labels=retrained_labels.txt --image_dir=Dataset_Name

Steps: scan the image folder, cache the bottlenecks, train the new layer, print the final test
accuracy, write the model files (all atomically). Also installed as ``tlcourse-retrain``.
Taught in ``notebooks/03_retrain.ipynb``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from tlcourse import backbones, bottlenecks, efficientnet_lite, export, finetune, hardware, tflite, train
from tlcourse.atomic import atomic_directory, atomic_path
from tlcourse.data import SPLITS, scan_dataset
from tlcourse.errors import command_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrain.py",
        description="Retrain the final layer of a pretrained image model on your own labelled photos.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--image_dir", required=True, help="folder with one sub-folder of images per label")
    add("--output_graph", default="retrained_graph.pb", help="frozen graph to write (a .keras file goes beside it)")
    add("--output_labels", default="retrained_labels.txt", help="labels file to write, one per line")
    add("--summaries_dir", default="retrain_logs", help="TensorBoard summaries ('' to skip)")
    add("--how_many_training_steps", type=int, default=4000, help="training steps")
    add("--learning_rate", type=float, default=0.01, help="SGD learning rate")
    add("--testing_percentage", type=float, default=10, help="percentage of images for the test split")
    add("--validation_percentage", type=float, default=10, help="percentage of images for validation")
    add("--eval_step_interval", type=int, default=10, help="evaluate on validation every N steps")
    add("--train_batch_size", type=int, default=100, help="images per training step")
    add("--test_batch_size", type=int, default=-1, help="test images to evaluate (-1: all)")
    add("--validation_batch_size", type=int, default=100, help="validation images per evaluation (-1: all)")
    add("--print_misclassified_test_images", action="store_true", help="list the test images it got wrong")
    add("--model_dir", default=None, help="where pretrained weights are downloaded or converted")
    add("--bottleneck_dir", default="bottlenecks", help="bottleneck cache folder")
    add("--final_tensor_name", default="final_result", help="name of the output tensor in the graph")
    add("--flip_left_right", action="store_true", help="randomly mirror training images")
    add("--random_crop", type=float, default=0, help="random crop margin, in percent")
    add("--random_scale", type=float, default=0, help="random zoom, in percent")
    add("--random_brightness", type=float, default=0, help="random brightness change, in percent")
    add("--architecture", default=None, choices=sorted(backbones.REGISTRY), help="backbone (default: automatic)")
    add("--saved_model_dir", default="", help="also write a SavedModel folder here")
    add("--output_tflite", default="", help="also write a TFLite model for phones here (fixed-size uint8 input)")
    add(
        "--tflite_quantization",
        default="float32",
        choices=list(tflite.QUANTIZATIONS),
        help="int8: a full-integer TFLite model (uint8 in and out), calibrated on training images",
    )
    add("--num_distorted_variants", type=int, default=4, help="distorted copies cached per training image")
    add("--seed", type=int, default=0, help="random seed: the same seed and data give the same model")
    scale = parser.add_argument_group("beyond one machine")
    scale.add_argument("--num_shards", type=int, default=1, help="split bottleneck caching into N shards ...")
    scale.add_argument("--shard_index", type=int, default=0, help="... and cache only shard K, then stop")
    scale.add_argument(
        "--distribution_strategy",
        default="default",
        choices=["default", "mirrored", "multi_worker_mirrored"],
        help="tf.distribute strategy for training; --train_batch_size is the global batch",
    )
    scale.add_argument(
        "--precision",
        default=None,
        choices=["float32", "bfloat16"],
        help="default: bfloat16 where the CPU (AMX, AVX512-BF16) or GPU has bfloat16 units, else float32 "
        "(the same accuracy on many_classes: bench/results/precision.md)",
    )
    better = parser.add_argument_group("beyond the tutorial (lesson 07: many classes)")
    better.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="optimizer of the new layer")
    better.add_argument("--learning_rate_schedule", default="constant", choices=["constant", "cosine"])
    better.add_argument("--l2", type=float, default=0.0, help="L2 penalty on the new layer's weights")
    better.add_argument("--label_smoothing", type=float, default=0.0, help="e.g. 0.1")
    better.add_argument(
        "--early_stopping_patience",
        type=int,
        default=0,
        help="stop after N evaluations without progress; keep the best",
    )
    better.add_argument(
        "--standardize_bottlenecks", action="store_true", help="scale each feature by the training mean and std"
    )
    better.add_argument(
        "--fine_tune_blocks",
        type=int,
        default=0,
        help="also train the backbone's last N blocks (EfficientNet-Lite), in two phases (lesson 08)",
    )
    better.add_argument(
        "--fine_tune_epochs", type=int, default=15, help="epochs of phase 2 of fine-tuning (early-stopped)"
    )
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    fix = _space_after_equals(argv)
    if fix:
        parser.error(fix)
    args, unknown = parser.parse_known_args(argv)
    args.given_flags = _given_flags(parser, argv)
    if args.fine_tune_blocks:
        problem = _refused_under_fine_tuning(args)
        if problem:
            parser.error(problem)
    if args.tflite_quantization != "float32" and not args.output_tflite:
        parser.error(f"--tflite_quantization={args.tflite_quantization} needs --output_tflite=PATH (the file to write)")
    if unknown:
        known = [option for action in parser._actions for option in action.option_strings]
        messages = []
        for word in unknown:
            flag = word.split("=", 1)[0]
            close = difflib.get_close_matches(flag, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            messages.append(f"unknown argument {word!r}{hint}")
        parser.error("; ".join(messages))
    return args


# Flags that do not apply with --fine_tune_blocks, and why (lesson 08). The others apply: see fine_tune_config.
FINE_TUNING_REFUSES = {
    "how_many_training_steps": "fine-tuning trains in epochs: use --fine_tune_epochs",
    "eval_step_interval": "fine-tuning measures the whole validation split after every epoch",
    "validation_batch_size": "fine-tuning measures the whole validation split after every epoch",
}


def _given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The destinations of the flags typed on the command line (not left at their defaults)."""
    given = set()
    for action in parser._actions:
        for option in action.option_strings:
            if any(word == option or word.startswith(option + "=") for word in argv):
                given.add(action.dest)
    return sorted(given)


def _flag_given(args: argparse.Namespace, dest: str) -> bool:
    given = getattr(args, "given_flags", None)
    if given is None:  # a Namespace not made by parse_args: compare with the default
        return getattr(args, dest) != build_parser().get_default(dest)
    return dest in given


def _refused_under_fine_tuning(args: argparse.Namespace) -> str | None:
    """A message naming the first flag that cannot apply together with --fine_tune_blocks, or None."""
    for dest, reason in FINE_TUNING_REFUSES.items():
        if _flag_given(args, dest):
            return f"--{dest} does not apply with --fine_tune_blocks ({reason}); leave it out"
    if args.precision == "bfloat16":
        return "--precision: --fine_tune_blocks trains in float32; leave out --precision to fine-tune"
    if args.distribution_strategy != "default":
        return "--distribution_strategy: --fine_tune_blocks trains on one device here; leave it out to fine-tune"
    if args.num_shards > 1 or _flag_given(args, "shard_index"):
        return "--num_shards/--shard_index cache the frozen layer's bottlenecks; not with --fine_tune_blocks"
    if args.architecture and args.architecture not in efficientnet_lite.VARIANTS:
        lite = " or ".join(efficientnet_lite.VARIANTS)
        return f"--architecture={args.architecture}: --fine_tune_blocks is built for {lite}"
    if args.fine_tune_blocks < 0 or args.fine_tune_epochs < 1:
        return "--fine_tune_blocks must be positive and --fine_tune_epochs at least 1"
    return None


def fine_tune_config(args: argparse.Namespace) -> finetune.FineTuneConfig:
    """The command line mapped onto ``finetune.FineTuneConfig`` (every flag that applies to fine-tuning).

    ``--learning_rate`` is the new layer's rate in phase 1; phase 2 uses a tenth of it. Flags left
    at their defaults keep the fine-tuning defaults (Adam, 1e-3 then 1e-4, batch 64, label smoothing 0.1).
    """
    options = {}
    if _flag_given(args, "learning_rate"):
        options.update(head_learning_rate=args.learning_rate, learning_rate=args.learning_rate / 10)
    for flag, field in [("optimizer", "optimizer"), ("train_batch_size", "batch_size"), ("l2", "l2")]:
        if _flag_given(args, flag):
            options[field] = getattr(args, flag)
    if _flag_given(args, "label_smoothing"):
        options["label_smoothing"] = args.label_smoothing
    if args.early_stopping_patience > 0:
        options["patience"] = args.early_stopping_patience
    return finetune.FineTuneConfig(
        blocks=args.fine_tune_blocks,
        epochs=args.fine_tune_epochs,
        learning_rate_schedule=args.learning_rate_schedule,
        standardize_bottlenecks=args.standardize_bottlenecks,
        seed=args.seed,
        summaries_dir=args.summaries_dir or None,
        final_tensor_name=args.final_tensor_name,
        distortions=train.Distortions(
            args.flip_left_right, args.random_crop, args.random_scale, args.random_brightness
        ),
        num_distorted_variants=args.num_distorted_variants,
        **options,
    )


def chosen_precision(args: argparse.Namespace) -> tuple[str, str]:
    """``(precision, why)`` of the backbone: ``--precision`` if given, else what this machine runs fastest."""
    if args.precision:
        return args.precision, "--precision"
    if args.fine_tune_blocks:
        return "float32", "fine-tuning trains in float32"
    return hardware.default_precision()


def retrain(args: argparse.Namespace, progress: bool = True) -> dict:
    """Run the whole flow for parsed ``args``; returns the evaluation report (also written to disk).

    With ``--num_shards`` above 1 it only caches its shard of the bottlenecks and returns. With
    ``--fine_tune_blocks`` it caches the activations below the trainable top instead of bottlenecks.
    """
    strategy = train.make_strategy(args.distribution_strategy)  # first: multi-worker needs it so
    if args.distribution_strategy != "default":
        print(f"training on {strategy.num_replicas_in_sync} replica(s) with {args.distribution_strategy}")
    dataset = scan_dataset(args.image_dir, args.validation_percentage, args.testing_percentage)
    print(dataset.summary(), flush=True)
    precision, why = chosen_precision(args)
    print(f"precision: {precision} ({why})")
    backbone = backbones.load_backbone(args.architecture, args.model_dir, precision)
    print(f"backbone: {backbone.name} ({backbone.bottleneck_size}-d bottleneck, fingerprint {backbone.fingerprint})")

    if args.num_shards > 1:
        report = bottlenecks.cache_bottlenecks(
            dataset.images,
            backbone,
            args.bottleneck_dir,
            progress,
            num_shards=args.num_shards,
            shard_index=args.shard_index,
        )
        print(f"cached shard {args.shard_index} of {args.num_shards}; run without --num_shards to train")
        return {
            "shard_index": args.shard_index,
            "num_shards": args.num_shards,
            "computed": report.computed,
            "cached": report.hits,
            "failed": len(report.failures),
        }
    config = train.TrainConfig(
        how_many_training_steps=args.how_many_training_steps,
        learning_rate=args.learning_rate,
        train_batch_size=args.train_batch_size,
        eval_step_interval=args.eval_step_interval,
        validation_batch_size=args.validation_batch_size,
        seed=args.seed,
        summaries_dir=args.summaries_dir or None,
        distortions=train.Distortions(
            args.flip_left_right, args.random_crop, args.random_scale, args.random_brightness
        ),
        num_distorted_variants=args.num_distorted_variants,
        final_tensor_name=args.final_tensor_name,
        optimizer=args.optimizer,
        learning_rate_schedule=args.learning_rate_schedule,
        l2=args.l2,
        label_smoothing=args.label_smoothing,
        early_stopping_patience=args.early_stopping_patience,
        standardize_bottlenecks=args.standardize_bottlenecks,
    )
    if args.fine_tune_blocks:
        settings = fine_tune_config(args)
        unfolded = backbones.load_backbone(backbone.name, args.model_dir, fold_batch_norms=False)
        tuned = finetune.fine_tune(dataset, backbone, args.bottleneck_dir, settings, progress, unfolded)
        model = export.with_preprocessing(backbone, tuned.model)
        test = _sample(tuned.splits["test"], args.test_batch_size, args.seed)
        evaluation = train.evaluate(tuned.trainable, test, dataset.class_names)
        final_validation_accuracy = tuned.evaluate("validation", dataset.class_names).accuracy
        fine_tuning = dataclasses.asdict(settings)
        failures = tuned.cache_report.failures
    else:
        model, evaluation, final_validation_accuracy, failures = _train_new_layer(
            args, config, dataset, backbone, strategy, progress
        )
    print(f"Final test accuracy = {evaluation.accuracy:.1%} (N={len(evaluation.labels)})")
    if args.print_misclassified_test_images:
        for record, true, predicted in evaluation.misclassified():
            print(f"misclassified: {record.path}  label={true}  predicted={predicted}")

    result = evaluation.to_json()
    result.update(
        backbone=backbone.name,
        fingerprint=backbone.fingerprint,
        final_validation_accuracy=final_validation_accuracy,
        skipped_files=[{"image": str(s.path), "reason": s.reason} for s in dataset.skipped + failures],
        settings=dict(vars(args)),
    )
    if args.fine_tune_blocks:
        result["fine_tuning"] = fine_tuning  # what the two phases ran with (lesson 08)
    write_outputs(args, model, dataset.class_names, result, calibration_records=dataset.split("train"))
    return result


def _train_new_layer(args, config, dataset, backbone, strategy, progress):
    """The tutorial's path: a new layer on cached bottlenecks.

    Returns (model, test evaluation, validation accuracy, images that failed to decode). The
    validation accuracy is that of the layer written (the best one, under early stopping),
    measured on the whole validation split: not the last sampled evaluation of training.
    """
    report = bottlenecks.cache_bottlenecks(dataset.images, backbone, args.bottleneck_dir, progress=progress)
    distorted = None
    if config.distortions.active and config.num_distorted_variants > 0:
        train.cache_distorted_variants(dataset, backbone, args.bottleneck_dir, config, progress)
        distorted = train.gather_distorted(dataset, backbone, args.bottleneck_dir, config)
    splits = {name: train.gather(dataset, name, backbone, args.bottleneck_dir) for name in SPLITS}
    head, _ = train.train_head(
        splits["train"], splits["validation"], len(dataset.class_names), config, distorted, progress, strategy
    )
    evaluation = train.evaluate(head, _sample(splits["test"], args.test_batch_size, args.seed), dataset.class_names)
    validation = None
    if len(splits["validation"]):
        validation = train.evaluate(head, splits["validation"], dataset.class_names).accuracy
    return export.full_model(backbone, head), evaluation, validation, report.failures


def _sample(split: train.Bottlenecks, size: int, seed: int) -> train.Bottlenecks:
    if size < 0 or size >= len(split):
        return split
    chosen = np.sort(np.random.default_rng(seed).choice(len(split), size, replace=False))
    return train.Bottlenecks(split.vectors[chosen], split.labels[chosen], [split.records[i] for i in chosen])


def output_paths(args: argparse.Namespace) -> dict[str, Path]:
    graph = Path(args.output_graph)
    return {
        "graph": graph,
        "keras": graph.with_suffix(".keras"),
        "labels": Path(args.output_labels),
        "report": graph.with_suffix(".report.json"),
        **({"tflite": Path(args.output_tflite)} if getattr(args, "output_tflite", "") else {}),
    }


def write_outputs(
    args: argparse.Namespace, model, class_names: list[str], result: dict, calibration_records=None
) -> None:
    """Write every output to a temporary name first, then move them all into place together.

    ``calibration_records`` (training images) calibrate an int8 TFLite model (``--tflite_quantization``).
    """
    paths = output_paths(args)
    quantization = getattr(args, "tflite_quantization", "float32")
    representative = None
    if "tflite" in paths and quantization == "int8":
        if not calibration_records:
            raise ValueError("--tflite_quantization=int8 needs training images to calibrate on, and there are none")
        images, labels = tflite.calibration_images(calibration_records, tflite.model_preprocessing(model))
        representative = tflite.representative_dataset(images, labels, len(images))
    try:
        with contextlib.ExitStack() as stack:
            temporary = {name: stack.enter_context(atomic_path(path, keep_suffix=True)) for name, path in paths.items()}
            export.write_frozen_graph(model, temporary["graph"], args.final_tensor_name)
            model.save(temporary["keras"])
            temporary["labels"].write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
            temporary["report"].write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
            if args.saved_model_dir:
                saved = stack.enter_context(atomic_directory(args.saved_model_dir))
                export.write_saved_model(model, saved, args.final_tensor_name)
            if "tflite" in paths:
                tflite.write_tflite(model, temporary["tflite"], quantization, representative)
    except OSError as error:
        advice = "free some disk space" if error.errno == errno.ENOSPC else "choose another output folder"
        raise OSError(
            f"could not write the model files next to {paths['graph']} ({error.strerror or error}); {advice} "
            "and run again. Earlier outputs there were left as they were."
        ) from error
    tensors = f"input 'image:0' uint8 [batch, height, width, 3], output '{args.final_tensor_name}:0'"
    print(f"wrote {paths['graph']} ({tensors})")
    print(f"wrote {paths['labels']}, {paths['keras']}, {paths['report']}")
    if args.saved_model_dir:
        print(f"wrote SavedModel {args.saved_model_dir}")
    if "tflite" in paths:
        size = tflite.model_preprocessing(model).size
        kind = "full-integer int8, uint8 in and out" if quantization == "int8" else "float32, uint8 in"
        print(f"wrote {paths['tflite']} (TFLite {kind}: input uint8 RGB [1, {size}, {size}, 3], resized outside)")


@command_line  # a user's mistake prints "error: ..." and exits 1, never a traceback
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.architecture is None and not args.fine_tune_blocks:  # the classic default: Inception-v3, fetched if online
        args.architecture = backbones.fetch_default_backbone(args.model_dir, announce=True)
    retrain(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
