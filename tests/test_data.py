import shutil
import zlib

import pytest
from PIL import Image

from tests.images_factory import encoded, jpeg, rgb, write
from tlcourse.data import ImageFolderError, scan_dataset, split_for


def make_dataset(root, labels=("cat", "dog"), per_label=20):
    for label in labels:
        for i in range(per_label):
            write(root / label / f"{label}_{i:03d}.jpg", jpeg(seed=zlib.crc32(f"{label}{i}".encode())))
    return root


def test_scan_reads_labels_images_and_splits(tmp_path):
    dataset = scan_dataset(make_dataset(tmp_path / "d"))
    assert dataset.class_names == ["cat", "dog"]
    assert len(dataset.images) == 40
    for label, row in dataset.counts().items():
        assert row["validation"] >= 1 and row["test"] >= 1, (label, row)
    assert "total" in dataset.summary()


def test_formats_by_content_nested_folders_debris_and_case_of_extension(tmp_path):
    root = make_dataset(tmp_path / "d", per_label=10)
    write(root / "cat" / "deep" / "deeper" / "x.PNG", encoded(rgb(seed=5), "PNG"))
    write(root / "cat" / "webp_named.jpg", encoded(rgb(seed=6), "WEBP"))
    write(root / "cat" / "UPPER.JPG", jpeg(seed=7))
    write(root / "cat" / ".DS_Store", b"junk")
    write(root / "cat" / "._x.jpg", b"junk")
    write(root / "cat" / "Thumbs.db", b"junk")
    dataset = scan_dataset(root)
    relatives = {r.relative for r in dataset.images if r.label == "cat"}
    assert {"deep/deeper/x.PNG", "webp_named.jpg", "UPPER.JPG"} <= relatives
    assert len(relatives) == 13
    assert not dataset.skipped


def test_bad_files_are_reported_with_reasons_and_the_rest_kept(tmp_path):
    root = make_dataset(tmp_path / "d", per_label=10)
    write(root / "cat" / "empty.jpg", b"")
    write(root / "cat" / "page.jpg", b"<html>not found</html>")
    write(root / "dog" / "notes.txt", b"hello")
    write(root / "stray.jpg", jpeg())
    dataset = scan_dataset(root)
    reasons = {item.path.name: item.reason for item in dataset.skipped}
    assert "empty" in reasons["empty.jpg"]
    assert "not an image" in reasons["page.jpg"] and "not an image" in reasons["notes.txt"]
    assert "label folder" in reasons["stray.jpg"]
    assert len(dataset.images) == 20


def test_labels_differing_only_by_case_are_an_error_naming_both(tmp_path):
    root = make_dataset(tmp_path / "d", labels=("Cat", "cat", "dog"), per_label=3)
    with pytest.raises(ImageFolderError, match="'Cat' and 'cat'"):
        scan_dataset(root)


def test_fewer_than_two_labels_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "d", labels=("cat",), per_label=5)
    (root / "empty_label").mkdir()
    with pytest.raises(ImageFolderError, match="at least 2"):
        scan_dataset(root)


def test_small_label_is_warned_and_empty_label_left_out(tmp_path):
    root = make_dataset(tmp_path / "d", per_label=12)
    write(root / "rare" / "one.jpg", jpeg(seed=99))
    (root / "nothing").mkdir()
    dataset = scan_dataset(root)
    assert "nothing" not in dataset.class_names and "rare" in dataset.class_names
    notes = " ".join(dataset.notes)
    assert "'rare' has 1 images" in notes and "needs at least 10" in notes
    assert "'nothing' has no usable images" in notes


def test_duplicates_kept_once_and_cross_label_copies_kept_in_neither(tmp_path):
    root = make_dataset(tmp_path / "d", per_label=10)
    shutil.copy(root / "cat" / "cat_000.jpg", root / "cat" / "copy.jpg")
    shutil.copy(root / "cat" / "cat_001.jpg", root / "dog" / "confusing.jpg")
    dataset = scan_dataset(root)
    reasons = {item.path.name: item.reason for item in dataset.skipped}
    assert "duplicate of" in reasons["copy.jpg"]
    assert "also in label(s) dog" in reasons["cat_001.jpg"]
    assert "also in label(s) cat" in reasons["confusing.jpg"]
    assert len(dataset.images) == 19


def test_split_is_stable_when_images_are_added_and_the_folder_moves(tmp_path):
    root = make_dataset(tmp_path / "d", per_label=40)
    before = {(r.label, r.relative): r.split for r in scan_dataset(root).images}
    for i in range(30):
        write(root / "cat" / f"new_{i}.jpg", jpeg(seed=1000 + i))
    (root / "dog" / "dog_000.jpg").unlink()
    moved = root.rename(tmp_path / "elsewhere")
    after = {(r.label, r.relative): r.split for r in scan_dataset(moved).images}
    assert all(after[key] == split for key, split in before.items() if key in after)


def test_nohash_suffix_keeps_variants_of_one_photo_together():
    assert split_for("alice_nohash_1.jpg", 10, 10) == split_for("alice_nohash_2.jpg", 10, 10)
    assert split_for("alice", 10, 10) == split_for("alice_nohash_whatever", 10, 10)


def test_percentages_are_parameters(tmp_path):
    root = make_dataset(tmp_path / "d", per_label=50)
    dataset = scan_dataset(root, validation_percentage=30, testing_percentage=30)
    shares = {split: len(dataset.split(split)) / len(dataset.images) for split in ("train", "validation", "test")}
    assert 0.15 < shares["validation"] < 0.45 and 0.15 < shares["test"] < 0.45
    with pytest.raises(ImageFolderError, match="less than 100"):
        scan_dataset(root, validation_percentage=60, testing_percentage=50)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImageFolderError, match="not a folder"):
        scan_dataset(tmp_path / "nope")


def test_symlink_loop_is_not_followed_forever(tmp_path):
    root = make_dataset(tmp_path / "d", per_label=5)
    (root / "cat" / "loop").symlink_to(root / "cat", target_is_directory=True)
    dataset = scan_dataset(root)
    assert len([r for r in dataset.images if r.label == "cat"]) == 5


def test_stamps_dataset_has_five_photo_labels(stamps_dir):
    dataset = scan_dataset(stamps_dir)
    assert dataset.class_names == ["birds", "bovines", "flowers", "fruit", "vegetables"]
    assert len(dataset.images) >= 100
    assert not dataset.skipped
    assert all(row["test"] >= 1 and row["validation"] >= 1 for row in dataset.counts().values())
    with Image.open(dataset.images[0].path) as image:
        assert image.mode == "RGB"
