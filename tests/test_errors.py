"""One family of errors, one handler: user mistakes end in `error: ...`, never in a traceback."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tlcourse import label
from tlcourse.data import ImageFolderError
from tlcourse.datasets import DatasetError
from tlcourse.download import DownloadError
from tlcourse.search import SearchIndexError
from tlcourse.errors import ModelFileError, SettingError, TLCourseError, UsageError, command_line
from tlcourse.images import ImageError
from tlcourse.safe_graph import UnsafeModelError
from tlcourse.tflite import TFLiteExportError
from tlcourse.tflite_metadata import MetadataError
from tlcourse.torch_weights import UnsafeWeightsError

FAMILY = [
    ImageError,
    UnsafeWeightsError,
    DownloadError,
    DatasetError,
    ModelFileError,
    ImageFolderError,
    UsageError,
    SettingError,
    TFLiteExportError,
    MetadataError,
    UnsafeModelError,
    SearchIndexError,
]


@pytest.mark.parametrize("error", FAMILY)
def test_the_courses_errors_are_one_family_and_keep_their_builtin_base(error):
    assert issubclass(error, TLCourseError)
    assert issubclass(error, (ValueError, RuntimeError))  # existing `except ValueError` code keeps working


def test_the_handler_prints_one_line_for_a_user_mistake_and_lets_bugs_through(capsys):
    def failing(error):
        def main(argv=None):
            raise error

        return command_line(main)

    assert failing(DownloadError("could not download x; put the file there yourself"))() == 1
    assert capsys.readouterr().err == "error: could not download x; put the file there yourself\n"
    assert failing(FileNotFoundError("labels.txt: not found"))() == 1
    assert capsys.readouterr().err == "error: labels.txt: not found\n"
    assert failing(SettingError("{a} and {b} cannot go together"))() == 2  # the command line itself: as argparse
    assert capsys.readouterr().err == "error: a and b cannot go together\n"
    assert failing(KeyboardInterrupt())() == 130
    assert command_line(lambda argv=None: None)() == 0
    for bug in (ZeroDivisionError("division by zero"), ValueError("operands could not be broadcast")):
        with pytest.raises(type(bug)):  # a bug in the course is not the user's mistake: full traceback
            failing(bug)()


@pytest.fixture(scope="module")
def damaged_models(tmp_path_factory):
    """A truncated `.keras` file, a SavedModel folder with a truncated `saved_model.pb`, a `.pb` of noise."""
    folder = tmp_path_factory.mktemp("damaged")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save(folder / "model.keras")
    whole = (folder / "model.keras").read_bytes()
    (folder / "model.keras").write_bytes(whole[: len(whole) // 2])

    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.f = tf.function(lambda x: x * module.scale, input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    tf.saved_model.save(module, str(folder / "saved"), signatures=module.f)
    graph = folder / "saved" / "saved_model.pb"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 3])

    (folder / "graph.pb").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "labels.txt").write_text("a\nb\nc\n")
    return folder


@pytest.mark.parametrize("name", ["model.keras", "saved", "graph.pb"])
def test_a_damaged_model_file_is_a_clear_error_naming_it(damaged_models, name, photo, capsys):
    path = damaged_models / name
    with pytest.raises(ModelFileError, match=str(path)):
        label.load_classifier(path)
    code = label.main([str(photo("chelsea.png")), f"--graph={path}", f"--labels={damaged_models / 'labels.txt'}"])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and str(path) in err and "Traceback" not in err


def test_label_image_on_a_damaged_savedmodel_from_the_shell(damaged_models, photo):
    path = damaged_models / "saved"
    run = subprocess.run(
        [sys.executable, "-m", "tlcourse.label", str(photo("chelsea.png")), f"--graph={path}",
         f"--labels={damaged_models / 'labels.txt'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert f"error: {path}: this SavedModel folder cannot be read" in run.stderr


def test_a_labels_file_that_does_not_match_the_model_is_named(tmp_path, photo, capsys):
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, "softmax")]
    )
    model.save(tmp_path / "model.keras")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    graph, labels = tmp_path / "model.keras", tmp_path / "labels.txt"
    code = label.main([str(photo("chelsea.png")), f"--graph={graph}", f"--labels={labels}"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err == (
        f"error: {graph}: the model has 3 outputs but {labels} lists 2 labels; "
        "pass the labels file retrain wrote with this model (--labels)\n"
    )


def test_every_command_line_goes_through_the_one_handler():
    from tlcourse import backbones, compare, datasets, demo, retrain, search
    from tlcourse.exercises import __main__ as exercises_main

    for module in (backbones, compare, datasets, demo, label, retrain, search, exercises_main):
        main = getattr(module, "main", None) or module._main
        assert main.__wrapped__.__module__ == module.__name__  # functools.wraps by errors.command_line
