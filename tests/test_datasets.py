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
