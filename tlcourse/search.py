"""Image search from the command line: index a folder's bottlenecks, then find the images nearest a query.

    python -m tlcourse.search index FOLDER [--index search_index.npz] [--architecture efficientnet_lite0]
    python -m tlcourse.search query IMAGE_OR_FOLDER ... [--index search_index.npz] [--top_k 5] [--json]

The index holds one normalised bottleneck per image of the folder (computed through the bottleneck
cache, so an image already cached costs nothing), with the backbone's fingerprint; it is written
atomically. A query computes its images' bottlenecks with the same backbone and refuses an index
made by another one. Brute-force cosine similarity (``normalize``, ``nearest``; lesson 08's
classifiers in ``tlcourse.embeddings`` use them too): ``bench/embeddings.py`` measures how long a
query takes at 10,000 and 100,000 images. Taught in ``notebooks/08_embeddings.ipynb``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcourse import bottlenecks, config
from tlcourse.atomic import atomic_path
from tlcourse.backbones import load_backbone
from tlcourse.data import ImageFolderError, ImageRecord, SkippedFile, check_image_file, image_paths
from tlcourse.download import file_hash
from tlcourse.errors import TLCourseError, command_line

DEFAULT_INDEX = "search_index.npz"
CHUNK = 4096  # queries compared at once: a [CHUNK, N] block of similarities stays in memory


# --- Cosine similarity and the nearest images ----------------------------------------------------


def normalize(vectors) -> np.ndarray:
    """Each row divided by its length (float32): the dot product of two rows is then their cosine."""
    vectors = np.asarray(vectors, np.float32)
    lengths = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(lengths, 1e-12)


def nearest(
    queries, index_vectors, k: int, exclude_self: bool = False, normalized: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar rows of ``index_vectors`` for each query, by cosine similarity.

    Returns ``(indices [Q, k], similarities [Q, k])``, most similar first. Brute force: every query
    against every indexed vector, ``CHUNK`` queries at a time. ``exclude_self`` leaves out the
    query's own row when the queries are the index itself (leave-one-out). ``normalized`` says the
    index rows are unit vectors already (a ``SearchIndex``'s are), which saves a pass over them.
    """
    queries = normalize(np.atleast_2d(queries))
    index_vectors = np.atleast_2d(index_vectors) if normalized else normalize(np.atleast_2d(index_vectors))
    if queries.shape[1] != index_vectors.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} values each, the index {index_vectors.shape[1]}")
    k = min(int(k), len(index_vectors) - int(exclude_self))
    if k < 1:
        raise ValueError("the index holds no other image to compare with")
    all_indices, all_similarities = [], []
    for start in range(0, len(queries), CHUNK):
        similarities = queries[start : start + CHUNK] @ index_vectors.T
        if exclude_self:
            rows = np.arange(len(similarities))
            similarities[rows, rows + start] = -np.inf
        top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarities, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        all_indices.append(top)
        all_similarities.append(np.take_along_axis(similarities, top, axis=1))
    return np.concatenate(all_indices), np.concatenate(all_similarities)


# --- A search index on disk ------------------------------------------------------------------------------

INDEX_FORMAT = 1


class SearchIndexError(TLCourseError, ValueError):
    """A search index that cannot be used: damaged, another format, or made by another backbone."""


@dataclass
class SearchIndex:
    """Normalised bottlenecks of a folder's images, with the backbone that made them.

    ``paths`` are the images' paths as given when the index was built; ``sha256`` their content
    hashes (the bottleneck cache's keys); ``fingerprint`` the backbone's (``Backbone.fingerprint``):
    vectors of another backbone would be compared with nonsense, so ``check_backbone`` refuses them.
    """

    vectors: np.ndarray
    paths: list[str]
    sha256: list[str]
    backbone: str
    fingerprint: str
    source: str = "the index"  # the file it was loaded from, for messages

    def __post_init__(self):
        self.vectors = normalize(self.vectors)  # stored as unit vectors: a query is then one matrix product

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` (``.npz``) atomically: a killed run leaves the old index whole."""
        path = Path(path)
        header = {"format": INDEX_FORMAT, "backbone": self.backbone, "fingerprint": self.fingerprint}
        with atomic_path(path, keep_suffix=True) as temporary:
            with open(temporary, "wb") as file:
                np.savez(
                    file,
                    header=np.array(json.dumps(header)),
                    vectors=self.vectors,
                    paths=np.array(self.paths, dtype=str),
                    sha256=np.array(self.sha256, dtype=str),
                )
        return path

    @classmethod
    def load(cls, path: str | Path) -> SearchIndex:
        path = Path(path)
        if not path.is_file():
            hint = "build one with: python -m tlcourse.search index FOLDER"
            raise FileNotFoundError(f"{path}: no search index here; {hint}")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                vectors, paths, sha256 = data["vectors"], data["paths"].tolist(), data["sha256"].tolist()
        except Exception as error:  # zip, numpy and JSON errors alike: a damaged or foreign file, named
            raise SearchIndexError(
                f"{path}: not a search index this course can read ({type(error).__name__}: {error}); "
                f"build it again with: python -m tlcourse.search index FOLDER --index {path}"
            ) from error
        if header.get("format") != INDEX_FORMAT or not len(vectors) == len(paths) == len(sha256):
            found = header.get("format")
            raise SearchIndexError(f"{path}: index format {found!r}, expected {INDEX_FORMAT}; build the index again")
        return cls(vectors, paths, sha256, header["backbone"], header["fingerprint"], str(path))

    def check_backbone(self, backbone) -> None:
        """Refuse a backbone other than the one that made the index: its vectors mean other things."""
        if backbone.name != self.backbone or backbone.fingerprint != self.fingerprint:
            raise SearchIndexError(
                f"{self.source} was built with {self.backbone} (fingerprint {self.fingerprint}), but the backbone "
                f"here is {backbone.name} (fingerprint {backbone.fingerprint}): their vectors cannot be compared. "
                f"Query with --architecture {self.backbone} where that backbone is unchanged, or build the index "
                f"again with this one."
            )

    def query(self, vectors, k: int = 5) -> list[list[tuple[str, float]]]:
        """For each query vector, the ``k`` nearest indexed images as (path, cosine similarity)."""
        indices, similarities = nearest(vectors, self.vectors, k, normalized=True)
        return [
            [(self.paths[i], float(s)) for i, s in zip(row, scores, strict=True)]
            for row, scores in zip(indices, similarities, strict=True)
        ]


# --- The command line: index a folder, query it ----------------------------------------------------------


def bottlenecks_of(paths, backbone, bottleneck_dir=None, progress: bool = False):
    """(vectors [M, D], the M image records they belong to, skipped files): through the bottleneck cache."""
    bottleneck_dir = Path(bottleneck_dir or config.project_root() / "runs" / "bottlenecks")
    records, skipped = [], []
    for path in map(Path, paths):
        reason = "not found" if not path.is_file() else check_image_file(path)
        if reason:
            skipped.append(SkippedFile(path, reason))
            continue
        path = path.resolve()
        records.append(ImageRecord(path, "", path.name, file_hash(path), "train"))
    if progress:  # the cache's own report lists the images that fail to decode
        for item in skipped:
            print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
    report = bottlenecks.cache_bottlenecks(records, backbone, bottleneck_dir, progress=progress)
    skipped += report.failures
    vectors, kept = bottlenecks.load_bottlenecks(records, backbone, bottleneck_dir)
    return vectors, kept, skipped


def build_index(folder, backbone, bottleneck_dir=None, progress: bool = False) -> tuple[SearchIndex, list]:
    """The search index of every image below ``folder``, and the files left out (with why)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder; give the folder of images to index")
    vectors, records, skipped = bottlenecks_of(image_paths([folder]), backbone, bottleneck_dir, progress)
    if not records:
        raise ImageFolderError(f"{folder}: no usable image in this folder (JPEG, PNG, GIF, BMP or WebP files)")
    paths, sha256 = [str(record.path) for record in records], [record.sha256 for record in records]
    return SearchIndex(vectors, paths, sha256, backbone.name, backbone.fingerprint), skipped


def search(index: SearchIndex, inputs, backbone, top_k: int = 5, bottleneck_dir=None) -> list[dict]:
    """For each query image: ``{"image", "nearest": [{"image", "similarity"}, ...]}`` or ``{"image", "error"}``."""
    index.check_backbone(backbone)
    paths = image_paths(inputs)
    vectors, kept, skipped = bottlenecks_of(paths, backbone, bottleneck_dir)
    found = dict(zip([record.path for record in kept], index.query(vectors, top_k) if kept else [], strict=True))
    errors = {Path(item.path).resolve(): item.reason for item in skipped}
    results = []
    for path in paths:
        resolved = path.resolve()
        if resolved in found:
            neighbours = [{"image": image, "similarity": round(score, 6)} for image, score in found[resolved]]
            results.append({"image": str(path), "nearest": neighbours})
        else:
            results.append({"image": str(path), "error": errors.get(resolved, "could not be decoded")})
    return results


def index_beside(graph) -> Path:
    """Where ``label_image.py --explain`` looks for a model's index: ``search_index.npz`` in the model's folder."""
    return Path(graph).resolve().parent / DEFAULT_INDEX


def print_nearest_indexed(paths, graph, top_k: int = 3, as_json: bool = False) -> None:
    """``label_image.py --explain``: each image's ``top_k`` nearest images in the index beside the model.

    Make that index from the training images with ``python -m tlcourse.search index IMAGE_DIR --index
    MODEL_FOLDER/search_index.npz``. Text only: with ``as_json`` it prints nothing (the labels' JSON
    stays one document; ``python -m tlcourse.search query --json`` gives the neighbours as JSON).
    """
    if as_json:
        return
    path = index_beside(graph)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: --explain needs a search index beside the model; make it from the training images with: "
            f"python -m tlcourse.search index IMAGE_DIR --index {path}"
        )
    index = SearchIndex.load(path)
    results = search(index, paths, load_backbone(index.backbone), top_k)
    print(f"nearest images in {path}:")
    for result in results:
        if "nearest" in result:
            neighbours = ", ".join(f"{n['image']} ({n['similarity']:.3f})" for n in result["nearest"])
            print(f"  {result['image']}: {neighbours}")


@command_line  # exit codes: tlcourse.errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlcourse.search", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    index_parser = commands.add_parser("index", help="index the images of a folder")
    index_parser.add_argument("folder", help="folder of images (searched recursively)")
    index_parser.add_argument("--architecture", default=None, help="backbone (default: the course's default)")
    query_parser = commands.add_parser("query", help="find the indexed images nearest each query image")
    query_parser.add_argument("images", nargs="+", help="image files or folders")
    query_parser.add_argument("--top_k", type=int, default=5, help="how many nearest images to print per query")
    query_parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    query_parser.add_argument("--architecture", default=None, help="backbone (default: the one that made the index)")
    for sub in (index_parser, query_parser):
        sub.add_argument("--index", default=DEFAULT_INDEX, help=f"the index file (default {DEFAULT_INDEX})")
        sub.add_argument("--bottleneck_dir", default=None, help="bottleneck cache (default <project>/runs/bottlenecks)")
    args = parser.parse_args(argv)

    if args.command == "index":
        backbone = load_backbone(args.architecture)
        index, _ = build_index(args.folder, backbone, args.bottleneck_dir, progress=True)  # says what it skips
        index.save(args.index)
        print(f"{args.index}: {len(index.paths)} images indexed with {backbone.name} ({backbone.fingerprint})")
        return 0
    if args.top_k < 1:
        parser.error("--top_k must be at least 1")
    index = SearchIndex.load(args.index)
    backbone = load_backbone(args.architecture or index.backbone)
    results = search(index, args.images, backbone, args.top_k, args.bottleneck_dir)  # refuses another backbone
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            if "error" in result:
                print(f"{result['image']}: error: {result['error']}", file=sys.stderr)
                continue
            print(result["image"])
            for neighbour in result["nearest"]:
                print(f"  {neighbour['image']} (similarity = {neighbour['similarity']:.4f})")
    return 1 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
