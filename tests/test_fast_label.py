"""Labelling without TensorFlow: numpy preprocessing equal to the model's, LiteRT for .tflite and kept conversions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.images_factory import labelled_folder
from tests.test_tflite import LITE0, random_images, small_model
from tlcourse import backbones, label, tflite
from tlcourse.images import load_image
from tlcourse.preprocessing import FITS, Preprocessing, numpy_preprocess

NO_TENSORFLOW = """
import json, sys
from tlcourse import label
labels = None if sys.argv[2] == "-" else sys.argv[2]  # "-": those packed in the .tflite file
results = label.label_images(sys.argv[3:], sys.argv[1], labels, top_k=3)
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow was imported"
print(json.dumps([result.to_json() for result in results]))
"""


def label_without_tensorflow(graph, labels, images, home) -> list[dict]:
    """``label_images`` in a fresh process that fails if anything imports TensorFlow or Keras."""
    env = {**os.environ, "TLCOURSE_HOME": str(home)}
    command = [sys.executable, "-c", NO_TENSORFLOW, str(graph), str(labels), *map(str, images)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def scores(result: dict, names: list[str]) -> list[float]:
    top = {item["label"]: item["score"] for item in result["top"]}
    return [top.get(name, 0.0) for name in names]


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("name", list(backbones.REGISTRY))
def test_numpy_preprocessing_is_the_models_own(name, fit):
    """Shrunk (antialiased), enlarged (bicubic table, bilinear) and kept-size squares, cropped or padded,
    against TensorFlow's."""
    preprocessing = backbones.REGISTRY[name].preprocessing.fitted(fit)
    size = preprocessing.size
    sides = [(size * 3, size * 2 + 7), (size // 3, size // 2), (size, size + 40), (37, 900)]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), np.uint8) for height, width in sides] + random_images(6)
    differing = 0
    for image in images:
        expected = backbones.preprocess_images(image[None], preprocessing).numpy()[0]
        np.testing.assert_allclose(numpy_preprocess(image, preprocessing), expected, atol=2e-5, rtol=0)
        fixed = np.asarray(tflite.resize_for_model(image, preprocessing)).astype(int)
        course = np.round(np.clip(expected * preprocessing.scale + preprocessing.offset, 0, 255))
        assert np.abs(fixed - course).max() <= 1  # only a value at x.5, rounded the other way
        differing += int((fixed != course).sum())
    assert differing <= 1e-4 * sum(size * size * 3 for _ in images)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    model = small_model()
    model.save(folder / "model.keras")
    tflite.write_tflite(model, folder / "model.tflite", labels=["a", "b", "c"])
    (folder / "labels.txt").write_text("a\nb\nc\n")
    photos = labelled_folder(folder / "photos", ("a", "b"), per_label=3)
    return folder, model, sorted(p for p in photos.rglob("*") if p.is_file())


def test_a_tflite_model_is_labelled_without_tensorflow_as_tensorflow_would(models, tmp_path):
    folder, model, photos = models
    labelled = label_without_tensorflow(folder / "model.tflite", "-", photos, tmp_path)  # its own labels
    classifier = tflite.TFLiteClassifier(folder / "model.tflite")
    for photo, result in zip(photos, labelled, strict=True):
        image = load_image(photo)
        course = backbones.preprocess_images(image[None], LITE0).numpy() * LITE0.scale + LITE0.offset
        expected = classifier(np.round(np.clip(course, 0, 255)).astype(np.uint8))[0]  # TensorFlow's resize
        np.testing.assert_allclose(scores(result, ["a", "b", "c"]), expected, atol=2e-3)
        keras_top = tflite.keras_on_fixed_input(model)(tflite.resize_for_model(image, LITE0)[None])[0].argmax()
        assert result["top"][0]["label"] == "abc"[keras_top]


def test_a_kept_conversion_labels_one_image_without_tensorflow(models, tmp_path, monkeypatch):
    folder, _, photos = models
    monkeypatch.setenv("TLCOURSE_HOME", str(tmp_path))
    graph, labels = folder / "model.keras", folder / "labels.txt"
    expected = label.label_images(photos, graph, labels, top_k=3, batch_size=2)  # a folder: converted and kept
    kept = label.kept_conversion(graph)
    about = json.loads(kept.with_suffix(".json").read_text())
    assert kept.is_file() and about == {"preprocessing": vars(LITE0), "final_tensor_name": "final_result"}
    assert label.litert_labeller(graph) is not None and label.litert_labeller(graph, "another_output") is None
    labelled = label_without_tensorflow(graph, labels, photos[:1], tmp_path)
    reference = label.load_classifier(graph)(load_image(photos[0])[None])[0]  # the .keras model, by TensorFlow
    np.testing.assert_allclose(scores(labelled[0], ["a", "b", "c"]), reference, atol=1e-4)
    np.testing.assert_allclose(scores(labelled[0], ["a", "b", "c"]), scores(expected[0].to_json(), "abc"), atol=1e-5)

    kept.with_suffix(".json").write_text("{damaged")  # then TensorFlow labels it, as before
    assert label.litert_labeller(graph) is None


def test_the_kept_preprocessing_is_the_one_that_reproduces_the_models_not_the_first_of_its_size(models, monkeypatch):
    folder, _, _ = models
    classifier = label.load_classifier(folder / "model.keras")
    other = Preprocessing(LITE0.size, 0.5, "bilinear", 0.0, 255.0)  # another backbone's, the same input size
    monkeypatch.setattr(label, "PREPROCESSINGS", {"other": other, "efficientnet_lite0": LITE0})
    assert label._checked_preprocessing(classifier, LITE0.size) == LITE0
    monkeypatch.setattr(label, "PREPROCESSINGS", {"other": other})
    assert label._checked_preprocessing(classifier, LITE0.size) is None  # then TensorFlow preprocesses


def test_a_padded_models_kept_preprocessing_is_the_padded_one(tmp_path):
    small_model(fit="pad").save(tmp_path / "padded.keras")
    classifier = label.load_classifier(tmp_path / "padded.keras")
    assert label._checked_preprocessing(classifier, LITE0.size) == LITE0.fitted("pad")
