"""TFLite export (float and full-integer int8), its fixed-size resize, and labelling with .tflite files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.images_factory import labelled_folder
from tlcourse import backbones, label, retrain, tflite
from tlcourse.errors import ModelFileError
from tlcourse.images import load_image

REPO = Path(__file__).resolve().parents[1]
LITE0 = backbones.REGISTRY["efficientnet_lite0"].preprocessing


def small_model(num_classes=3, seed=0, fit="crop"):
    """The course's preprocessing (``fit``: cropped or padded) in front of a small random network: converts
    in seconds."""
    keras.utils.set_random_seed(seed)
    classifier = keras.Sequential(
        [
            keras.Input((LITE0.size, LITE0.size, 3)),
            keras.layers.Conv2D(8, 3, strides=4, activation="relu6"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(num_classes, activation="softmax", name="final_result"),
        ]
    )
    spec = backbones.BackboneSpec("small", num_classes, LITE0.fitted(fit), "a small random network")
    return backbones.Backbone(spec, classifier, "random").exported_classifier(classifier, whole_network=True)


def random_images(count, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (int(rng.integers(60, 400)), int(rng.integers(60, 400)), 3), np.uint8)
        for _ in range(count)
    ]


def test_the_resize_is_the_courses_preprocessing_to_half_a_pixel_level():
    for image in random_images(6):
        fixed = np.asarray(tflite.resize_for_model(image, LITE0))
        assert fixed.shape == (LITE0.size, LITE0.size, 3) and fixed.dtype == np.uint8
        course = backbones.preprocess_images(image[None], LITE0).numpy()[0] * LITE0.scale + LITE0.offset
        assert np.abs(fixed - course).max() <= 0.5 + 1e-3
    batch = np.stack(random_images(2, seed=1)[:1] * 2)
    assert np.asarray(tflite.resize_for_model(batch, LITE0)).shape == (2, LITE0.size, LITE0.size, 3)


def test_float_export_agrees_with_keras_and_takes_uint8(tmp_path):
    model = small_model()
    path = tmp_path / "model.tflite"
    tflite.write_tflite(model, path)
    classifier = tflite.TFLiteClassifier(path)
    assert (classifier.input_size, classifier.input_dtype, classifier.quantization) == (224, np.uint8, "float32")
    fixed = np.stack([np.asarray(tflite.resize_for_model(image, LITE0)) for image in random_images(8)])
    expected = tflite.keras_on_fixed_input(model)(fixed)  # the Keras model on the same fixed-size images
    np.testing.assert_allclose(classifier(fixed), expected, atol=1e-4)
    np.testing.assert_allclose(classifier(fixed[:1]), expected[:1], atol=1e-4)  # batch size changes both ways


def test_int8_export_is_full_integer_and_labels_a_folder(tmp_path):
    model = small_model()
    images = np.stack([np.asarray(tflite.resize_for_model(image, LITE0)) for image in random_images(12)])
    representative = tflite.representative_dataset(images, [0, 1, 2] * 4, 12)
    path = tmp_path / "model_int8.tflite"
    tflite.write_tflite(model, path, "int8", representative)
    classifier = tflite.TFLiteClassifier(path)
    assert (classifier.input_dtype, classifier.output_dtype, classifier.quantization) == (np.uint8, np.uint8, "int8")
    details = classifier._interpreter.get_tensor_details()
    float_tensors = [d["name"] for d in details if d["dtype"] == np.float32]
    assert not float_tensors, f"a full-integer model holds no float tensors, found {float_tensors[:5]}"
    probabilities = classifier(images[:4])
    assert probabilities.shape == (4, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=0.05)

    folder = labelled_folder(tmp_path / "photos", ("a", "b"), per_label=2)
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    results = label.label_images([folder], path, tmp_path / "labels.txt", top_k=2)
    assert len(results) == 4 and all(not r.error and len(r.top) == 2 for r in results)


def test_int8_without_representative_images_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(tflite.TFLiteExportError, match="int8 quantization needs representative images"):
        tflite.convert(small_model(), "int8")
    with pytest.raises(tflite.TFLiteExportError, match="quantization must be one of"):
        tflite.convert(small_model(), "int4")
    with pytest.raises(retrain.SettingError, match="^tflite_quantization=int8 needs output_tflite=PATH"):
        retrain.RetrainConfig(image_dir="d", tflite_quantization="int8")
    refused = subprocess.run(
        [sys.executable, "-m", "tlcourse.retrain", "--image_dir=d", "--tflite_quantization=int8"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "--tflite_quantization=int8 needs --output_tflite" in refused.stderr


def test_a_file_that_is_not_tflite_is_refused(tmp_path):
    (tmp_path / "fake.tflite").write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        tflite.TFLiteClassifier(tmp_path / "fake.tflite")


def test_the_representative_dataset_takes_every_label_in_turn():
    images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    labels = [0] * 6 + [1] * 3 + [2]
    items = list(tflite.representative_dataset(images, labels, 5)())
    assert len(items) == 5 and all(len(item) == 1 and item[0].shape == (1, 2, 2, 3) for item in items)
    assert all(item[0].dtype == np.float32 for item in items)
    chosen = [int(np.flatnonzero((images == item[0][0]).all(axis=(1, 2, 3)))[0]) for item in items]
    assert sorted(labels[i] for i in chosen) == [0, 0, 1, 1, 2]


@pytest.mark.slow
def test_retrain_writes_tflite_and_label_image_agrees_with_keras(stamps_dir, tmp_path):
    """The whole path to a phone: retrain.py --output_tflite, then label_image.py on a folder, for float and int8."""
    common = [
        f"--image_dir={stamps_dir}",
        f"--bottleneck_dir={REPO / 'runs' / 'bottlenecks'}",
        "--how_many_training_steps=300",
        "--summaries_dir=",
        "--architecture=efficientnet_lite0",
        f"--output_graph={tmp_path / 'graph.pb'}",
        f"--output_labels={tmp_path / 'labels.txt'}",
    ]
    int8_path = tmp_path / "model_int8.tflite"
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlcourse.retrain",
            *common,
            f"--output_tflite={int8_path}",
            "--tflite_quantization=int8",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "full-integer int8" in trained.stdout
    keras_model = keras.models.load_model(tmp_path / "graph.keras")
    float_path = tmp_path / "model.tflite"
    tflite.write_tflite(keras_model, float_path)
    assert int8_path.stat().st_size < float_path.stat().st_size / 2.5

    folder = stamps_dir / "fruit"
    paths = sorted(folder.iterdir())
    fixed = np.stack([np.asarray(tflite.resize_for_model(load_image(p), LITE0)) for p in paths])
    keras_top = tflite.keras_on_fixed_input(keras_model)(fixed).argmax(axis=1)  # Keras on the same fixed input
    class_names = (tmp_path / "labels.txt").read_text().split()
    for path, floor in [(float_path, 1.0), (int8_path, 0.9)]:
        labelled = subprocess.run(
            [
                sys.executable,
                "-m",
                "tlcourse.label",
                str(folder),
                f"--graph={path}",
                f"--labels={tmp_path / 'labels.txt'}",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert labelled.returncode == 0, labelled.stderr[-3000:]
        results = {Path(item["image"]).name: item for item in json.loads(labelled.stdout)}
        assert len(results) == len(paths) and all(len(item["top"]) == 5 for item in results.values())
        tops = [results[p.name]["top"][0]["label"] for p in paths]
        agreement = np.mean([top == class_names[k] for top, k in zip(tops, keras_top, strict=True)])
        assert agreement >= floor, (path.name, agreement)


def test_quiet_hides_native_output_and_restores_it(capfd):
    from tlcourse.quiet import quiet

    with quiet():
        os.write(2, b"native noise\n")
        os.write(1, b"more noise\n")
    os.write(2, b"after\n")
    out, err = capfd.readouterr()
    assert "noise" not in out + err and "after" in err
    with pytest.raises(ValueError, match="still raised"), quiet():
        raise ValueError("still raised")
    os.write(1, b"restored\n")
    assert "restored" in capfd.readouterr().out


def test_tflite_metadata_parses_with_the_schema_packs_the_labels_and_changes_no_answer(tmp_path):
    """Labels, input size, pixel format and preprocessing inside the .tflite, as metadata_schema.fbs defines them."""
    import io
    import zipfile

    from tlcourse import tflite_metadata as metadata

    model, names = small_model(), ["daisy", "rose", "tulip"]
    tflite.write_tflite(model, tmp_path / "model.tflite", labels=names)
    content = (tmp_path / "model.tflite").read_bytes()
    buffer = metadata.metadata_of(content)
    assert buffer[4:8] == b"M001"  # the schema's file identifier
    root = metadata.metadata_root(buffer)
    assert root.string(metadata.MODEL["min_parser_version"]) == "1.0.0"
    image = root.children(metadata.MODEL["subgraph_metadata"])[0].children(metadata.SUBGRAPH["input_tensor_metadata"])
    units = image[0].children(metadata.TENSOR["process_units"])
    normalization = units[0].child(metadata.PROCESS_UNIT["options"])
    assert (normalization.floats(metadata.NORMALIZATION["mean"]), normalization.floats(1)) == ([0.0], [1.0])
    with zipfile.ZipFile(io.BytesIO(content)) as files:  # the associated files, appended as a zip
        assert files.read("labels.txt").decode() == "daisy\nrose\ntulip\n"
    classifier = tflite.TFLiteClassifier(tmp_path / "model.tflite")
    assert (classifier.labels, classifier.preprocessing) == (names, LITE0)

    (tmp_path / "plain.tflite").write_bytes(tflite.convert(model))  # no metadata: its size alone decides nothing
    with pytest.raises(ModelFileError, match=r"plain\.tflite: this \.tflite file has no TFLite metadata.*retrain\.py"):
        tflite.TFLiteClassifier(tmp_path / "plain.tflite")
    plain = tflite.TFLiteClassifier(tmp_path / "plain.tflite", preprocessing=LITE0)  # unless it is passed
    assert plain.labels is None and plain.preprocessing == LITE0
    fixed = np.stack([tflite.resize_for_model(image, LITE0) for image in random_images(4)])
    np.testing.assert_array_equal(classifier(fixed), plain(fixed))

    other = backbones.Preprocessing(224, 0.5, "bilinear", 0.0, 255.0)  # the metadata, not the size, decides
    (tmp_path / "other.tflite").write_bytes(metadata.with_metadata(tflite.convert(model), None, other, "float32"))
    assert tflite.TFLiteClassifier(tmp_path / "other.tflite").preprocessing == other
    assert tflite.TFLiteClassifier(tmp_path / "other.tflite").labels is None


def test_label_image_reads_the_labels_from_the_tflite_model(tmp_path, capsys):
    tflite.write_tflite(small_model(), tmp_path / "model.tflite", labels=["daisy", "rose", "tulip"])
    folder = labelled_folder(tmp_path / "photos", ("a",), per_label=2)
    assert label.main([str(folder), f"--graph={tmp_path / 'model.tflite'}", "--json", "--top_k=3"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2 and all({t["label"] for t in r["top"]} == {"daisy", "rose", "tulip"} for r in results)
    tflite.write_tflite(small_model(), tmp_path / "unlabelled.tflite")
    assert label.main([str(folder), f"--graph={tmp_path / 'unlabelled.tflite'}"]) != 0  # no labels anywhere: said so
    assert "retrained_labels.txt: labels file not found; pass --labels" in capsys.readouterr().err
    (tmp_path / "plain.tflite").write_bytes(tflite.convert(small_model()))  # no preprocessing either: refused, named
    (tmp_path / "labels.txt").write_text("daisy\nrose\ntulip\n")
    assert label.main([str(folder), f"--graph={tmp_path / 'plain.tflite'}", f"--labels={tmp_path / 'labels.txt'}"]) == 1
    assert f"{tmp_path / 'plain.tflite'}: this .tflite file has no TFLite metadata" in capsys.readouterr().err


@pytest.mark.skipif(
    not (os.environ.get("TLCOURSE_METADATA_SCHEMA") and shutil.which("flatc")),
    reason="another reader of the schema: set TLCOURSE_METADATA_SCHEMA to metadata_schema.fbs and put flatc on PATH",
)
def test_flatc_reads_the_metadata_with_the_official_schema(tmp_path):
    from tlcourse import tflite_metadata as metadata

    (tmp_path / "m.bin").write_bytes(metadata.metadata_buffer(LITE0, 3, "int8", "classifier"))
    command = ["flatc", "--json", "--strict-json", "--raw-binary", "-o", str(tmp_path)]
    subprocess.run([*command, os.environ["TLCOURSE_METADATA_SCHEMA"], "--", str(tmp_path / "m.bin")], check=True)
    parsed = json.loads((tmp_path / "m.json").read_text())
    tensors = parsed["subgraph_metadata"][0]
    image, output = tensors["input_tensor_metadata"][0], tensors["output_tensor_metadata"][0]
    size = {"width": 224, "height": 224}
    assert image["content"]["content_properties"] == {"color_space": "RGB", "default_size": size}
    assert image["process_units"][0]["options"] == {"mean": [0.0], "std": [1.0]}
    labels_file = output["associated_files"][0]
    assert (labels_file["name"], labels_file["type"]) == ("labels.txt", "TENSOR_AXIS_LABELS")
    assert "zero_point" in output["description"]  # how to read an int8 model's uint8 probabilities
