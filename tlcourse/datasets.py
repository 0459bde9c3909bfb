"""Datasets the course ships or fetches, each materialised as an ordinary folder-per-label directory.

The rest of the course treats them exactly like a learner's own photos.

- ``stamps``: five photo classes of Debian's ``tuxpaint-stamps-default`` (GPL-2): birds, fruit,
  flowers, vegetables, bovines; cut-outs composited onto a white background. Offline default.
- ``clipart``: folders of Debian's ``openclipart-png`` (public domain) with at least N images:
  the many-classes lesson.
- ``many_classes``: ``clipart`` plus the stamps' other photo folders: over 100 labels.
- ``many_classes_150``: every clip-art and stamps folder (drawings too) with 8 or more unique
  images, smaller folders folded into their parents: over 150 labels, the tutorial's own scale.
- ``fashion_mnist``: Debian's ``dataset-fashion-mnist`` (MIT) written out as PNGs: volume.
- ``flowers``: the tutorial's flower_photos, downloaded when online.

Debian data is read where the package is installed, or fetched with ``apt-get download`` and
unpacked into the project's data folder without root. Shell: ``python -m tlcourse.datasets NAME``.
Taught in ``notebooks/01_prepare_dataset.ipynb``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from tlcourse import config
from tlcourse.atomic import atomic_path, recover
from tlcourse.download import download
from tlcourse.errors import DatasetError, command_line
from tlcourse.images import load_image

COMPLETE = ".complete"  # written last: a folder without it is an interrupted build and is redone
MAX_SIDE = 512  # materialised images are at most this wide or high: backbones see 224-299 px
# In a built folder: the source images left out (too large, unreadable) and why; a dot file, which
# scan_dataset ignores (it is not an image outside a label folder).
SKIPPED = ".skipped.txt"
STAMPS_PACKAGE = "tuxpaint-stamps-default"
STAMPS_ROOT = "usr/share/tuxpaint/stamps"
STAMPS_CLASSES = {  # label -> folder under the stamps root (its photos only, no sub-folders)
    "birds": "animals/birds",
    "fruit": "food/fruit",
    "flowers": "plants/flowers",
    "vegetables": "food/vegetables",
    "bovines": "animals/mammals/bovines",
}
CLIPART_PACKAGE = "openclipart-png"
CLIPART_ROOT = "usr/share/openclipart/png"
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_ROOT = "usr/share/datasets/fashion-mnist"
FASHION_CLASSES = [
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]
FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
# sha256 of flower_photos.tgz (228,813,984 bytes), as TensorFlow Datasets records it.
FLOWERS_SHA256 = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"
LICENSES = {
    "stamps": "GPL-2.0 (Debian tuxpaint-stamps-default)",
    "clipart": "public domain (Debian openclipart-png)",
    "many_classes": "public domain (openclipart-png) and GPL-2.0 (tuxpaint-stamps-default)",
    "many_classes_150": "public domain (openclipart-png) and GPL-2.0 (tuxpaint-stamps-default)",
    "fashion_mnist": "MIT (Debian dataset-fashion-mnist)",
    "flowers": "CC-BY 2.0 (TensorFlow example images)",
}


def debian_package_root(package: str, inner: str, data_dir: Path | None = None) -> Path:
    """The folder ``/<inner>`` of an installed Debian package, or of a copy unpacked into the data folder."""
    installed = Path("/") / inner
    if installed.is_dir() and any(installed.iterdir()):
        return installed
    unpacked = Path(data_dir or config.data_dir()) / "debian" / package
    recover(unpacked)
    if not (unpacked / COMPLETE).is_file():
        _unpack_debian_package(package, unpacked)
    return unpacked / inner


def _unpack_debian_package(package: str, destination: Path) -> None:
    with atomic_path(destination) as tree:
        tree.mkdir()
        print(f"Fetching the Debian package {package} (apt-get download) ...", flush=True)
        fetched = subprocess.run(["apt-get", "download", package], cwd=tree, capture_output=True, text=True)
        debs = list(tree.glob("*.deb"))
        if fetched.returncode != 0 or not debs:
            raise DatasetError(
                f"could not fetch the Debian package {package}: {fetched.stderr.strip() or 'no .deb'}\n"
                f"Run 'sudo apt-get update' once and try again, or install it: sudo apt-get install {package}"
            )
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tree)], check=True)
        debs[0].unlink()
        (tree / COMPLETE).write_text(debs[0].name + "\n")


def _build_folder(destination: Path, write) -> Path:
    """Run ``write(folder)`` into a temporary folder, then move it into place: all or nothing.

    A folder left incomplete (no ``COMPLETE`` marker) is built again and replaced without a moment
    with no folder at all; what a killed build left is cleaned up first (``atomic.recover``).
    """
    recover(destination)
    if (destination / COMPLETE).is_file():
        return destination
    with atomic_path(destination) as work:
        work.mkdir()
        write(work)
        (work / COMPLETE).write_text("")
    return destination


def _jpeg_on_white(source: Path, max_side: int = MAX_SIDE) -> bytes:
    image = Image.fromarray(load_image(source))
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)  # keeps the aspect ratio
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _save_jpeg_on_white(source: Path, target: Path, max_side: int = MAX_SIDE) -> None:
    target.write_bytes(_jpeg_on_white(source, max_side))


def stamps(data_dir: str | Path | None = None) -> Path:
    """The ``stamps`` dataset folder (five labels of real photos), built on first use."""
    data_dir = Path(data_dir or config.data_dir())
    source = debian_package_root(STAMPS_PACKAGE, STAMPS_ROOT, data_dir)

    def write(folder: Path) -> None:
        for label, sub_folder in STAMPS_CLASSES.items():
            (folder / label).mkdir()
            for png in sorted((source / sub_folder).glob("*.png")):
                _save_jpeg_on_white(png, folder / label / f"{png.stem}.jpg")

    return _build_folder(data_dir / "stamps", write)


def unique_images(folders: dict[str, Path]) -> dict[str, list[Path]]:
    """Label -> the PNGs directly in its folder, without copies.

    A copy inside one folder is kept once; a file whose bytes sit in two labels' folders is
    dropped from both, since its label is ambiguous (clip art is often filed twice).
    """
    owners = defaultdict(set)
    first = {}
    for label, folder in folders.items():
        for png in sorted(folder.glob("*.png")):
            digest = hashlib.sha256(png.read_bytes()).hexdigest()
            owners[digest].add(label)
            first.setdefault((label, digest), png)
    images = defaultdict(list)
    for (label, digest), png in first.items():
        if len(owners[digest]) == 1:
            images[label].append(png)
    return {label: sorted(images[label]) for label in folders}


def clipart_classes(min_images: int = 20, data_dir: str | Path | None = None) -> dict[str, list[Path]]:
    """Label -> unique PNGs of each ``openclipart-png`` folder holding at least ``min_images`` of them."""
    source = debian_package_root(CLIPART_PACKAGE, CLIPART_ROOT, data_dir)
    folders = {p.relative_to(source).as_posix().replace("/", "_"): p for p in sorted(source.rglob("*")) if p.is_dir()}
    return {label: pngs for label, pngs in unique_images(folders).items() if len(pngs) >= min_images}


def stamps_photo_classes(min_images: int = 10, data_dir: str | Path | None = None) -> dict[str, list[Path]]:
    """Label -> unique photos of each ``tuxpaint-stamps-default`` folder (no drawings) with enough of them."""
    source = debian_package_root(STAMPS_PACKAGE, STAMPS_ROOT, data_dir)
    folders = {
        p.relative_to(source).as_posix().replace("/", "_"): p
        for p in sorted(source.rglob("*"))
        if p.is_dir() and p.name not in ("cartoon", "plastic")
    }
    return {label: pngs for label, pngs in unique_images(folders).items() if len(pngs) >= min_images}


def _write_skipped(folder: Path, skipped: list[str]) -> None:
    """List the skipped source images in ``folder/.skipped.txt`` (one line each, with the reason)."""
    if skipped:
        (folder / SKIPPED).write_text("".join(f"{line}\n" for line in skipped), encoding="utf-8")


def _say_skipped(destination: Path, count: int) -> None:
    """One line for the learner, instead of a line per image (the details are in the folder's .skipped.txt)."""
    if count:
        print(
            f"{count} source image{'s' * (count > 1)} skipped (oversized or unreadable); "
            f"the list is in {destination.name}/{SKIPPED}",
            flush=True,
        )


def _write_classes(classes: dict[str, list[Path]], folder: Path, description: str) -> int:
    """Write each label's images as JPEGs; returns how many were skipped (listed in ``.skipped.txt``)."""
    skipped = []
    for label, pngs in tqdm(classes.items(), desc=description, unit="label"):
        (folder / label).mkdir()
        for png in pngs:
            try:
                _save_jpeg_on_white(png, folder / label / f"{png.stem}.jpg")
            except ValueError as error:  # e.g. a possible decompression bomb
                skipped.append(f"{png}: {error}")
    _write_skipped(folder, skipped)
    return len(skipped)


def _build_classes(destination: Path, classes: dict[str, list[Path]], description: str) -> Path:
    skipped = []
    built = _build_folder(destination, lambda folder: skipped.append(_write_classes(classes, folder, description)))
    _say_skipped(destination, sum(skipped))
    return built


def clipart(min_images: int = 20, data_dir: str | Path | None = None) -> Path:
    """The ``clipart`` dataset: one label per clip-art folder with at least ``min_images`` unique images."""
    data_dir = Path(data_dir or config.data_dir())
    return _build_classes(data_dir / f"clipart_min{min_images}", clipart_classes(min_images, data_dir), "clipart")


def many_classes(min_images: int = 10, data_dir: str | Path | None = None) -> Path:
    """Over 100 labels for lesson 09: ``clipart`` folders plus the stamps' photo folders, each with
    at least ``min_images`` unique images (labels prefixed ``clipart-`` and ``photo-``)."""
    data_dir = Path(data_dir or config.data_dir())
    classes = {f"clipart-{k}": v for k, v in clipart_classes(min_images, data_dir).items()}
    classes.update({f"photo-{k}": v for k, v in stamps_photo_classes(min_images, data_dir).items()})
    return _build_classes(data_dir / f"many_classes_min{min_images}", classes, "many classes")


def _package_folders(root: Path, prefix: str) -> dict[str, Path]:
    """``prefix/<path>`` -> folder, for every folder under ``root`` (the root itself left out)."""
    return {f"{prefix}/{p.relative_to(root).as_posix()}": p for p in sorted(root.rglob("*")) if p.is_dir()}


def folded_classes(folders: dict[str, Path], min_images: int, content_key=None) -> dict[str, list[Path]]:
    """Label -> unique PNGs, each image under the most specific folder that holds ``min_images``.

    ``folders`` maps slash-separated names (``"clipart/animals/birds"``) to folders. A folder with
    fewer than ``min_images`` images is folded into its parent folder (deepest first, again until
    nothing changes); a file filed under a folder and one of its ancestors belongs to the deepest;
    a file whose copies sit in unrelated folders is dropped, since its label is ambiguous.
    Copies are found by ``content_key(path)`` (default: the file's bytes); a key of None leaves
    the image out, before counting.
    """
    owners = defaultdict(dict)  # content digest -> {folder name: its first copy there}
    for name, folder in sorted(folders.items()):
        for png in sorted(folder.glob("*.png")):
            key = content_key(png) if content_key else hashlib.sha256(png.read_bytes()).hexdigest()
            if key is not None:
                owners[key].setdefault(name, png)

    def parent(name: str) -> str | None:
        head, _, _ = name.rpartition("/")
        return head if head in folders else None

    def within(name: str, ancestor: str) -> bool:
        return name == ancestor or name.startswith(ancestor + "/")

    placed = {}  # digest -> (its deepest folder, that folder's copy), for files whose folders form one chain
    for digest, copies in owners.items():
        deepest = max(copies, key=lambda name: name.count("/"))
        if all(within(deepest, name) for name in copies):
            placed[digest] = (deepest, copies[deepest])
    labels = set(folders)
    while True:
        members = defaultdict(list)
        for name, png in placed.values():
            while name is not None and name not in labels:
                name = parent(name)
            if name is not None:
                members[name].append(png)
        small = [name for name in labels if len(members[name]) < min_images]
        if not small:
            return {name: sorted(members[name]) for name in sorted(labels)}
        depth = max(name.count("/") for name in small)
        labels -= {name for name in small if name.count("/") == depth}


def many_classes_150(min_images: int = 8, data_dir: str | Path | None = None) -> Path:
    """The tutorial's own scale, about 150 labels: every folder of ``openclipart-png`` and of
    ``tuxpaint-stamps-default`` (photos and drawings) with at least ``min_images`` unique images.

    Smaller folders are folded into their parents (see ``folded_classes``); copies are found by
    the image written (two PNG files of the same picture are one image). Labels are the folder
    paths, ``clipart-animals_birds``, ``stamps-food_fruit_cartoon``; file names keep the sub-folder
    an image came from, so no two images collide. The 117-label ``many_classes`` is unchanged.
    Used by ``bench/many_classes.py`` (the seed's scenario) and ``notebooks/09_many_classes.ipynb``.
    """
    data_dir = Path(data_dir or config.data_dir())
    destination = data_dir / f"many_classes_150_min{min_images}"
    if (destination / COMPLETE).is_file():
        return destination
    clipart_root = debian_package_root(CLIPART_PACKAGE, CLIPART_ROOT, data_dir)
    stamps_root = debian_package_root(STAMPS_PACKAGE, STAMPS_ROOT, data_dir)
    folders = {**_package_folders(clipart_root, "clipart"), **_package_folders(stamps_root, "stamps")}
    jpegs = {}  # PNG -> the JPEG written for it: two PNGs that give the same JPEG are the same image
    skipped = []
    bar = tqdm(total=sum(len(list(f.glob("*.png"))) for f in folders.values()), desc="many classes (150)")

    def content_key(png: Path) -> str | None:
        bar.update()
        try:
            jpegs[png] = _jpeg_on_white(png)
        except ValueError as error:  # e.g. a possible decompression bomb
            skipped.append(f"{png}: {error}")
            return None
        return hashlib.sha256(jpegs[png]).hexdigest()

    classes = folded_classes(folders, min_images, content_key)
    bar.close()

    def write(folder: Path) -> None:
        for name, pngs in classes.items():
            source, _, path = name.partition("/")
            label_folder = folder / f"{source}-{path.replace('/', '_')}"
            label_folder.mkdir()
            for png in pngs:
                inside = png.relative_to(folders[name]).with_suffix(".jpg").as_posix().replace("/", "__")
                (label_folder / inside).write_bytes(jpegs[png])
        _write_skipped(folder, skipped)

    built = _build_folder(destination, write)
    _say_skipped(destination, len(skipped))
    return built


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as file:
        data = file.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(per_class: int | None = None, data_dir: str | Path | None = None) -> Path:
    """Fashion-MNIST (train and test pooled) as PNGs, ``per_class`` images a label (all 7,000 by default)."""
    data_dir = Path(data_dir or config.data_dir())
    source = debian_package_root(FASHION_PACKAGE, FASHION_ROOT, data_dir)

    def write(folder: Path) -> None:
        for label in FASHION_CLASSES:
            (folder / label).mkdir()
        written = dict.fromkeys(range(len(FASHION_CLASSES)), 0)
        for part in ("train", "t10k"):
            images = _read_idx(source / f"{part}-images-idx3-ubyte.gz")
            labels = _read_idx(source / f"{part}-labels-idx1-ubyte.gz")
            for index, (image, label) in enumerate(
                tqdm(list(zip(images, labels, strict=True)), desc=f"fashion-mnist {part}")
            ):
                if per_class is not None and written[label] >= per_class:
                    continue
                Image.fromarray(image, "L").save(folder / FASHION_CLASSES[label] / f"{part}_{index:05d}.png")
                written[label] += 1

    suffix = "" if per_class is None else f"_{per_class}"
    return _build_folder(data_dir / f"fashion_mnist{suffix}", write)


def flowers(data_dir: str | Path | None = None, url: str = FLOWERS_URL, expected_hash: str = FLOWERS_SHA256) -> Path:
    """The tutorial's flower_photos (3,670 JPEGs, 5 labels), downloaded once (hash-checked) into the data folder."""
    data_dir = Path(data_dir or config.data_dir())
    archive = download(url, data_dir / "downloads" / Path(url).name, expected_hash)

    def write(folder: Path) -> None:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")  # refuses absolute paths, '..' and links out
        inner = [p for p in folder.iterdir() if p.is_dir()]
        if len(inner) == 1:  # the archive holds one top folder: flower_photos/<label>/...
            for item in inner[0].iterdir():
                os.replace(item, folder / item.name)
            inner[0].rmdir()

    return _build_folder(data_dir / "flowers", write)


DATASETS = {
    "stamps": stamps,
    "clipart": clipart,
    "many_classes": many_classes,
    "many_classes_150": many_classes_150,
    "fashion_mnist": fashion_mnist,
    "flowers": flowers,
}


@command_line  # exit codes: tlcourse.errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlcourse.datasets", description="Prepare a course dataset.")
    parser.add_argument("name", choices=sorted(DATASETS))
    args = parser.parse_args(argv)
    folder = DATASETS[args.name]()
    labels = sorted(p.name for p in folder.iterdir() if p.is_dir())
    images = sum(1 for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE)
    print(f"{args.name}: {images} images in {len(labels)} labels at {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
