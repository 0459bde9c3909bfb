import numpy as np
import pytest

from tests.images_factory import encoded, jpeg, labelled_folder, rgb
from tlcourse import bottlenecks
from tlcourse.bottlenecks import BottleneckStore, CachingOptions, cache_bottlenecks, load_bottlenecks, store_for
from tlcourse.data import scan_dataset


@pytest.fixture
def small_dataset(tmp_path):
    return scan_dataset(labelled_folder(tmp_path / "images", ("a", "b"), 6, width=64, height=48))


def test_cold_then_warm_run(small_dataset, lite0, tmp_path):
    cache = tmp_path / "bottlenecks"
    cold = cache_bottlenecks(small_dataset.images, lite0, cache, batch_size=4, progress=False)
    assert (cold.hits, cold.computed, cold.failures) == (0, 12, [])
    warm = cache_bottlenecks(small_dataset.images, lite0, cache, progress=False)
    assert (warm.hits, warm.computed) == (12, 0)
    vectors, kept = load_bottlenecks(small_dataset.images, lite0, cache)
    assert vectors.shape == (12, 1280) and len(kept) == 12
    fresh = lite0.bottlenecks(np.asarray(__import__("tlcourse").images.load_image(kept[3].path)))
    np.testing.assert_allclose(vectors[3], fresh, atol=1e-4)


def test_cache_and_gather_is_the_steps_by_hand_in_one_call(small_dataset, lite0, tmp_path):
    distortions = bottlenecks.Distortions(flip_left_right=True, random_crop=20)
    gathered = bottlenecks.cache_and_gather(small_dataset, lite0, tmp_path / "bn", distortions, 2, progress=False)
    assert (gathered.report.hits, gathered.report.computed) == (0, 12)
    for split, values in gathered.splits.items():
        by_hand = bottlenecks.gather(small_dataset, split, lite0, tmp_path / "bn")
        assert np.array_equal(values.vectors, by_hand.vectors) and np.array_equal(values.labels, by_hand.labels)
    by_hand = bottlenecks.gather_distorted(small_dataset, lite0, tmp_path / "bn", distortions, 2)
    assert len(gathered.distorted) == 2
    assert all(np.array_equal(a.vectors, b.vectors) for a, b in zip(gathered.distorted, by_hand, strict=True))
    again = bottlenecks.cache_and_gather(small_dataset, lite0, tmp_path / "bn", progress=False)  # no distortions
    assert (again.report.hits, again.report.computed, again.distorted) == (12, 0, [])
    inactive = bottlenecks.cache_and_gather(small_dataset, lite0, tmp_path / "bn", bottlenecks.Distortions(), 2, False)
    assert inactive.distorted == []


def test_damaged_and_truncated_entries_are_recomputed(small_dataset, lite0, tmp_path):
    cache = tmp_path / "bottlenecks"
    cache_bottlenecks(small_dataset.images, lite0, cache, progress=False)
    store = store_for(lite0, cache)
    first, second = small_dataset.images[:2]
    good = store.read(first.sha256).copy()
    path = store.path(first.sha256)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the values: the CRC catches it
    path.write_bytes(bytes(data))
    store.path(second.sha256).write_bytes(b"\0" * 100)  # a file of NUL bytes
    assert store.read(first.sha256) is None and store.read(second.sha256) is None
    report = cache_bottlenecks(small_dataset.images, lite0, cache, progress=False)
    assert report.computed == 2
    np.testing.assert_allclose(store.read(first.sha256), good, atol=1e-5)


def test_key_follows_content_and_backbone(small_dataset, lite0, tmp_path):
    cache = tmp_path / "bottlenecks"
    cache_bottlenecks(small_dataset.images, lite0, cache, progress=False)
    edited = small_dataset.images[0].path
    edited.write_bytes(jpeg(seed=12345, width=64, height=48))
    rescanned = scan_dataset(small_dataset.root)
    report = cache_bottlenecks(rescanned.images, lite0, cache, progress=False)
    assert (report.hits, report.computed) == (11, 1)
    other = BottleneckStore(cache, lite0.name, "another-fingerprint", 1280)
    assert other.read(rescanned.images[0].sha256) is None


def test_an_image_that_fails_to_decode_is_reported_and_the_rest_cached(small_dataset, lite0, tmp_path):
    broken = small_dataset.images[0].path
    data = jpeg(seed=1, width=300, height=300)
    broken.write_bytes(data[: len(data) // 2])  # a valid header, then cut off
    dataset = scan_dataset(small_dataset.root)  # the header check passes ...
    assert len(dataset.images) == 12
    report = cache_bottlenecks(dataset.images, lite0, tmp_path / "c", progress=False)
    assert report.computed == 11  # ... the decode does not, and says so
    assert [f.path.name for f in report.failures] == [broken.name]
    assert "truncated" in report.failures[0].reason
    vectors, kept = load_bottlenecks(dataset.images, lite0, tmp_path / "c")
    assert len(kept) == 11 and broken not in [r.path for r in kept]


@pytest.mark.parametrize("failing_write", [2, 11])  # in the first batch; in the last, whose write is awaited at the end
def test_a_failed_write_stops_the_run_and_what_was_written_stays_valid(
    small_dataset, lite0, tmp_path, monkeypatch, failing_write
):
    """Files are written on a second thread: its errors must still reach the caller."""
    writes, write = [], BottleneckStore.write

    def failing(store, key, vector):
        writes.append(key)
        if len(writes) == failing_write:
            raise OSError(28, "No space left on device")
        write(store, key, vector)

    monkeypatch.setattr(BottleneckStore, "write", failing)
    cache = tmp_path / "bottlenecks"
    with pytest.raises(OSError, match="No space left"):
        cache_bottlenecks(small_dataset.images, lite0, cache, batch_size=4, progress=False)
    monkeypatch.undo()
    vectors, kept = load_bottlenecks(small_dataset.images, lite0, cache)
    assert len(kept) == failing_write - 1  # the batch stops at the failure; nothing after it was written
    assert not list(cache.rglob(".*.tmp-*"))
    report = cache_bottlenecks(small_dataset.images, lite0, cache, progress=False)
    assert (report.hits, report.computed) == (failing_write - 1, 12 - failing_write + 1)


def test_both_parts_of_the_image_pipeline_run_without_the_autotuner(small_dataset, lite0, tmp_path, monkeypatch):
    """The end of a pipeline with tf.data's autotuner on could wait seconds for it (``CachingOptions``)."""
    import tensorflow as tf

    iterated, iterate = [], tf.data.Dataset.__iter__

    def recording(dataset):
        iterated.append(dataset.options().autotune.enabled)
        return iterate(dataset)

    monkeypatch.setattr(tf.data.Dataset, "__iter__", recording)
    small_dataset.images[0].path.write_bytes(encoded(rgb(seed=3), "PNG"))  # Pillow's part runs too
    images = scan_dataset(small_dataset.root).images
    report = cache_bottlenecks(images, lite0, tmp_path / "c", progress=False)
    assert report.computed == 12 and 0 <= report.end_wait_seconds < report.seconds
    assert iterated == [False, False]  # the plain JPEGs, then the PNG
    iterated.clear()
    options = CachingOptions(tensorflow_jpeg=False, tf_data_autotune=True, write_behind=False)  # as benches try
    report = cache_bottlenecks(images, lite0, tmp_path / "d", progress=False, options=options)
    assert report.computed == 12
    assert iterated == [True]  # Pillow decodes every file: one part, with the autotuner
    by_default, by_options = (load_bottlenecks(images, lite0, tmp_path / name)[0] for name in ("c", "d"))
    np.testing.assert_allclose(by_options, by_default, atol=1e-4)


def test_store_write_is_atomic_and_leaves_no_temporaries(tmp_path):
    store = BottleneckStore(tmp_path, "m", "f", 4)
    store.write("ab" * 32, np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(store.read("ab" * 32), np.arange(4, dtype=np.float32))
    assert [p.name for p in store.path("ab" * 32).parent.iterdir()] == ["ab" * 32 + ".bn"]
    with pytest.raises(ValueError):
        store.write("cd" * 32, np.arange(5, dtype=np.float32))
    assert store.read("cd" * 32) is None
