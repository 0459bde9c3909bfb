"""The table of model formats: retrain writes with it, label_image reads with it."""

import contextlib
import dataclasses
import io
import json

import numpy as np
import pytest

from tests.test_tflite import LITE0, random_images, small_model
from tlcourse import formats, label, model_card, retrain, tflite
from tlcourse.images import load_image


def test_a_model_is_read_by_its_suffix_a_folder_as_a_savedmodel_any_other_file_as_a_frozen_graph(tmp_path):
    (tmp_path / "saved").mkdir()
    assert formats.format_of(tmp_path / "saved") is formats.SAVED_MODEL
    assert formats.format_of(tmp_path / "m.keras") is formats.KERAS
    assert formats.format_of(tmp_path / "m.tflite") is formats.TFLITE
    for name in ("m.pb", "retrained_graph", "output_graph.graph"):  # the tutorial's --output_graph had any name
        assert formats.format_of(tmp_path / name) is formats.GRAPH


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every format written by ``retrain.write_outputs`` for a small model (the model card left out), and
    what it printed."""
    folder = tmp_path_factory.mktemp("written")
    config = retrain.RetrainConfig(
        image_dir=folder,
        output_graph=folder / "g.pb",
        output_labels=folder / "labels.txt",
        saved_model_dir=folder / "saved",
        output_tflite=folder / "g.tflite",
    )
    model = small_model()
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(model_card, "to_markdown", lambda card, graph_name: "a card\n")
        paths = retrain.write_outputs(config, model, ["a", "b", "c"], {"model_card": {}})
    return paths, model, printed.getvalue()


def test_every_format_retrain_writes_is_labelled_alike(written, photo):
    paths, model, _ = written
    assert set(formats.FORMATS) <= set(paths)  # every row written when asked for
    card = json.loads(paths["report"].read_text())["model_card"]
    assert list(card["files"]) == ["g.pb", "g.keras", "labels.txt", "saved", "g.tflite"]
    image = load_image(photo("chelsea.png"))
    fixed = tflite.resize_for_model(image, LITE0)[None]
    expected = tflite.keras_on_fixed_input(model)(fixed)[0]
    for name in formats.FORMATS:
        classifier = label.load_classifier(paths[name])
        answer = classifier(fixed if name == "tflite" else image[None])[0]  # others resize inside the model
        np.testing.assert_allclose(answer, expected, atol=2e-3, err_msg=name)


def test_the_writers_are_the_tables(written, tmp_path, monkeypatch, capsys):
    """What retrain writes for a format is what its row's writer writes, with the run's settings, and
    what it says it wrote is its row's description."""
    calls = []

    def write(model, path, options):
        calls.append(options)
        path.write_bytes(b"written by the table's row")

    def describe(model, path, options):
        return f"{path} (described by the table's row, {options.quantization})"

    row = dataclasses.replace(formats.TFLITE, write=write, describe=describe)
    monkeypatch.setitem(formats.FORMATS, "tflite", row)
    monkeypatch.setattr(model_card, "to_markdown", lambda card, graph_name: "a card\n")
    config = retrain.RetrainConfig(
        image_dir=tmp_path,
        output_graph=tmp_path / "g.pb",
        output_labels=tmp_path / "l.txt",
        output_tflite=tmp_path / "p.tflite",
    )
    retrain.write_outputs(config, written[1], ["a", "b", "c"], {"model_card": {}})
    assert (tmp_path / "p.tflite").read_bytes() == b"written by the table's row"
    assert f"wrote {tmp_path / 'p.tflite'} (described by the table's row, float32)\n" in capsys.readouterr().out
    assert [(options.class_names, options.quantization, options.final_tensor_name) for options in calls] == [
        (["a", "b", "c"], "float32", "final_result")
    ]


def test_each_file_written_is_said_once_each_model_by_its_row(written, tmp_path):
    paths, model, printed = written
    size = LITE0.size
    assert printed.splitlines() == [
        f"wrote {paths['graph']} (frozen graph: input 'image:0' uint8 [batch, height, width, 3], "
        "output 'final_result:0')",
        f"wrote {paths['keras']} (Keras model: input uint8 [batch, height, width, 3], output the probabilities)",
        f"wrote {paths['saved_model']} (SavedModel: signature 'serving_default', "
        "input 'image' uint8 [batch, height, width, 3], output 'final_result')",
        f"wrote {paths['tflite']} (TFLite float32, uint8 in: input uint8 RGB [1, {size}, {size}, 3], resized outside)",
        f"wrote {paths['labels']}, {paths['report']}, {paths['model_card']}",
    ]
    int8 = formats.TFLITE.describe(model, tmp_path / "q.tflite", formats.WriteOptions(quantization="int8"))
    assert int8.startswith(f"{tmp_path / 'q.tflite'} (TFLite full-integer int8, uint8 in and out: ")


def test_a_new_format_is_one_row_for_the_labeller(tmp_path, monkeypatch):
    """A row with a suffix and a loader, and label_image reads files of it: no suffix check anywhere else."""
    scores = np.array([[0.1, 0.7, 0.2]], np.float32)

    def load(path, final_tensor_name):
        assert path.read_text() == "a model"
        return formats.Classifier(lambda images: np.repeat(scores, len(images), axis=0))

    toy = formats.ModelFormat("toy", ".toy", write=None, describe=None, load=load)
    monkeypatch.setitem(formats.FORMATS, "toy", toy)
    (tmp_path / "m.toy").write_text("a model")
    (tmp_path / "labels.txt").write_text("daisy\nrose\ntulip\n")
    (tmp_path / "photo.png").write_bytes(_png(random_images(1)[0]))
    (labelled,) = label.label_images([tmp_path / "photo.png"], tmp_path / "m.toy", tmp_path / "labels.txt", top_k=1)
    assert labelled.top == [("rose", pytest.approx(0.7))]


def _png(image) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
