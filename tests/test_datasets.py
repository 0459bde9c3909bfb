import hashlib
import io
import tarfile

import pytest

from tests.images_factory import jpeg
from tlcourse import datasets
from tlcourse.download import DownloadError


def tgz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def serve(http_server, data: bytes) -> tuple[str, str]:
    folder, base = http_server
    (folder / "flower_photos.tgz").write_bytes(data)
    return base + "flower_photos.tgz", hashlib.sha256(data).hexdigest()


def test_flowers_download_is_hash_checked_and_becomes_a_label_folder(http_server, tmp_path):
    members = {f"flower_photos/{label}/{i}.jpg": jpeg(seed=i) for label in ("daisy", "roses") for i in range(3)}
    members["flower_photos/LICENSE.txt"] = b"CC-BY"
    url, digest = serve(http_server, tgz(members))
    folder = datasets.flowers(tmp_path / "data", url=url, expected_hash=digest)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["daisy", "roses"]
    assert len(list((folder / "daisy").iterdir())) == 3
    assert datasets.flowers(tmp_path / "data", url=url, expected_hash=digest) == folder  # reused, not redone


def test_flowers_with_a_wrong_hash_writes_nothing(http_server, tmp_path):
    url, _ = serve(http_server, tgz({"flower_photos/daisy/1.jpg": jpeg()}))
    with pytest.raises(DownloadError, match="expected"):
        datasets.flowers(tmp_path / "data", url=url, expected_hash="f" * 64)
    assert not (tmp_path / "data" / "flowers").exists()
    assert list((tmp_path / "data" / "downloads").iterdir()) == []


def test_an_archive_that_escapes_its_folder_is_refused(http_server, tmp_path):
    url, digest = serve(http_server, tgz({"flower_photos/daisy/1.jpg": jpeg(), "../../escaped.txt": b"x"}))
    with pytest.raises(tarfile.TarError):
        datasets.flowers(tmp_path / "data", url=url, expected_hash=digest)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data" / "flowers").exists()


def test_fashion_mnist_is_written_as_a_label_folder(tmp_path):
    folder = datasets.fashion_mnist(per_class=3, data_dir=tmp_path)
    labels = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert labels == sorted(datasets.FASHION_CLASSES)
    assert all(len(list((folder / label).iterdir())) == 3 for label in labels)


def test_clipart_classes_hold_unique_unambiguous_images():
    classes = datasets.clipart_classes(min_images=10)
    assert len(classes) >= 80 and all(len(pngs) >= 10 for pngs in classes.values())
    digests = [hashlib.sha256(png.read_bytes()).hexdigest() for pngs in classes.values() for png in pngs]
    assert len(digests) == len(set(digests))  # no image twice, within or across labels


def test_many_classes_passes_a_hundred_labels():
    labels = {**datasets.clipart_classes(10), **datasets.stamps_photo_classes(10)}
    assert len(labels) >= 100


def test_unique_images_drops_files_filed_under_two_labels(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
    (a / "1.png").write_bytes(b"one")
    (a / "1 copy.png").write_bytes(b"one")
    (a / "2.png").write_bytes(b"two")
    (b / "2.png").write_bytes(b"two")
    (b / "3.png").write_bytes(b"three")
    assert datasets.unique_images({"a": a, "b": b}) == {"a": [a / "1 copy.png"], "b": [b / "3.png"]}


def test_folded_classes_fold_small_folders_and_file_each_image_once(tmp_path):
    def folder(name, files):
        path = tmp_path / name
        path.mkdir(parents=True)
        for file_name, data in files.items():
            (path / f"{file_name}.png").write_bytes(data)
        return path

    folders = {
        "p/animals": folder("animals", {"a1": b"a1", "a2": b"a2", "shared": b"cat1"}),
        "p/animals/cats": folder("animals/cats", {"c1": b"cat1", "c2": b"cat2", "c3": b"cat3"}),
        "p/animals/dogs": folder("animals/dogs", {"d1": b"dog1"}),  # too small: folded into animals
        "p/music": folder("music", {"m1": b"m1", "m2": b"m2", "m3": b"m3", "amb": b"ambiguous"}),
        "p/toys": folder("toys", {"t1": b"t1", "amb": b"ambiguous"}),  # too small, no parent: dropped
        "p/art": folder("art", {"r1": b"r1", "r2": b"r2", "amb": b"ambiguous"}),  # unrelated copy: dropped
        "p/art/x": folder("art/x", {"x1": b"x1", "x2": b"x2", "x3": b"x3"}),
    }
    classes = datasets.folded_classes(folders, min_images=3)
    assert set(classes) == {"p/animals", "p/animals/cats", "p/music", "p/art/x"}
    # the copy filed under animals and animals/cats belongs to the deeper folder, the dog to animals
    assert [p.name for p in classes["p/animals/cats"]] == ["c1.png", "c2.png", "c3.png"]
    assert sorted(p.name for p in classes["p/animals"]) == ["a1.png", "a2.png", "d1.png"]
    # art (r1, r2) fell below 3 once the ambiguous copy (also in music and toys) was dropped
    assert [p.name for p in classes["p/music"]] == ["m1.png", "m2.png", "m3.png"]
    everything = [p.read_bytes() for paths in classes.values() for p in paths]
    assert len(everything) == len(set(everything))


def test_many_classes_150_reaches_the_tutorials_scale():
    folder = datasets.many_classes_150()
    labels = {p.name: [f for f in p.iterdir() if f.is_file()] for p in folder.iterdir() if p.is_dir()}
    assert len(labels) >= 150
    assert min(len(files) for files in labels.values()) >= 8
    assert any(name.startswith("stamps-") and "cartoon" in name for name in labels)  # drawings included
    owner = {}
    for label, files in labels.items():
        for file in files:
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            assert owner.setdefault(digest, label) == label, f"{file.name} is in {owner[digest]} and {label}"
    assert "many_classes_150" in datasets.DATASETS and "many_classes_150" in datasets.LICENSES


def test_skipped_images_are_one_line_for_the_learner_and_listed_in_the_folder(tmp_path, monkeypatch, capsys):
    """Lesson 11 once printed 13 lines of stderr with long paths; now one line, the details in .skipped.txt."""
    from tlcourse import data

    sources = {name: tmp_path / f"{name}.png" for name in ("a1", "a2", "b1", "b2")}
    for path in sources.values():
        path.write_bytes(b"")

    def save(source, target, max_side=datasets.MAX_SIDE):
        if source.stem.endswith("2"):
            raise ValueError(f"{source.name} is over the pixel limit (possible decompression bomb)")
        target.write_bytes(jpeg(seed=len(source.stem) + ord(source.stem[0])))

    monkeypatch.setattr(datasets, "_save_jpeg_on_white", save)
    classes = {"a": [sources["a1"], sources["a2"]], "b": [sources["b1"], sources["b2"]]}
    folder = datasets._build_classes(tmp_path / "built", classes, "test")
    printed = capsys.readouterr()
    assert "2 source images skipped (oversized or unreadable); the list is in built/.skipped.txt" in printed.out
    assert "a2.png" not in printed.out + printed.err
    listed = (folder / datasets.SKIPPED).read_text().splitlines()
    assert [line.split(":")[0] for line in listed] == [str(sources["a2"]), str(sources["b2"])]
    scanned = data.scan_dataset(folder, 0, 0)
    assert len(scanned.images) == 2 and not scanned.skipped  # the list is no stray file
