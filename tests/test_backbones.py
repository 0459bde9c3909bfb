import hashlib
import os
import pickle
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import tlcourse as tlc
from tlcourse import backbones, litert, torch_weights
from tlcourse.download import DownloadError
from tlcourse.images import load_image
from tlcourse.preprocessing import centre_square

CAT_CLASSES = set(range(281, 286))
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_lite_models_recognise_real_photos(name, photo):
    backbone = backbones.load_backbone(name)
    cat = {index for index, _, _ in backbone.imagenet_top_k(load_image(photo("chelsea.png")), 5)}
    coffee = {index for index, _, _ in backbone.imagenet_top_k(load_image(photo("coffee.png")), 5)}
    assert cat & CAT_CLASSES, cat
    assert coffee & COFFEE_CLASSES, coffee


def test_bottleneck_shape_and_determinism(lite0, photo):
    image = load_image(photo("chelsea.png"))
    first, second = lite0.bottlenecks(image), lite0.bottlenecks(image)
    assert first.shape == (1280,)
    np.testing.assert_array_equal(first, second)
    assert np.abs(first).sum() > 0


def test_raw_image_model_matches_pipeline_preprocessing(lite0, photo):
    """The exported classifier (preprocessing inside) and the cache path see the image identically."""
    image = load_image(photo("coffee.png"))
    inside = lite0.exported_classifier(keras.layers.Identity())(image[None]).numpy()[0]
    np.testing.assert_allclose(inside, lite0.bottlenecks(image), atol=1e-4)


def test_the_two_engines_compute_the_same_bottlenecks(lite0, photo):
    """LiteRT (the CPU default) and TensorFlow: the same function to float32 rounding, so one cache."""
    assert lite0.engine == tlc.hardware.default_engine()[0]
    other = "tensorflow" if lite0.engine == "litert" else "litert"
    twin = backbones.load_backbone("efficientnet_lite0", engine=other)
    images = [load_image(photo(name)) for name in ("chelsea.png", "coffee.png")]  # two sizes: a list
    ours, theirs = lite0.bottlenecks(images), twin.bottlenecks(images)
    assert ours.shape == (2, 1280)
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()
    np.testing.assert_allclose(ours[1], lite0.bottlenecks(images[1]), rtol=0, atol=1e-6)  # alone or in a batch
    assert twin.fingerprint == lite0.fingerprint
    assert lite0.bottlenecks([]).shape == (0, 1280)


def test_engine_choice_follows_the_hardware_and_the_precision():
    assert tlc.hardware.default_engine("float32", gpu_names=[])[0] == "litert"
    assert tlc.hardware.default_engine("bfloat16", gpu_names=[])[0] == "tensorflow"
    assert tlc.hardware.default_engine("float32", gpu_names=["GPU:0"])[0] == "tensorflow"
    with pytest.raises(ValueError, match="float32"):
        backbones.load_backbone("efficientnet_lite0", precision="bfloat16", engine="litert")
    with pytest.raises(ValueError, match="engine"):
        backbones.load_backbone("efficientnet_lite0", engine="onnx")


def test_the_litert_conversion_is_kept_and_a_damaged_copy_is_made_again(tmp_path, photo):
    image = load_image(photo("chelsea.png"))
    reference = backbones.load_backbone("efficientnet_lite0", tmp_path, engine="tensorflow").bottlenecks(image)
    first = backbones.load_backbone("efficientnet_lite0", tmp_path, engine="litert").bottlenecks(image)
    (kept,) = (tmp_path / "efficientnet_lite0").glob("*.litert")
    size = kept.stat().st_size
    kept.write_bytes(kept.read_bytes()[: size // 2])  # damaged
    again = backbones.load_backbone("efficientnet_lite0", tmp_path, engine="litert").bottlenecks(image)
    np.testing.assert_allclose(first, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    np.testing.assert_array_equal(again, first)
    assert kept.stat().st_size == size  # made again whole


def test_converted_weights_are_cached_and_a_damaged_copy_is_redone(tmp_path, photo):
    first = backbones.load_backbone("efficientnet_lite0", tmp_path)
    (cached,) = (tmp_path / "efficientnet_lite0").glob("*.weights.h5")
    cached.write_bytes(b"damaged")
    second = backbones.load_backbone("efficientnet_lite0", tmp_path)
    image = load_image(photo("chelsea.png"))
    np.testing.assert_allclose(first.bottlenecks(image), second.bottlenecks(image), atol=1e-5)
    assert cached.stat().st_size > 1_000_000
    assert first.fingerprint == second.fingerprint


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_loader_refuses_a_pickle_that_names_another_global(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tampered = tmp_path / "tampered.pth"
    parts = [torch_weights.MAGIC_NUMBER, torch_weights.PROTOCOL_VERSION, {"little_endian": True}, _RunsCode()]
    tampered.write_bytes(b"".join(pickle.dumps(part, protocol=2) for part in parts))
    with pytest.raises(torch_weights.UnsafeWeightsError, match="system"):
        torch_weights.load_state_dict(tampered)
    assert not (tmp_path / "pwned.txt").exists()


def test_loader_refuses_a_tampered_real_weights_file(tmp_path):
    real = tlc.backbones.WEIGHT_PACKAGES["efficientnet_lite0"]
    module = __import__(real[0])
    data = open(getattr(module, real[1]).get_model_file_path(), "rb").read()
    # Swap the allowed collections.OrderedDict global for builtins.eval (same length keeps offsets).
    assert b"collections\nOrderedDict" in data
    tampered = tmp_path / "lite0.pth"
    tampered.write_bytes(data.replace(b"collections\nOrderedDict", b"builtins\neval\n\n\n\n\n\n\n\n\n\n\n\n\n\n", 1))
    with pytest.raises(torch_weights.UnsafeWeightsError, match="builtins.eval"):
        torch_weights.load_state_dict(tampered)


@pytest.fixture(scope="module")
def inception_weights_file(tmp_path_factory):
    """A legacy-format notop weights file for Inception-v3, random weights (this is about the download path)."""
    model = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(299, 299, 3), pooling="avg")
    path = tmp_path_factory.mktemp("weights") / backbones.INCEPTION_FILES["notop"][0]
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    return path


@pytest.mark.slow
def test_inception_v3_downloads_checks_hash_and_loads(inception_weights_file, http_server, tmp_path, photo):
    served, url = http_server
    (served / inception_weights_file.name).write_bytes(inception_weights_file.read_bytes())
    digest = hashlib.sha256(inception_weights_file.read_bytes()).hexdigest()
    model_dir = tmp_path / "inception"
    options = dict(base_url=url, expected_hash=digest)
    assert backbones.default_backbone_name(model_dir) == "efficientnet_lite0"  # asking: not there yet
    assert backbones.fetch_default_backbone(model_dir, **options) == "inception_v3"  # the explicit fetch
    assert backbones.default_backbone_name(model_dir) == "inception_v3"  # now usable, offline
    backbone = backbones.load_backbone("inception_v3", model_dir, **options)
    image = load_image(photo("chelsea.png"))
    vector = backbone.bottlenecks(image)
    assert vector.shape == (2048,) and backbone.bottleneck_size == 2048
    np.testing.assert_array_equal(vector, backbone.bottlenecks(image))
    expected = {inception_weights_file.name}
    if backbone.engine == "litert":  # and its conversion, kept for the next run
        expected.add(f"inception_v3/{backbone.fingerprint}-v{litert.LITERT_VERSION}.litert")
    assert {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()} == expected


def test_inception_v3_wrong_hash_leaves_model_dir_as_it_was(inception_weights_file, http_server, tmp_path):
    served, url = http_server
    (served / inception_weights_file.name).write_bytes(inception_weights_file.read_bytes())
    model_dir = tmp_path / "inception"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("mine")
    with pytest.raises(DownloadError, match="expected"):
        backbones.load_backbone("inception_v3", model_dir, base_url=url, expected_hash="0" * 64)
    assert sorted(p.name for p in model_dir.iterdir()) == ["notes.txt"]


def test_fetching_the_default_falls_back_to_the_embedded_backbone_when_offline(tmp_path, http_server, capsys):
    _, url = http_server  # serves an empty folder: the weights are not there
    model_dir = tmp_path / "models"
    assert backbones.fetch_default_backbone(model_dir, announce=True, base_url=url) == "efficientnet_lite0"
    said = capsys.readouterr().out
    assert "fetching Inception-v3's weights" in said and "using the embedded efficientnet_lite0" in said
    assert not model_dir.exists() or list(model_dir.iterdir()) == []


def test_asking_for_the_default_never_touches_the_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("default_backbone_name must not open a connection")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    model_dir = tmp_path / "models"
    assert backbones.default_backbone_name(model_dir) == "efficientnet_lite0"
    assert not model_dir.exists()  # nothing written either
    model_dir.mkdir()
    backbones.inception_weights_path(model_dir).write_bytes(b"weights fetched earlier")
    assert backbones.default_backbone_name(model_dir) == "inception_v3"
    assert backbones.fetch_default_backbone(model_dir, announce=True) == "inception_v3"  # present: no fetch either


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        backbones.load_backbone("resnet9000")


def test_command_line_prints_imagenet_top5(photo):
    result = subprocess.run(
        [sys.executable, "-m", "tlcourse.backbones", str(photo("chelsea.png")), "--architecture", "efficientnet_lite0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()[1:]]
    assert len(lines) == 5
    assert {int(line[0]) for line in lines} & CAT_CLASSES


def test_bfloat16_path_is_close_to_float32_and_cached_apart(lite0, photo):
    fast = lite0.to_bfloat16()
    image = load_image(photo("chelsea.png"))
    exact, approximate = lite0.bottlenecks(image), fast.bottlenecks(image)
    assert approximate.dtype == np.float32 and approximate.shape == exact.shape
    assert np.linalg.norm(approximate - exact) / np.linalg.norm(exact) < 0.15
    assert fast.fingerprint != lite0.fingerprint and fast.precision == "bfloat16"
    with pytest.raises(ValueError, match="precision"):
        backbones.load_backbone("efficientnet_lite0", precision="float16")


@pytest.mark.parametrize(
    "constant, value", [("DECODE_MIN_SIDE", 256), ("MAX_PIXELS", 10_000_000), ("BACKGROUND", (0, 0, 0))]
)
def test_changing_a_decoding_constant_changes_the_cache_key(lite0, monkeypatch, constant, value):
    before = backbones.Backbone(lite0.spec, lite0.network, lite0.weights_digest).fingerprint
    assert before == lite0.fingerprint
    monkeypatch.setattr(backbones.decoding, constant, value)
    after = backbones.Backbone(lite0.spec, lite0.network, lite0.weights_digest).fingerprint
    assert after != before


def test_a_backbone_family_is_loaded_and_reported_by_its_own_spec(monkeypatch, tmp_path):
    calls, loaded = [], object()

    def load(spec, model_dir, engine, fold_batch_norms, **fetch_options):
        calls.append((spec.name, model_dir, engine, fold_batch_norms, fetch_options))
        return loaded

    preprocessing = backbones.REGISTRY["efficientnet_lite0"].preprocessing
    spec = backbones.BackboneSpec("tiny", 8, preprocessing, "a family of one", load, lambda spec, model_dir: "always")
    monkeypatch.setitem(backbones.REGISTRY, "tiny", spec)
    assert backbones.load_backbone("tiny", tmp_path, engine="tensorflow", base_url="https://example.org/") is loaded
    assert calls == [("tiny", tmp_path, "tensorflow", True, {"base_url": "https://example.org/"})]
    assert tlc.course.backbone_availability(tmp_path)["tiny"] == "always"
    assert all(spec.load and spec.availability for name, spec in backbones.REGISTRY.items() if name != "tiny")


def test_a_padded_fit_sees_the_whole_image_on_white_and_has_its_own_cache_entries(lite0):
    """Crop cuts a long image's ends; pad keeps all of it, centred on a white square of its long side."""
    image = np.zeros((20, 60, 3), np.uint8)  # a black bar, three times as wide as tall
    padded = lite0.fitting("pad")
    square = centre_square(image, padded.spec.preprocessing)
    assert square.shape == (60, 60, 3)
    assert (square[20:40] == 0).all() and (square[:20] == 255).all() and (square[40:] == 255).all()
    assert centre_square(image, lite0.spec.preprocessing).shape == (17, 17, 3)  # 224/256 of the short side
    seen = padded.preprocess(image[None]).numpy()[0] * 128 + 127  # back to pixel values
    assert seen[100:124, :, 0].max() < 1 and seen[:60, :, 0].min() > 254  # the bar across, white above it
    assert lite0.fitting("crop") is lite0 and padded.network is lite0.network
    assert padded.fingerprint != lite0.fingerprint
    assert padded.fitting("pad") is padded
