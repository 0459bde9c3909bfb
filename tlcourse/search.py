"""Image search from the command line: index a folder's bottlenecks, then find the images nearest a query.

    python -m tlcourse.search index FOLDER [--index search_index.npz] [--architecture efficientnet_lite0]
    python -m tlcourse.search query IMAGE_OR_FOLDER ... [--index search_index.npz] [--top_k 5] [--json]

The index holds one normalised bottleneck per image of the folder (computed through the bottleneck
cache, so an image already cached costs nothing), with the backbone's fingerprint; it is written
atomically. A query computes its images' bottlenecks with the same backbone and refuses an index
made by another one. Brute-force cosine similarity: ``bench/embeddings.py`` measures how long a
query takes at 10,000 and 100,000 images. Taught in ``notebooks/08_embeddings.ipynb``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tlcourse import bottlenecks, config
from tlcourse.backbones import load_backbone
from tlcourse.data import ImageFolderError, ImageRecord, SkippedFile, check_image_file, image_paths
from tlcourse.download import file_hash
from tlcourse.embeddings import SearchIndex
from tlcourse.errors import command_line

DEFAULT_INDEX = "search_index.npz"


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
            nearest = [{"image": image, "similarity": round(score, 6)} for image, score in found[resolved]]
            results.append({"image": str(path), "nearest": nearest})
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
            nearest = ", ".join(f"{n['image']} ({n['similarity']:.3f})" for n in result["nearest"])
            print(f"  {result['image']}: {nearest}")


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
