"""Label new images with a retrained model: the course's ``label_image.py``.

Reads every model format (``tlcourse.formats``): the frozen graph (``.pb``), a SavedModel folder, a
``.keras`` file, or a ``.tflite`` file.
Preprocessing is inside the first three, so it cannot differ from training; a ``.tflite`` model
takes a fixed-size input, made by ``tlcourse.tflite.resize_for_model`` (the same preprocessing,
run just before the model, rounded to uint8). A bad image gets its own clear
error and the others are still labelled.

A folder is labelled the way bottlenecks are cached: images are decoded in parallel, each goes
through the model's own preprocessing half, and the network half runs on whole batches, by LiteRT
where that is the faster engine (``hardware.default_engine``; the conversion is kept in the model
folder, keyed by the model file's hash). It does a little more work than caching (the new layer,
the top-k sort): ``bench/performance.py`` measures labelling against the caching rate on small
photos, and lesson 05 measures both in one cell.

Shell: ``python label_image.py IMAGE_OR_FOLDER ... [--graph G] [--labels L] [--top_k 5] [--json]``.
``--threshold P`` answers "unknown" when the top score is not above ``P`` (chosen on validation
in ``notebooks/12_unknown_images.ipynb``). Taught in ``notebooks/05_label_new_images.ipynb``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tlcourse import config, formats, litert, safe_graph
from tlcourse.calibration import check_threshold
from tlcourse.data import image_paths
from tlcourse.download import content_hash
from tlcourse.errors import ModelFileError, TLCourseError, UsageError, command_line
from tlcourse.formats import Classifier, LiteRTLabeller, ModelFunction
from tlcourse.images import ImageError, load_image
from tlcourse.preprocessing import FITS, PREPROCESSINGS, Preprocessing, numpy_preprocess
from tlcourse.quiet import import_tensorflow

# TensorFlow (and Keras) are imported only where a model needs them: importing them takes longer
# than labelling an image, and a .tflite model or a kept LiteRT conversion needs neither.

DEFAULT_GRAPH = "retrained_graph.pb"
DEFAULT_LABELS = "retrained_labels.txt"
KEPT_CONVERSIONS = 4  # LiteRT conversions of labelled models kept in the model folder (each as big as its model)


@dataclass
class Labelled:
    path: Path
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    unknown: bool | None = None  # with a threshold: True when the top score is not above it

    def to_json(self) -> dict:
        if self.error:
            return {"image": str(self.path), "error": self.error}
        result = {"image": str(self.path), "top": [{"label": label, "score": score} for label, score in self.top]}
        if self.unknown is not None:
            result["unknown"] = self.unknown
        return result


def read_labels(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        hint = "pass --labels (retrain writes it with --output_labels)"
        raise FileNotFoundError(f"{path}: labels file not found; {hint}")
    return [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_classifier(path: str | Path, final_tensor_name: str = "final_result") -> Classifier:
    """The model at ``path``, from any of the exported formats; ``ModelFileError`` naming it if damaged."""
    return _read_model(formats.load, Path(path), final_tensor_name)


def _read_model(load: Callable, path: Path, final_tensor_name: str):
    """``load(path, final_tensor_name)``, its failures as a ``FileNotFoundError`` or a ``ModelFileError`` naming it."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: model not found; pass --graph (retrain writes it with --output_graph)")
    try:
        return load(path, final_tensor_name)
    except TLCourseError:  # already says what is wrong (damaged, or refused as unsafe by tlcourse.safe_graph)
        raise
    except Exception as error:  # TensorFlow, Keras and zip errors alike: a damaged or foreign file, named
        kind = "SavedModel folder" if path.is_dir() else f"{path.suffix or 'frozen graph'} model file"
        graph = formats.format_of(path) is formats.GRAPH  # the only format whose output --output_layer names
        hint = f" (or --output_layer={final_tensor_name} names no tensor in it)" if graph else ""
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ModelFileError(
            f"{path}: this {kind} cannot be read{hint} ({type(error).__name__}: {reason}). It may be damaged or "
            f"incomplete: write it again with retrain.py, or pass the file retrain wrote (--output_graph)."
        ) from error


def kept_conversion(path: Path) -> Path:
    """Where the LiteRT conversion of the model at ``path`` (a file, or a SavedModel folder) is kept.

    Named by the model's content (``content_hash``: a folder hashes every file in it), so a model
    written again under the same name is converted again.
    """
    return config.models_dir() / "labelling" / f"{content_hash(path)[:16]}-v{litert.LITERT_VERSION}.litert"


def on_litert(classifier: Classifier, path: Path, final_tensor_name: str = "final_result") -> Callable | None:
    """``classifier.classify_preprocessed`` run by LiteRT, where that is this machine's faster engine; else None.

    The conversion (seconds) is kept in the model folder under the model's hash, so it is made
    once per model file or SavedModel (the ``KEPT_CONVERSIONS`` last used are kept, older ones removed),
    with the model's preprocessing beside it when ``numpy_preprocess`` reproduces it: later runs
    then label without TensorFlow (``litert_labeller``). A model LiteRT cannot convert is labelled
    by TensorFlow, with a warning. A model that computes in bfloat16 (trained under the
    ``mixed_bfloat16`` policy) is converted as its float32 copy (``litert``): LiteRT has no
    bfloat16 kernels.
    """
    from tlcourse import hardware

    if not isinstance(classifier.classify_preprocessed, ModelFunction) or hardware.default_engine()[0] != "litert":
        return None
    kept = kept_conversion(path)
    try:
        network = litert.LiteRTNetwork(classifier.classify_preprocessed, kept, source=path)
    except safe_graph.UnsafeModelError:
        raise
    except Exception as error:
        warnings.warn(f"{path}: LiteRT could not convert the model ({error}); labelling with TensorFlow", stacklevel=2)
        return None
    preprocessing = _checked_preprocessing(classifier, network.input_size)
    if preprocessing is not None and not kept.with_suffix(".json").is_file():
        from tlcourse.atomic import atomic_path

        about = {"preprocessing": dataclasses.asdict(preprocessing), "final_tensor_name": final_tensor_name}
        with atomic_path(kept.with_suffix(".json"), keep_suffix=True) as temporary:
            temporary.write_text(json.dumps(about), encoding="utf-8")
    kept.touch()  # used now: the last to go
    for old in sorted(kept.parent.glob("*.litert"), key=lambda p: p.stat().st_mtime)[:-KEPT_CONVERSIONS]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return network


def _checked_preprocessing(classifier: Classifier, size: int) -> Preprocessing | None:
    """The course preprocessing of input ``size`` (either fit) that gives what the model's own first half gives,
    if one does."""
    candidates = [p.fitted(fit) for p in PREPROCESSINGS.values() for fit in FITS if p.size == size]
    if not candidates:  # not a course backbone's input size
        return None
    rng = np.random.default_rng(0)
    sides = [(size * 2 + 37, size * 2), (size // 2, size // 2 + 11)]  # shrunk, then enlarged
    images = [rng.integers(0, 256, (height, width, 3), np.uint8) for height, width in sides]
    expected = [np.asarray(classifier.preprocess(image[None]))[0] for image in images]
    for preprocessing in candidates:
        differences = [
            np.abs(numpy_preprocess(image, preprocessing) - own).max()
            for image, own in zip(images, expected, strict=True)
        ]
        if max(differences) <= 1e-4:
            return preprocessing
    return None


def litert_labeller(path: Path, final_tensor_name: str = "final_result") -> LiteRTLabeller | None:
    """A ``.tflite`` model, or the kept LiteRT conversion of a model file and output, with its preprocessing."""
    model_format = formats.format_of(path)
    if model_format.labeller is not None:  # a .tflite file
        return model_format.labeller(path)
    kept = kept_conversion(path)
    if not kept.with_suffix(".json").is_file() or litert.read_kept(kept) is None:
        return None
    try:
        about = json.loads(kept.with_suffix(".json").read_text(encoding="utf-8"))
        preprocessing = Preprocessing(**about["preprocessing"])
    except (ValueError, TypeError, KeyError):  # damaged: TensorFlow labels it (the file is written again)
        kept.with_suffix(".json").unlink(missing_ok=True)
        return None
    if about.get("final_tensor_name") != final_tensor_name:  # converted for another output
        return None
    network = litert.LiteRTNetwork(None, kept)
    return LiteRTLabeller(functools.partial(numpy_preprocess, preprocessing=preprocessing), network)


def _top_k(probabilities, class_names: list[str], top_k: int) -> list[tuple[str, float]]:
    probabilities = np.asarray(probabilities)
    if len(probabilities) != len(class_names):
        raise ValueError(f"the model has {len(probabilities)} outputs but the labels file has {len(class_names)}")
    return [(class_names[i], float(probabilities[i])) for i in np.argsort(-probabilities)[:top_k]]


def top_k_labels(classify, image, class_names: list[str], top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` (label, probability) pairs for one uint8 RGB image."""
    return _top_k(classify(image[None])[0], class_names, top_k)


def label_images(
    inputs,
    graph=DEFAULT_GRAPH,
    labels=None,
    top_k: int = 5,
    final_tensor_name="final_result",
    batch_size: int = 32,
    progress: bool = False,
    threshold: float | None = None,
) -> list[Labelled]:
    """Top-k (label, score) for every image in ``inputs``, in order; unreadable images carry an ``error``.

    With a ``threshold`` (0 to 1), each result's ``unknown`` says whether its top score is not above it.
    ``labels``: the labels file; None takes those packed in a .tflite model, else ``DEFAULT_LABELS``.
    """
    if threshold is not None:
        threshold = check_threshold(threshold)
    class_names = None if labels is None else read_labels(labels)
    labels_source = labels  # named when the labels do not fit the model
    results = [Labelled(path) for path in image_paths(inputs)]
    labeller = _read_model(litert_labeller, Path(graph), final_tensor_name)
    if class_names is None:  # the labels packed in a .tflite model, else the classic default file
        packed = labeller.labels if labeller is not None else None
        labels_source = "the labels packed in the model" if packed else DEFAULT_LABELS
        class_names = packed or read_labels(DEFAULT_LABELS)
    errors: dict[str, str] = {}
    if labeller is not None:
        batches = _litert_batches(results, labeller, batch_size, errors)
    else:
        batches = _tensorflow_batches(results, Path(graph), final_tensor_name, batch_size, errors)
    with tqdm(total=len(results), unit="img", desc="labelling", disable=not progress or len(results) < 2) as bar:
        for indices, probabilities in batches:
            probabilities = np.asarray(probabilities)
            if probabilities.shape[1] != len(class_names):
                outputs = probabilities.shape[1]
                raise ModelFileError(
                    f"{graph}: the model has {outputs} outputs but {labels_source} lists {len(class_names)} labels; "
                    "pass the labels file retrain wrote with this model (--labels)"
                )
            for index, row in zip(indices, probabilities, strict=True):
                results[index].top = _top_k(row, class_names, top_k)
                if threshold is not None:
                    results[index].unknown = bool(np.max(row) <= threshold)
            bar.update(len(indices))
    for result in results:
        result.error = errors.get(str(result.path))
    return results


def _litert_batches(results: list[Labelled], labeller: LiteRTLabeller, batch_size: int, errors: dict):
    """(indices, probabilities) batches by LiteRT, images decoded and prepared on every core: no TensorFlow."""

    def prepare(index: int):
        try:
            return index, labeller.prepare(load_image(results[index].path))
        except ImageError as error:
            errors[str(results[index].path)] = str(error)
            return index, None

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in range(0, len(results), batch_size):
            chunk = range(start, min(start + batch_size, len(results)))
            prepared = [(index, image) for index, image in pool.map(prepare, chunk) if image is not None]
            if prepared:
                yield [index for index, _ in prepared], labeller.classify(np.stack([image for _, image in prepared]))


def _tensorflow_batches(results: list[Labelled], graph: Path, final_tensor_name: str, batch_size: int, errors: dict):
    """(indices, probabilities) batches by the model file's own TensorFlow functions (or LiteRT, once converted)."""
    tf = import_tensorflow()  # without its start-up notes

    from tlcourse.bottlenecks import image_pipeline

    classifier = load_classifier(graph, final_tensor_name)
    if classifier.preprocess is None:  # a graph without its halves: whole model, one image at a time
        preprocess, classify, batch_size = tf.identity, classifier.classify, 1
    else:
        preprocess, classify = classifier.preprocess, classifier.classify_preprocessed
        if len(results) >= batch_size:  # enough images to repay a first conversion
            classify = on_litert(classifier, graph, final_tensor_name) or classify
    for indices, images in image_pipeline(
        [os.fsencode(result.path) for result in results], preprocess, batch_size, errors
    ):
        yield indices.numpy(), classify(images)


def _probability(text: str) -> float:
    try:
        return check_threshold(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1 (e.g. 0.6), not {text!r}") from None


@command_line  # exit codes: tlcourse.errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="label_image.py", description="Label images with a retrained model.")
    parser.add_argument("images", nargs="*", help="image files or folders")
    parser.add_argument("--image", action="append", default=[], help="an image (the classic flag; repeatable)")
    parser.add_argument("--graph", default=DEFAULT_GRAPH, help="frozen .pb, SavedModel folder, .keras or .tflite file")
    parser.add_argument(
        "--labels",
        default=None,
        help=f"labels file written by retrain (default: those packed in a .tflite model, else {DEFAULT_LABELS})",
    )
    parser.add_argument("--top_k", type=int, default=5, help="how many labels to print per image")
    parser.add_argument("--output_layer", default="final_result", help="output tensor name of a frozen graph")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument(
        "--threshold",
        type=_probability,
        default=None,
        metavar="P",
        help="answer 'unknown' when the top score is not above P (0 to 1; choose it on validation images)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also print each image's nearest training images "
        "(text output; needs the model folder's search_index.npz: python -m tlcourse.search index)",
    )
    args = parser.parse_args(argv)
    inputs = args.images + args.image
    if not inputs:
        parser.error("give at least one image or folder, e.g.: python label_image.py image_name.jpg")
    paths = image_paths(inputs)
    if not paths:
        raise UsageError(f"no files in {', '.join(inputs)}; give image files or folders that hold them")
    results = label_images(
        paths, args.graph, args.labels, args.top_k, args.output_layer, progress=True, threshold=args.threshold
    )
    if args.json:
        print(json.dumps([result.to_json() for result in results], indent=2))
    else:
        for result in results:
            if result.error:
                print(f"{result.path}: error: {result.error}", file=sys.stderr)
                continue
            print(result.path)
            if result.unknown:
                print(f"  unknown (the top score is not above the threshold {args.threshold:g})")
            for label, score in result.top:
                print(f"  {label} (score = {score:.5f})")
    if args.explain:
        from tlcourse import search  # imports TensorFlow: loaded only when asked

        search.print_nearest_indexed(paths, args.graph, as_json=args.json)
    return 1 if any(result.error for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
