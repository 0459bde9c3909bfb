"""Label new images with a retrained model: the course's ``label_image.py``.

Reads the frozen graph (``.pb``), a SavedModel folder or a ``.keras`` file. Preprocessing is
inside every one of them, so it cannot differ from training. A bad image gets its own clear
error and the others are still labelled.

Shell: ``python label_image.py IMAGE_OR_FOLDER ... [--graph G] [--labels L] [--top_k 5] [--json]``.
Taught in ``notebooks/04_label_new_images.ipynb``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import tlcourse.backbones  # noqa: F401  (registers the preprocessing layer that .keras models hold)
from tlcourse.data import walk_files
from tlcourse.images import ImageError, load_image

DEFAULT_GRAPH = "retrained_graph.pb"
DEFAULT_LABELS = "retrained_labels.txt"


@dataclass
class Labelled:
    path: Path
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict:
        if self.error:
            return {"image": str(self.path), "error": self.error}
        return {"image": str(self.path), "top": [{"label": label, "score": score} for label, score in self.top]}


def read_labels(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        hint = "pass --labels (retrain writes it with --output_labels)"
        raise FileNotFoundError(f"{path}: labels file not found; {hint}")
    return [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_classifier(path: str | Path, final_tensor_name: str = "final_result"):
    """A function: uint8 images ``[batch, h, w, 3]`` -> probabilities, from any of the exported formats."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model not found; pass --graph (retrain writes it with --output_graph)")
    if path.is_dir():  # SavedModel
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return lambda images: next(iter(serve(image=tf.constant(images)).values())).numpy()
    if path.suffix == ".keras":
        model = keras.models.load_model(path, safe_mode=True)
        return lambda images: model(images, training=False).numpy()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as error:
        raise ValueError(f"{path}: not a TensorFlow GraphDef ({error}); is this the file retrain wrote?") from None
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    run = wrapped.prune(feeds="image:0", fetches=f"{final_tensor_name}:0")
    return lambda images: run(tf.constant(images)).numpy()


def image_paths(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and the files inside folders (recursively, hidden files skipped)."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += list(walk_files(item))
        else:
            paths.append(item)
    return paths


def top_k_labels(classify, image, class_names: list[str], top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` (label, probability) pairs for one uint8 RGB image."""
    probabilities = classify(image[None])[0]
    if len(probabilities) != len(class_names):
        raise ValueError(f"the model has {len(probabilities)} outputs but the labels file has {len(class_names)}")
    return [(class_names[i], float(probabilities[i])) for i in np.argsort(-probabilities)[:top_k]]


def label_images(inputs, graph=DEFAULT_GRAPH, labels=DEFAULT_LABELS, top_k: int = 5, final_tensor_name="final_result"):
    """Top-k (label, score) for every image in ``inputs``; unreadable images carry an ``error``."""
    class_names = read_labels(labels)
    classify = load_classifier(graph, final_tensor_name)
    results = []
    for path in image_paths(inputs):
        try:
            image = load_image(path)
        except ImageError as error:
            results.append(Labelled(path, error=str(error)))
            continue
        results.append(Labelled(path, top_k_labels(classify, image, class_names, top_k)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="label_image.py", description="Label images with a retrained model.")
    parser.add_argument("images", nargs="*", help="image files or folders")
    parser.add_argument("--image", action="append", default=[], help="an image (the classic flag; repeatable)")
    parser.add_argument("--graph", default=DEFAULT_GRAPH, help="frozen .pb, SavedModel folder or .keras file")
    parser.add_argument("--labels", default=DEFAULT_LABELS, help="labels file written by retrain")
    parser.add_argument("--top_k", type=int, default=5, help="how many labels to print per image")
    parser.add_argument("--output_layer", default="final_result", help="output tensor name of a frozen graph")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    inputs = args.images + args.image
    if not inputs:
        parser.error("give at least one image or folder, e.g.: python label_image.py image_name.jpg")
    try:
        results = label_images(inputs, args.graph, args.labels, args.top_k, args.output_layer)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([result.to_json() for result in results], indent=2))
    else:
        for result in results:
            if result.error:
                print(f"{result.path}: error: {result.error}", file=sys.stderr)
                continue
            print(result.path)
            for label, score in result.top:
                print(f"  {label} (score = {score:.5f})")
    return 1 if any(result.error for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
