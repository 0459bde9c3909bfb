"""Turn a folder with one sub-folder per label into a checked, split list of images.

- Images are recognised by content (JPEG, PNG, GIF, BMP, WebP, TIFF), whatever their extension;
  hidden files and OS debris are ignored; every other file is reported with a reason and skipped.
- Labels are the folder names as written; two that differ only by case or Unicode form are an error.
- The split is a stable function of the file's path inside its label folder (retrain.py's idea,
  ``_nohash_`` included): adding or removing other images never moves an image between splits,
  and moving the dataset folder changes nothing.
- Identical files are found by content: a copy inside one label is kept once; a file that sits in
  two labels is kept in neither, since it cannot belong to both.

Taught in ``notebooks/01_prepare_dataset.ipynb``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import unicodedata
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tlcourse.errors import TLCourseError
from tlcourse.images import ACCEPTED_FORMATS, MAX_PIXELS

SPLITS = ("train", "validation", "test")
DEBRIS = {".ds_store", "thumbs.db", "desktop.ini", "icon\r"}
MAX_NUM_IMAGES_PER_CLASS = 2**27 - 1  # ~134M, as in retrain.py: the hash resolution of the split


class ImageFolderError(TLCourseError, ValueError):
    """A folder of images that cannot be used as given (not a folder, too few labels, clashing labels)."""


@dataclass(frozen=True)
class ImageRecord:
    path: Path  # absolute
    label: str
    relative: str  # path inside the label folder, with '/' separators: what the split hashes
    sha256: str  # content hash: the bottleneck cache key
    split: str


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass
class Dataset:
    """A scanned dataset: labels in output order, usable images, and every file that was skipped."""

    root: Path
    class_names: list[str]
    images: list[ImageRecord]
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings worth showing to the learner
    validation_percentage: float = 10.0
    testing_percentage: float = 10.0

    def split(self, name: str) -> list[ImageRecord]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        return [record for record in self.images if record.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Label -> split -> number of images."""
        table = {label: dict.fromkeys(SPLITS, 0) for label in self.class_names}
        for record in self.images:
            table[record.label][record.split] += 1
        return table

    def summary(self) -> str:
        """A plain-text table: images per label and split, then skipped files and notes."""
        width = max([len(label) for label in self.class_names] + [5])
        lines = [f"{'label':<{width}}  {'train':>6}  {'valid':>6}  {'test':>6}  {'total':>6}"]
        totals = dict.fromkeys(SPLITS, 0)
        for label, row in self.counts().items():
            lines.append(
                f"{label:<{width}}  " + "  ".join(f"{row[s]:>6}" for s in SPLITS) + f"  {sum(row.values()):>6}"
            )
            for split in SPLITS:
                totals[split] += row[split]
        lines.append(
            f"{'total':<{width}}  " + "  ".join(f"{totals[s]:>6}" for s in SPLITS) + f"  {len(self.images):>6}"
        )
        if self.skipped:
            lines.append(f"\n{len(self.skipped)} file(s) skipped:")
            lines += [f"  {item.path}: {item.reason}" for item in self.skipped]
        if self.notes:
            lines.append("")
            lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def normalise_label(name: str) -> str:
    """What two label names must not share: 'Cat' and 'cat' (or two Unicode spellings) collide."""
    return unicodedata.normalize("NFKC", name).casefold().strip()


def split_for(relative: str, validation_percentage: float, testing_percentage: float) -> str:
    """The split of an image, from its path inside its label folder alone (retrain.py's rule)."""
    percentage = _hash_position(relative)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "test"
    return "train"


def is_ignored(name: str) -> bool:
    return name.startswith(".") or name.casefold() in DEBRIS


def walk_files(folder: Path):
    """Every file below ``folder``, following links to folders once (a link loop is not followed twice)."""
    seen = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not is_ignored(d))
        for name in sorted(files):
            if not is_ignored(name):
                yield Path(current) / name


def image_paths(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and the files inside folders (recursively, hidden files skipped)."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += list(walk_files(item))
        else:
            paths.append(item)
    return paths


def check_image_file(path: Path) -> str | None:
    """None if ``path`` looks like a usable image from its header, else the reason it is not.

    Only the header is read here, so a scan is fast; a file that is damaged further in is caught
    when its pixels are decoded (bottleneck caching) and reported there.
    """
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes); remove it"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format not in ACCEPTED_FORMATS:
                    return f"{image.format} images are not supported; convert it to JPEG or PNG"
                if image.width * image.height > MAX_PIXELS:
                    pixels = f"{image.width}x{image.height} pixels"
                    return f"{pixels} is over the {MAX_PIXELS:,}-pixel limit (possible decompression bomb)"
    except Image.DecompressionBombError:
        return "refused as a possible decompression bomb (too many pixels)"
    except Image.UnidentifiedImageError:
        return "not an image (by its content); remove it or replace it with a JPEG or PNG"
    except PermissionError:
        return "permission denied; check the file's permissions"
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    return None


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scan_dataset(root: str | Path, validation_percentage: float = 10.0, testing_percentage: float = 10.0) -> Dataset:
    """Scan ``root`` (one sub-folder per label) into a ``Dataset``; see the module docstring."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageFolderError(f"{root}: not a folder. Point image_dir at a folder with one sub-folder per label.")
    if not (
        0 <= validation_percentage and 0 <= testing_percentage and validation_percentage + testing_percentage < 100
    ):
        raise ImageFolderError(
            f"{root}: validation and testing percentages must be >= 0 and add up to less than 100 "
            f"(got {validation_percentage:g} and {testing_percentage:g})"
        )
    root = root.resolve()
    label_folders = sorted((p for p in root.iterdir() if p.is_dir() and not is_ignored(p.name)), key=lambda p: p.name)
    skipped, notes = [], []
    for stray in sorted(p for p in root.iterdir() if p.is_file() and not is_ignored(p.name)):
        skipped.append(SkippedFile(stray, "not inside a label folder; move it into one"))

    by_normal = defaultdict(list)
    for folder in label_folders:
        by_normal[normalise_label(folder.name)].append(folder.name)
    clashes = [names for names in by_normal.values() if len(names) > 1]
    if clashes:
        described = "; ".join(" and ".join(repr(n) for n in names) for names in clashes)
        raise ImageFolderError(
            f"{root}: label folders {described} differ only by case or spelling; merge or rename them."
        )

    candidates = []  # (label, path, relative, sha256)
    for folder in label_folders:
        for path in walk_files(folder):
            reason = check_image_file(path)
            if reason:
                skipped.append(SkippedFile(path, reason))
                continue
            candidates.append((folder.name, path, path.relative_to(folder).as_posix(), _content_hash(path)))

    # The same bytes twice: once per label is kept, a file in two labels is kept in neither.
    labels_of = defaultdict(set)
    for label, _, _, digest in candidates:
        labels_of[digest].add(label)
    first_of = {}
    kept = []
    for label, path, relative, digest in candidates:
        if len(labels_of[digest]) > 1:
            others = ", ".join(sorted(labels_of[digest] - {label}))
            skipped.append(SkippedFile(path, f"the same image is also in label(s) {others}; keep it in one label only"))
        elif digest in first_of:
            skipped.append(SkippedFile(path, f"duplicate of {first_of[digest]}; kept once"))
        else:
            first_of[digest] = path
            kept.append((label, path, relative, digest))

    records = [
        ImageRecord(path, label, relative, digest, split_for(relative, validation_percentage, testing_percentage))
        for label, path, relative, digest in kept
    ]
    records = _fill_empty_splits(records, validation_percentage, testing_percentage, notes)

    per_label = Counter(record.label for record in records)
    class_names = [folder.name for folder in label_folders if per_label[folder.name] > 0]
    for folder in label_folders:
        if per_label[folder.name] == 0:
            notes.append(f"label {folder.name!r} has no usable images and was left out")
    if len(class_names) < 2:
        raise ImageFolderError(
            f"{root}: found {len(class_names)} label(s) with usable images; a classifier needs at least 2. "
            "Put each label's images in its own sub-folder."
        )
    needed = _images_needed(validation_percentage, testing_percentage)
    for label in class_names:
        if per_label[label] < needed:
            notes.append(
                f"label {label!r} has {per_label[label]} images; with {validation_percentage:g}% validation and "
                f"{testing_percentage:g}% testing it needs at least {needed} for a stable split"
            )
    return Dataset(root, class_names, records, skipped, notes, validation_percentage, testing_percentage)


def _images_needed(validation_percentage: float, testing_percentage: float) -> int:
    smallest = min([p for p in (validation_percentage, testing_percentage) if p > 0], default=100)
    return max(3, math.ceil(100 / smallest))


def _fill_empty_splits(records, validation_percentage, testing_percentage, notes):
    """Give a label an image for an empty validation or test split, when it has 3 or more.

    The image borrowed from training is the one whose hash lies nearest the empty split's band,
    so the choice is stable too; it returns to training once the label grows enough to fill the
    split by itself.
    """
    wanted = [s for s, pct in (("validation", validation_percentage), ("test", testing_percentage)) if pct > 0]
    by_label = defaultdict(list)
    for record in records:
        by_label[record.label].append(record)
    result = []
    for label, items in by_label.items():
        present = {r.split for r in items}
        if len(items) >= 3:
            for split in wanted:
                train = sorted((r for r in items if r.split == "train"), key=lambda r: _hash_position(r.relative))
                if split not in present and len(train) > 1:
                    chosen = train[0]
                    items = [r if r is not chosen else dataclasses.replace(r, split=split) for r in items]
                    present.add(split)
                    notes.append(
                        f"label {label!r}: no image fell in the {split} split by hash; borrowed {chosen.relative}"
                    )
        elif any(pct > 0 for pct in (validation_percentage, testing_percentage)):
            notes.append(f"label {label!r} has only {len(items)} image(s): its validation or test split stays empty")
        result += items
    return result


def _hash_position(relative: str) -> float:
    """Where an image falls in [0, 100]: a hash of its name without any ``_nohash_`` suffix."""
    hash_name = re.sub(r"_nohash_.*$", "", relative)
    digest = int(hashlib.sha1(hash_name.encode("utf-8")).hexdigest(), 16)
    return (digest % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)
