import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

import tlcourse as tlc
from tests.images_factory import labelled_folder
from tlcourse import export, finetune, label, retrain, train
from tlcourse.data import scan_dataset
from tlcourse.download import file_hash
from tlcourse.images import load_image

REPO = Path(__file__).resolve().parents[1]
SEED_COMMAND = (
    "--bottleneck_dir=bottlenecks --how_many_training_steps=1000 --train_batch_size=100 --model_dir=inception "
    "--summaries_dir=training_summaries/basic --output_graph=retrained_graph.pb "
    "--output_labels=retrained_labels.txt --image_dir=Dataset_Name"
).split()


def small_stamps(stamps_dir, target, labels=("birds", "flowers", "fruit"), per_label=14):
    for name in labels:
        (target / name).mkdir(parents=True)
        for image in sorted((stamps_dir / name).iterdir())[:per_label]:
            shutil.copy(image, target / name / image.name)
    return target


def run(args, cwd, script):
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_the_tutorials_two_commands_as_typed(stamps_dir, tmp_path):
    """The one test that names no backbone, on purpose: the classic default (Lite0 when offline)."""
    small_stamps(stamps_dir, tmp_path / "Dataset_Name")
    trained = run(SEED_COMMAND, tmp_path, "retrain.py")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Final test accuracy = " in trained.stdout
    for name in ("retrained_graph.pb", "retrained_graph.keras", "retrained_labels.txt", "retrained_graph.report.json"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "retrained_labels.txt").read_text().split() == ["birds", "flowers", "fruit"]

    shutil.copy(
        stamps_dir / "flowers" / sorted(p.name for p in (stamps_dir / "flowers").iterdir())[-1],
        tmp_path / "image_name.jpg",
    )
    labelled = run(["image_name.jpg"], tmp_path, "label_image.py")
    assert labelled.returncode == 0, labelled.stderr[-3000:]
    lines = labelled.stdout.splitlines()
    assert lines[0] == "image_name.jpg" and len(lines) == 4  # top 5 of 3 labels: all three
    assert lines[1].strip().startswith("flowers (score = ")


def test_every_classic_flag_parses_with_its_meaning():
    args = retrain.RetrainConfig.from_args(
        "--image_dir=d --output_graph=g.pb --output_labels=l.txt --summaries_dir=s --how_many_training_steps=7 "
        "--learning_rate=0.5 --testing_percentage=20 --validation_percentage=15 --eval_step_interval=3 "
        "--train_batch_size=9 --test_batch_size=11 --validation_batch_size=13 --print_misclassified_test_images "
        "--model_dir=m --bottleneck_dir=b --final_tensor_name=out --flip_left_right --random_crop=10 "
        "--random_scale=20 --random_brightness=30 --architecture=efficientnet_lite2 --saved_model_dir=sm".split()
    )
    assert (args.image_dir, args.output_graph, args.output_labels, args.summaries_dir) == ("d", "g.pb", "l.txt", "s")
    assert (args.how_many_training_steps, args.learning_rate, args.eval_step_interval) == (7, 0.5, 3)
    assert (args.testing_percentage, args.validation_percentage) == (20, 15)
    assert (args.train_batch_size, args.test_batch_size, args.validation_batch_size) == (9, 11, 13)
    assert args.print_misclassified_test_images and args.flip_left_right
    assert (args.model_dir, args.bottleneck_dir, args.final_tensor_name) == ("m", "b", "out")
    assert (args.random_crop, args.random_scale, args.random_brightness) == (10, 20, 30)
    assert (args.architecture, args.saved_model_dir) == ("efficientnet_lite2", "sm")
    defaults = retrain.RetrainConfig.from_args(["--image_dir=d"])
    assert (defaults.how_many_training_steps, defaults.learning_rate, defaults.train_batch_size) == (4000, 0.01, 100)
    assert (defaults.test_batch_size, defaults.validation_batch_size, defaults.eval_step_interval) == (-1, 100, 10)
    assert (defaults.testing_percentage, defaults.validation_percentage) == (10, 10)
    assert defaults.final_tensor_name == "final_result" and not defaults.flip_left_right
    assert defaults == retrain.RetrainConfig(image_dir="d", given=frozenset({"image_dir"}))  # one set of defaults
    assert defaults.to_json() == retrain.RetrainConfig(image_dir="d").to_json()


def test_every_setting_is_a_flag_with_a_help_line():
    parser = retrain.build_parser()
    flags = {action.dest: action for action in parser._actions if action.dest != "help"}
    assert set(flags) == {setting.name for setting in retrain.settings()}
    assert all(action.help for action in flags.values())
    for setting in retrain.settings():
        if setting.name != "image_dir":
            assert parser.get_default(setting.name) == setting.default, setting.name


def test_the_flags_that_feed_a_stage_default_to_its_config():
    """Each default is written once, in the stage's config: the classic command line trains ``TrainConfig()``
    and fine-tunes with ``FineTuneConfig()`` (summaries aside: the command line writes them by default)."""
    config = retrain.RetrainConfig(image_dir="d")
    assert config.summaries_dir == "retrain_logs" and train.TrainConfig().summaries_dir is None
    assert dataclasses.replace(config.train_config(), summaries_dir=None) == train.TrainConfig()
    assert config.fine_tune_epochs == finetune.FineTuneConfig().epochs
    assert dataclasses.replace(config.fine_tune_config(), summaries_dir=None) == finetune.FineTuneConfig()


def test_the_library_names_parameters_and_the_command_line_names_flags(capsys):
    with pytest.raises(retrain.SettingError) as refused:
        retrain.RetrainConfig(image_dir="d", fine_tune_blocks=2, eval_step_interval=5)
    assert str(refused.value).startswith("eval_step_interval does not apply with fine_tune_blocks")
    assert refused.value.for_command_line().startswith("--eval_step_interval does not apply with --fine_tune_blocks")
    with pytest.raises(retrain.SettingError, match="^optimizer must be one of sgd, adam"):
        retrain.RetrainConfig(image_dir="d", optimizer="adagrad")
    with pytest.raises(SystemExit) as exit_info:  # typed, even at its default, it is refused too
        retrain.RetrainConfig.from_args(["--image_dir=d", "--fine_tune_blocks=2", "--eval_step_interval=10"])
    assert exit_info.value.code == 2
    assert "error: --eval_step_interval does not apply with --fine_tune_blocks" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--train_batch_size=0"], "--train_batch_size must be at least 1, or -1"),
        (["--how_many_training_steps=0"], "--how_many_training_steps and --eval_step_interval must be at least 1"),
        (["--train_batch_size=-1", "--fine_tune_blocks=2"], "--train_batch_size must be at least 1 with"),
    ],
)
def test_a_training_setting_out_of_range_stops_before_any_work_naming_its_flag(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        retrain.RetrainConfig.from_args(["--image_dir=d", *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"error: {message}" in error and "Traceback" not in error


def test_a_space_after_equals_shows_the_corrected_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        retrain.RetrainConfig.from_args(["--how_many_training_steps=10", "--image_dir=", "Dataset_Name"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "python retrain.py --how_many_training_steps=10 --image_dir=Dataset_Name" in error
    assert "Traceback" not in error


def test_an_unknown_flag_lists_close_matches(capsys):
    with pytest.raises(SystemExit):
        retrain.RetrainConfig.from_args(["--image_dir=d", "--how_many_trainig_steps=5"])
    assert "did you mean --how_many_training_steps" in capsys.readouterr().err


def noise_dataset(root, labels=("a", "b", "c"), per_label=20):
    return labelled_folder(root, labels, per_label)  # random pixels: nothing to learn


def config_for(tmp_path, image_dir, **settings):
    """A small run's settings under ``tmp_path``: Lite0, 60 steps (fine-tuning counts epochs instead)."""
    steps = {} if settings.get("fine_tune_blocks") else {"how_many_training_steps": 60}
    return retrain.RetrainConfig(
        **{
            "image_dir": image_dir,
            "bottleneck_dir": tmp_path / "bn",
            "output_graph": tmp_path / "out" / "g.pb",
            "output_labels": tmp_path / "out" / "labels.txt",
            "summaries_dir": tmp_path / "logs",
            "architecture": "efficientnet_lite0",
            **steps,
            **settings,
        }
    )


@pytest.mark.slow
def test_retrain_is_seeded_and_summaries_are_readable_by_tensorboard(tmp_path):
    image_dir = noise_dataset(tmp_path / "images")

    def head_weights():
        model = keras.models.load_model(tmp_path / "out" / "g.keras")
        return model.get_layer("retrained_head").get_weights()[0]

    first = retrain.retrain(config_for(tmp_path, image_dir), progress=False)
    weights = head_weights()
    second = retrain.retrain(config_for(tmp_path, image_dir, summaries_dir=""), progress=False)
    assert first.evaluation.accuracy == second.evaluation.accuracy
    assert first.report["confusion_matrix"] == second.report["confusion_matrix"]
    assert first.paths["keras"] == tmp_path / "out" / "g.keras" and first.paths["report"].is_file()
    np.testing.assert_array_equal(weights, head_weights())
    for part in ("train", "validation"):
        events = EventAccumulator(str(tmp_path / "logs" / part))
        events.Reload()
        tags = set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
        assert {"accuracy", "cross_entropy"} <= tags, (part, tags)


def test_misclassified_test_images_are_listed(tmp_path, capsys):
    image_dir = noise_dataset(tmp_path / "images")  # random pixels: the test set must have errors
    result = retrain.retrain(config_for(tmp_path, image_dir, print_misclassified_test_images=True), progress=False)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("misclassified: ")]
    assert len(printed) == len(result.report["misclassified"]) > 0
    report = json.loads((tmp_path / "out" / "g.report.json").read_text())
    assert np.sum(report["confusion_matrix"]) == report["num_images"]
    assert set(report["per_class_accuracy"]) == {"a", "b", "c"}


def test_final_validation_accuracy_is_the_written_models_on_the_whole_validation_split(tmp_path, monkeypatch):
    image_dir = noise_dataset(tmp_path / "images", per_label=30)
    sampled = train._evaluate_sample

    def marked(*arguments):  # training's own evaluations (100 draws with replacement) get a mark
        loss, accuracy = sampled(*arguments)
        return loss, accuracy + 1e-3  # a shift keeps early stopping's choice; a report copying one cannot pass

    monkeypatch.setattr(train, "_evaluate_sample", marked)
    settings = config_for(tmp_path, image_dir, early_stopping_patience=2, eval_step_interval=5)
    result = retrain.retrain(settings, progress=False)
    validation = [record.path for record in scan_dataset(image_dir).split("validation")]
    assert len(validation) >= 3
    out = tmp_path / "out"
    labelled = label.label_images(validation, out / "g.keras", out / "labels.txt")
    accuracy = np.mean([result.top[0][0] == result.path.parent.name for result in labelled])
    assert result.final_validation_accuracy == pytest.approx(accuracy, abs=1e-6)
    assert result.report["final_validation_accuracy"] == result.final_validation_accuracy


def test_label_image_reads_every_output_format_alike_and_batches_a_folder(stamps_dir, tmp_path):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=8)
    result = retrain.retrain(
        # float32 (the default on a CPU with bfloat16 units is bfloat16): every format then gives the same
        # answers to 1e-4 (a bfloat16 model's LiteRT conversion is its float32 copy: tested below)
        config_for(tmp_path, image_dir, saved_model_dir=tmp_path / "out" / "saved", precision="float32"),
        progress=False,
    )
    assert result.paths["saved_model"] == tmp_path / "out" / "saved"
    photos = sorted((stamps_dir / "birds").iterdir())[-6:]  # photos of different sizes
    assert len({load_image(photo).shape for photo in photos}) > 1
    labels = tmp_path / "out" / "labels.txt"
    names = label.read_labels(labels)
    one_by_one = label.load_classifier(tmp_path / "out" / "g.pb")
    expected = [one_by_one(load_image(photo)[None])[0] for photo in photos]
    for model in ("g.pb", "g.keras", "saved"):
        assert label.load_classifier(tmp_path / "out" / model).preprocess is not None, model
        labelled = label.label_images(photos, tmp_path / "out" / model, labels, top_k=3, batch_size=4)
        assert [result.path for result in labelled] == photos
        for result, probabilities in zip(labelled, expected, strict=True):
            scores = {name: score for name, score in result.top}
            np.testing.assert_allclose([scores[name] for name in names], probabilities, atol=1e-4, err_msg=model)
    if tlc.hardware.default_engine()[0] == "litert":  # the folders above were labelled by LiteRT
        kept = tlc.config.models_dir() / "labelling"
        assert (kept / f"{file_hash(tmp_path / 'out' / 'g.pb')[:16]}-v{tlc.litert.LITERT_VERSION}.litert").is_file()
        assert label.kept_conversion(tmp_path / "out" / "saved").is_file()  # a SavedModel folder's too
        assert len(list(kept.glob("*.litert"))) <= label.KEPT_CONVERSIONS


def test_a_graph_without_its_two_halves_is_labelled_one_image_at_a_time(stamps_dir, tmp_path):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=8)
    retrain.retrain(config_for(tmp_path, image_dir), progress=False)
    model = keras.models.load_model(tmp_path / "out" / "g.keras")
    serve = tf.function(
        lambda image: tf.identity(model(image), name="final_result"),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")],
    )
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    (tmp_path / "old.pb").write_bytes(frozen.graph.as_graph_def().SerializeToString())  # as older versions wrote
    assert label.load_classifier(tmp_path / "old.pb").preprocess is None
    photos = sorted((stamps_dir / "fruit").iterdir())[:3]
    labels = tmp_path / "out" / "labels.txt"
    old = label.label_images(photos, tmp_path / "old.pb", labels)
    new = label.label_images(photos, tmp_path / "out" / "g.pb", labels)
    for before, after in zip(old, new, strict=True):
        assert [name for name, _ in before.top] == [name for name, _ in after.top]
        np.testing.assert_allclose([s for _, s in before.top], [s for _, s in after.top], atol=1e-4)


def test_label_image_reports_a_bad_image_and_labels_the_rest(stamps_dir, tmp_path, capsys):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=8)
    retrain.retrain(config_for(tmp_path, image_dir), progress=False)
    folder = tmp_path / "new"
    shutil.copytree(stamps_dir / "fruit", folder)
    (folder / "broken.jpg").write_text("not a picture")
    capsys.readouterr()
    code = label.main(
        [
            str(folder),
            "--graph",
            str(tmp_path / "out" / "g.pb"),
            "--labels",
            str(tmp_path / "out" / "labels.txt"),
            "--json",
            "--top_k",
            "2",
        ]
    )
    output = json.loads(capsys.readouterr().out)
    assert code == 1
    errors = [item for item in output if "error" in item]
    assert [Path(item["image"]).name for item in errors] == ["broken.jpg"]
    assert len(output) == len(list((stamps_dir / "fruit").iterdir())) + 1
    assert all(len(item["top"]) == 2 for item in output if "top" in item)


def test_a_failed_retrain_leaves_the_previous_outputs_intact(tmp_path, monkeypatch):
    image_dir = noise_dataset(tmp_path / "images")
    retrain.retrain(config_for(tmp_path, image_dir), progress=False)
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def dies_half_way(model, path, final_tensor_name):
        Path(path).write_bytes(b"half a graph")
        raise KeyboardInterrupt  # as if killed while writing

    monkeypatch.setattr(export, "write_frozen_graph", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        retrain.retrain(config_for(tmp_path, image_dir, how_many_training_steps=30), progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (labelled,) = label.label_images([next(image_dir.rglob("*.jpg"))], out / "g.pb", out / "labels.txt")
    assert len(labelled.top) == 3


def test_distortions_are_cached_once_and_reused(tmp_path, capsys):
    image_dir = noise_dataset(tmp_path / "images", per_label=8)
    distort = dict(
        flip_left_right=True, random_crop=10, random_scale=10, random_brightness=10, num_distorted_variants=2
    )
    retrain.retrain(config_for(tmp_path, image_dir, **distort), progress=True)
    first = capsys.readouterr().out
    retrain.retrain(config_for(tmp_path, image_dir, **distort), progress=True)
    second = capsys.readouterr().out
    variants = sorted(p.name for p in (tmp_path / "bn").glob("*/*") if p.name.startswith("distorted-"))
    assert len(variants) == 2
    assert first.count(" computed") == 3 and "0 cached" in first
    assert second.count(" 0 computed") == 3


def test_bfloat16_precision_caches_apart_and_its_model_labels_images(stamps_dir, tmp_path, monkeypatch):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=8)
    retrain.retrain(config_for(tmp_path, image_dir, precision="float32"), progress=False)
    saved = tmp_path / "out" / "saved"
    result = retrain.retrain(
        config_for(tmp_path, image_dir, precision="bfloat16", saved_model_dir=saved), progress=False
    )
    assert result.evaluation.accuracy > 0.5
    assert len(list((tmp_path / "bn").iterdir())) == 2  # one cache folder per precision
    out, photos = tmp_path / "out", sorted((stamps_dir / "fruit").iterdir())[-3:]
    monkeypatch.setenv("TLCOURSE_HOME", str(tmp_path / "home"))  # kept conversions of this test's models only
    keras_model = keras.models.load_model(out / "g.keras")
    assert keras_model.get_layer("efficientnet_lite0_bfloat16").layers[1].compute_dtype == "bfloat16"
    answers = [keras_model(load_image(photo)[None], training=False).numpy()[0].argmax() for photo in photos]
    # the float32 copy: the same weights (the bfloat16 backbone keeps float32 ones) computed in float32
    copy = tlc.backbones.load_backbone("efficientnet_lite0").exported_classifier(keras_model.layers[-1])
    expected = [copy(load_image(photo)[None], training=False).numpy()[0] for photo in photos]
    names = label.read_labels(out / "labels.txt")
    for model in ("g.pb", "g.keras", "saved"):  # LiteRT has no bfloat16 kernels: each gets a float32 copy converted
        if tlc.hardware.default_engine()[0] == "litert":
            assert label.litert_labeller(out / model) is None, model  # nothing kept yet
        labelled = label.label_images(photos, out / model, out / "labels.txt", batch_size=2)  # a folder: converted
        for result, answer, probabilities in zip(labelled, answers, expected, strict=True):
            assert result.error is None and result.top[0][0] == names[answer], model  # the bfloat16 model's answer
            scores = dict(result.top)
            np.testing.assert_allclose([scores[name] for name in names], probabilities, atol=1e-4, err_msg=model)
        if tlc.hardware.default_engine()[0] == "litert":
            assert label.kept_conversion(out / model).is_file(), model  # the SavedModel's too
            assert label.litert_labeller(out / model) is not None, model  # next time, without TensorFlow
    with pytest.raises(retrain.SettingError, match="^precision: fine_tune_blocks fine-tunes in float32"):
        config_for(tmp_path, image_dir, precision="bfloat16", fine_tune_blocks=1)


def test_label_image_says_so_when_a_folder_holds_no_files(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert label.main([str(tmp_path / "empty")]) == 2
    assert "no files in" in capsys.readouterr().err


def test_main_without_architecture_fetches_the_classic_default_and_names_it(monkeypatch):
    asked, ran = [], []
    monkeypatch.setattr(retrain.backbones, "fetch_default_backbone", lambda *a, **k: asked.append(k) or "inception_v3")
    monkeypatch.setattr(retrain, "retrain", lambda settings, **k: ran.append(settings.architecture))
    assert retrain.main(["--image_dir=d"]) == 0
    assert asked == [{"announce": True}] and ran == ["inception_v3"]
    asked.clear(), ran.clear()
    assert retrain.main(["--image_dir=d", "--architecture=efficientnet_lite0"]) == 0
    assert asked == [] and ran == ["efficientnet_lite0"]  # a named backbone: no fetch


def test_main_reports_a_user_mistake_in_one_line(tmp_path, capsys):
    code = retrain.main([f"--image_dir={tmp_path / 'nowhere'}", "--architecture=efficientnet_lite0"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "nowhere" in err and "Traceback" not in err
