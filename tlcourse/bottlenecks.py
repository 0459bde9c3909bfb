"""The bottleneck cache: each image's feature vector computed once, kept safely, reused.

- Key: the image's content hash under the backbone's fingerprint (weights + preprocessing), so
  an edited image or another backbone can never reuse a stale vector.
- Compute: a batched ``tf.data`` pipeline with parallel decoding, streamed: memory stays flat;
  the network runs on the backbone's engine (``Backbone.engine``: LiteRT on a CPU) while the
  previous batch's files are written on a second thread.
- Storage: one small binary file per entry (magic, size, CRC-32, float32 values), written to a
  temporary name and renamed into place. A run killed at any moment leaves nothing that reads as
  valid; a damaged entry fails its CRC and is recomputed; concurrent runs agree.
- Gathering: a split's cached vectors with their labels (``Bottlenecks``, ``gather``), every
  split cached and gathered in one call (``cached_splits``, where most lessons start).
- Distortions (``Distortions``): applied once per training image and variant, their bottlenecks
  cached like the plain ones (``cache_distorted_variants``, ``gather_distorted``), so training
  samples among the variants at cached speed.
- ``cache_and_gather``: all of it in one call, every split and the training images' distorted
  views, with the cache report: how the pipeline's recipes, fine-tuning and the experiments start.

Taught in ``notebooks/02_cache_bottlenecks.ipynb``; cached distortions in
``notebooks/09_many_classes.ipynb``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tlcourse.atomic import atomic_path, remove_stale_temporaries
from tlcourse.data import SPLITS, Dataset, ImageRecord, SkippedFile
from tlcourse.images import ImageError, load_image, plain_jpeg_scale

MAGIC = b"TLBN\x00\x01\x00\x00"  # format version 1
HEADER = struct.Struct("<8sII")  # magic, number of values, CRC-32 of the values


@dataclass(frozen=True)
class CachingOptions:
    """How the image pipeline and the cache run; the defaults are the fastest measured
    (``bench/performance.py``, ``bench/caching_settings.py``), and only benches change them."""

    tensorflow_jpeg: bool = True  # plain JPEGs decoded by TensorFlow (False: every file by Pillow)
    # tf.data's autotuner off (True: on). Its thread sleeps for periods that double (10 ms, 20 ms,
    # ... 10 s, 20 s), and the end of the images could wait for its next wake-up: a 10-second
    # caching run sometimes took 20. Without it, parallel steps use min(cores, 16) threads.
    tf_data_autotune: bool = False
    write_behind: bool = True  # a batch's files written on a second thread (False: inline)


class BottleneckStore:
    """Bottleneck files of one backbone (by fingerprint) under ``root``: read, verify, write atomically."""

    def __init__(self, root: str | Path, backbone_name: str, fingerprint: str, size: int, variant: str = "plain"):
        self.directory = Path(root) / f"{backbone_name}-{fingerprint}" / variant
        self.size = size

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.bn"

    def read(self, key: str) -> np.ndarray | None:
        """The stored vector, or None if it is missing, truncated or damaged."""
        try:
            data = self.path(key).read_bytes()
        except OSError:
            return None
        if len(data) != HEADER.size + 4 * self.size:
            return None
        magic, count, crc = HEADER.unpack_from(data)
        payload = data[HEADER.size :]
        if magic != MAGIC or count != self.size or zlib.crc32(payload) != crc:
            return None
        return np.frombuffer(payload, dtype="<f4")

    def write(self, key: str, vector: np.ndarray) -> None:
        payload = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        if len(payload) != 4 * self.size:
            raise ValueError(f"bottleneck of {len(payload) // 4} values, expected {self.size}")
        # Not flushed to disk (durable=False): every read checks the CRC, so a torn entry is recomputed.
        with atomic_path(self.path(key), durable=False, clean=False) as temporary:
            temporary.write_bytes(HEADER.pack(MAGIC, self.size, zlib.crc32(payload)) + payload)

    def write_all(self, keys: list[str], vectors) -> None:
        for key, vector in zip(keys, vectors, strict=True):
            self.write(key, vector)

    def remove_stale_temporaries(self) -> None:
        """Delete the temporary files of runs that were killed mid-write."""
        if self.directory.is_dir():
            remove_stale_temporaries(self.directory.glob("*/.*.tmp-*"))


@dataclass
class CacheReport:
    hits: int = 0
    computed: int = 0
    failures: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0
    end_wait_seconds: float = 0.0  # how long the image pipeline took to end after its last batch

    def __str__(self) -> str:
        rate = self.computed / self.seconds if self.seconds and self.computed else 0.0
        line = f"bottlenecks: {self.hits} cached, {self.computed} computed, {len(self.failures)} failed"
        if self.computed:
            line += f" ({rate:.1f} images/s)"
        details = [f"  {failure.path}: {failure.reason}" for failure in self.failures]
        return "\n".join([line] + details)


def in_shard(record: ImageRecord, num_shards: int, shard_index: int) -> bool:
    """Whether an image belongs to shard ``shard_index`` of ``num_shards``: a function of its content."""
    return int(record.sha256[:16], 16) % num_shards == shard_index


def shard(records: list[ImageRecord], num_shards: int, shard_index: int) -> list[ImageRecord]:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be between 0 and num_shards - 1 (got {shard_index} of {num_shards})")
    return [record for record in records if in_shard(record, num_shards, shard_index)]


def store_for(backbone, bottleneck_dir: str | Path, variant: str = "plain") -> BottleneckStore:
    return BottleneckStore(bottleneck_dir, backbone.name, backbone.fingerprint, backbone.bottleneck_size, variant)


def _decoder(errors: dict):
    def decode(path_bytes):
        path = os.fsdecode(path_bytes)
        try:
            return load_image(path), True
        except ImageError as error:
            errors[path] = str(error)
            return np.zeros((1, 1, 3), np.uint8), False

    return decode


JPEG_RATIOS = (1, 2, 4, 8)  # the scales libjpeg decodes at


def _decode_plain_jpeg(path, ratio_index):
    """TensorFlow's JPEG decoder at ``JPEG_RATIOS[ratio_index]``: the pixels ``load_image`` gives a plain JPEG."""

    def at(ratio):
        return lambda: tf.io.decode_jpeg(tf.io.read_file(path), channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")

    return tf.switch_case(tf.convert_to_tensor(ratio_index, tf.int32), [at(ratio) for ratio in JPEG_RATIOS])


def image_pipeline(
    paths: list[bytes],
    preprocess,
    batch_size: int,
    errors: dict,
    transform=None,
    seeds: list[int] | None = None,
    options: CachingOptions = CachingOptions(),
) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
    """(index, preprocessed image) batches for ``paths``, decoded in parallel; failures go to ``errors``.

    Batches come in whatever order is fastest; the index says which path each image is.

    Plain JPEGs (``images.plain_jpeg_scale``) are decoded first by TensorFlow's own decoder, with
    no Python (so no lock) in the way: every core decodes. Everything else, and any JPEG that
    decoder refuses, then goes through Pillow (``load_image``), which says why a file is unusable.
    Each part is built only when it has files: building one takes a good part of a second, which
    a folder of a few dozen photos would notice.

    ``transform`` (optional) maps a decoded uint8 image and the image's seed (from ``seeds``) to
    another uint8 image: how cached distortions are made. ``options``: which decoder, whether
    tf.data's autotuner runs.
    """
    seeds = [0] * len(paths) if seeds is None else seeds
    scales = [plain_jpeg_scale(os.fsdecode(path)) if options.tensorflow_jpeg else 0 for path in paths]
    data_options = tf.data.Options()
    data_options.autotune.enabled = options.tf_data_autotune

    def prepare(index, image, seed):
        if transform is not None:
            image = transform(image, seed)
        return index, preprocess(image[None])[0]

    def slices(indices, *extra):  # (index, path, seed, *extra) for each of these files
        index = tf.constant(indices, tf.int64)
        path = tf.constant([paths[i] for i in indices], tf.string)
        seed = tf.constant([seeds[i] for i in indices], tf.int64)
        return tf.data.Dataset.from_tensor_slices((index, path, seed, *extra))

    def batches(decoded: tf.data.Dataset) -> tf.data.Dataset:
        prepared = decoded.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        return prepared.batch(batch_size).prefetch(2).with_options(data_options)

    done = np.zeros(len(paths), bool)
    fast = [i for i, scale in enumerate(scales) if scale]
    if fast:
        ratio_indices = tf.constant([JPEG_RATIOS.index(scales[i]) for i in fast], tf.int32)
        plain = slices(fast, ratio_indices).map(
            lambda index, path, seed, ratio_index: (index, _decode_plain_jpeg(path, ratio_index), seed),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        for indices, images in batches(plain.ignore_errors()):  # a damaged JPEG: Pillow will say what is wrong
            done[indices.numpy()] = True
            yield indices, images
    rest = np.flatnonzero(~done).tolist()
    if rest:
        decode = _decoder(errors)

        def with_pillow(index, path, seed):
            image, ok = tf.numpy_function(decode, [path], [tf.uint8, tf.bool], stateful=False)
            image.set_shape([None, None, 3])
            ok.set_shape([])
            return index, image, ok, seed

        decoded = slices(rest).map(with_pillow, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        decoded = decoded.filter(lambda index, image, ok, seed: ok)
        decoded = decoded.map(lambda index, image, ok, seed: (index, image, seed))
        yield from batches(decoded)


def cache_bottlenecks(
    records: list[ImageRecord],
    backbone,
    bottleneck_dir: str | Path,
    *,
    batch_size: int = 32,
    progress: bool = True,
    variant: str = "plain",
    transform=None,
    num_shards: int = 1,
    shard_index: int = 0,
    options: CachingOptions = CachingOptions(),
) -> CacheReport:
    """Make sure every image in ``records`` has a valid cached bottleneck; compute the missing ones.

    ``variant`` and ``transform`` cache distorted copies instead (see ``cache_distorted_variants``).
    ``num_shards`` and ``shard_index`` take only this run's stable share of the images, so that
    several processes or machines can fill one bottleneck folder together. ``options``: see
    ``CachingOptions`` (for benches).
    """
    started = time.perf_counter()
    records = shard(records, num_shards, shard_index)
    store = store_for(backbone, bottleneck_dir, variant)
    store.remove_stale_temporaries()
    report = CacheReport()
    todo = []
    for record in records:
        if store.read(record.sha256) is None:
            todo.append(record)
        else:
            report.hits += 1
    errors: dict[str, str] = {}
    if todo:
        paths = [os.fsencode(record.path) for record in todo]
        seeds = [int(record.sha256[:15], 16) for record in todo]  # a distortion follows the content
        dataset = image_pipeline(paths, backbone.preprocess, batch_size, errors, transform, seeds, options)
        bar = tqdm(total=len(todo), unit="img", desc=f"caching {backbone.name}", disable=not progress)
        # One batch's files are written on a second thread while the network runs on the next batch.
        # Waiting for that write before handing over the next keeps one batch at most in flight and
        # makes a failed write raise here. On an error in this loop, closing the writer waits for
        # the write in flight, so nothing is left half-done.
        with bar, ThreadPoolExecutor(1, thread_name_prefix="bottleneck-writer") as writer:
            writing = None
            last_batch = time.perf_counter()
            for indices, images in dataset:
                vectors = backbone.run_network(images)  # the engine behind backbone.bottlenecks
                keys = [todo[index].sha256 for index in indices.numpy()]
                if writing is not None:
                    writing.result()
                if options.write_behind:
                    writing = writer.submit(store.write_all, keys, vectors)
                else:
                    store.write_all(keys, vectors)
                report.computed += len(vectors)
                bar.update(len(vectors))
                last_batch = time.perf_counter()
            report.end_wait_seconds = time.perf_counter() - last_batch
            if writing is not None:
                writing.result()
            bar.update(len(todo) - bar.n)  # the failed ones
    report.failures = [SkippedFile(Path(path), reason) for path, reason in sorted(errors.items())]
    report.seconds = time.perf_counter() - started
    if progress:
        print(report)
    return report


def load_bottlenecks(records: list[ImageRecord], backbone, bottleneck_dir, variant: str = "plain"):
    """(vectors, kept records) for the records whose bottleneck is cached; the others are left out."""
    store = store_for(backbone, bottleneck_dir, variant)
    vectors, kept = [], []
    for record in records:
        vector = store.read(record.sha256)
        if vector is not None:
            vectors.append(vector)
            kept.append(record)
    matrix = np.stack(vectors) if vectors else np.zeros((0, backbone.bottleneck_size), np.float32)
    return matrix, kept


@dataclass
class Bottlenecks:
    """Cached vectors of one split, with their labels (indices into ``class_names``) and records."""

    vectors: np.ndarray
    labels: np.ndarray
    records: list[ImageRecord]

    def __len__(self) -> int:
        return len(self.labels)


def gather(dataset: Dataset, split: str, backbone, bottleneck_dir, variant: str = "plain") -> Bottlenecks:
    """The cached bottlenecks of one split (images that failed to decode are left out)."""
    index = {name: i for i, name in enumerate(dataset.class_names)}
    vectors, records = load_bottlenecks(dataset.split(split), backbone, bottleneck_dir, variant)
    labels = np.array([index[record.label] for record in records], dtype=np.int64)
    return Bottlenecks(vectors, labels, records)


def cached_splits(dataset: Dataset, backbone, bottleneck_dir=None, progress: bool = False) -> dict[str, Bottlenecks]:
    """Every split's bottlenecks, cached first where missing: the set-up most lessons start from.

    The same as ``cache_bottlenecks`` on all the images followed by ``gather`` on each split
    (``notebooks/02_cache_bottlenecks.ipynb`` does the two steps by hand). The bottleneck folder
    defaults to ``<project>/runs/bottlenecks``, shared by every lesson.
    """
    from tlcourse import config

    bottleneck_dir = bottleneck_dir or config.project_root() / "runs" / "bottlenecks"
    return cache_and_gather(dataset, backbone, bottleneck_dir, progress=progress).splits


@dataclass(frozen=True)
class Distortions:
    """retrain.py's distortion flags: a flip, a crop margin, a zoom and a brightness change (in %)."""

    flip_left_right: bool = False
    random_crop: float = 0.0
    random_scale: float = 0.0
    random_brightness: float = 0.0

    @property
    def active(self) -> bool:
        return self.flip_left_right or self.random_crop > 0 or self.random_scale > 0 or self.random_brightness > 0

    def variant_name(self, index: int) -> str:
        """The cache folder of variant ``index``: a new folder for every other setting."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]
        return f"distorted-{digest}-{index}"

    def apply(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One random distortion of a uint8 image, fully determined by ``seed`` (shape [2], int)."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
        shape = tf.shape(image)
        crop = tf.random.stateless_uniform([], seeds[0], 0.0, self.random_crop / 100.0)
        scale = tf.random.stateless_uniform([], seeds[1], 0.0, self.random_scale / 100.0)
        keep = 1.0 / ((1.0 + crop) * (1.0 + scale))  # fraction of each side kept
        height = tf.maximum(1, tf.cast(tf.cast(shape[0], tf.float32) * keep, tf.int32))
        width = tf.maximum(1, tf.cast(tf.cast(shape[1], tf.float32) * keep, tf.int32))
        image = tf.image.stateless_random_crop(image, tf.stack([height, width, 3]), seeds[2])
        if self.flip_left_right:
            image = tf.image.stateless_random_flip_left_right(image, seeds[3])
        if self.random_brightness > 0:
            factor = tf.random.stateless_uniform(
                [], seeds[4], 1.0 - self.random_brightness / 100.0, 1.0 + self.random_brightness / 100.0
            )
            image = tf.cast(tf.clip_by_value(tf.cast(image, tf.float32) * factor, 0.0, 255.0), tf.uint8)
        return image


def cache_distorted_variants(
    dataset: Dataset, backbone, bottleneck_dir, distortions: Distortions, num_variants: int, progress=True
):
    """Cache ``num_variants`` bottlenecks of every training image seen through ``distortions`` (once).

    Variant ``k`` of an image is the same on every run: its randomness comes from the image's
    content and ``k``, so the cache stays valid and training with distortions stays fast.
    """
    for variant in range(num_variants):

        def transform(image, seed, variant=variant):
            return distortions.apply(image, tf.stack([seed, tf.constant(variant, tf.int64)]))

        cache_bottlenecks(
            dataset.split("train"),
            backbone,
            bottleneck_dir,
            progress=progress,
            variant=distortions.variant_name(variant),
            transform=transform,
        )


def gather_distorted(
    dataset: Dataset, backbone, bottleneck_dir, distortions: Distortions, num_variants: int
) -> list[Bottlenecks]:
    """The ``num_variants`` cached distorted variants of the training split (``cache_distorted_variants``)."""
    return [
        gather(dataset, "train", backbone, bottleneck_dir, distortions.variant_name(variant))
        for variant in range(num_variants)
    ]


@dataclass
class Gathered:
    """Every split's cached bottlenecks, the training images' distorted views, and how caching went."""

    splits: dict[str, Bottlenecks]
    distorted: list[Bottlenecks]  # variant k of the training split, k = 0 .. num_variants - 1 (none: empty)
    report: CacheReport  # of the plain bottlenecks of every image


def cache_and_gather(
    dataset: Dataset,
    backbone,
    bottleneck_dir,
    distortions: Distortions | None = None,
    num_variants: int = 0,
    progress: bool = True,
) -> Gathered:
    """Cache what is missing, then gather: every split's bottlenecks and, when ``distortions`` are
    active, ``num_variants`` distorted views of each training image (``cache_distorted_variants``).

    The one way everything that trains starts: ``pipeline``'s recipes, ``finetune.prepare`` (with
    the activations below the trained blocks as its backbone), ``many_classes.Experiment`` and
    ``cached_splits``.
    """
    report = cache_bottlenecks(dataset.images, backbone, bottleneck_dir, progress=progress)
    distorted = []
    if distortions is not None and distortions.active and num_variants > 0:
        cache_distorted_variants(dataset, backbone, bottleneck_dir, distortions, num_variants, progress)
        distorted = gather_distorted(dataset, backbone, bottleneck_dir, distortions, num_variants)
    splits = {name: gather(dataset, name, backbone, bottleneck_dir) for name in SPLITS}
    return Gathered(splits, distorted, report)
