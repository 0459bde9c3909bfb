"""Helpers that keep each notebook self-contained.

The set-up report at the top of every lesson (``setup``, ``environment``, and which backbones and
datasets are usable here), "predict, then run" (``reveal``), where a lesson writes its files
(``notebook_run_dir``), and ``ensure_retrained_model``, which rebuilds lesson 03's model when no
earlier lesson has left it. Graded exercises are in ``tlcourse.exercises``.
"""

from __future__ import annotations

import platform
import re
import shutil
from pathlib import Path

from tlcourse import config


def environment() -> dict[str, str]:
    """Versions, and whether TensorFlow sees a GPU."""
    import keras  # here: TensorFlow loads only when asked
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "device": f"GPU: {', '.join(g.name for g in gpus)}" if gpus else "CPU only (fine for this course)",
        "project root": str(config.project_root()),
    }


def setup() -> None:
    """The one-line report at the top of every notebook (TensorFlow's start-up lines, its CUDA probe, hidden)."""
    from tlcourse.quiet import quiet

    with quiet():  # importing TensorFlow and asking it for devices
        info = environment()
    print(f"tlcourse ready: TensorFlow {info['tensorflow']}, Keras {info['keras']}, {info['device']}")


def backbone_availability(model_dir: str | Path | None = None) -> dict[str, str]:
    """Backbone name -> whether it can be used here, and how."""
    from tlcourse import backbones

    model_dir = Path(model_dir or config.models_dir())
    return {name: spec.availability(spec, model_dir) for name, spec in backbones.REGISTRY.items()}


def dataset_availability(data_dir: str | Path | None = None) -> dict[str, str]:
    """Dataset name -> whether it is ready, can be fetched here, or needs the network."""
    from tlcourse import datasets

    data_dir = Path(data_dir or config.data_dir())
    apt = shutil.which("apt-get") is not None
    packages = {
        "stamps": datasets.STAMPS_PACKAGE,
        "clipart": datasets.CLIPART_PACKAGE,
        "many_classes": f"{datasets.CLIPART_PACKAGE} and {datasets.STAMPS_PACKAGE}",
        "many_classes_150": f"{datasets.CLIPART_PACKAGE} and {datasets.STAMPS_PACKAGE}",
        "fashion_mnist": datasets.FASHION_PACKAGE,
    }
    status = {}
    for name in datasets.DATASETS:
        # the dataset's own folders only ("many_classes_min10", not "many_classes_150_min8")
        own = re.compile(rf"{re.escape(name)}(_min\d+|_\d+)?")
        built = [p for p in data_dir.glob(f"{name}*") if own.fullmatch(p.name) and (p / datasets.COMPLETE).is_file()]
        if built:
            status[name] = f"ready at {built[0]}"
        elif name in packages:
            status[name] = f"from Debian {packages[name]}" + ("" if apt else " (needs apt-get: Linux)")
        else:
            status[name] = "online only: downloads on first use"
    return status


def reveal(prediction, outcome, why: str = "") -> bool:
    """ "Predict, then run": compare the learner's written-down guess with what the cell measured.

    ``prediction`` and ``outcome`` are short answers such as ``"higher"``, ``"lower"``, ``"same"``
    (compared without regard to case or surrounding spaces). Prints both and ``why``; never raises.
    """
    if prediction is None:
        print(f"You did not write a prediction. What happened: {outcome}. {why}".strip())
        return False
    same = str(prediction).strip().lower() == str(outcome).strip().lower()
    print(f"You predicted {prediction!r}; what happened: {outcome!r}. " + ("Well predicted. " if same else "") + why)
    return same


def notebook_run_dir(name: str) -> Path:
    """Where a notebook writes its files: ``<project>/runs/<name>``."""
    folder = config.project_root() / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def ensure_retrained_model(image_dir=None, run_dir=None, steps: int | None = None) -> dict[str, Path]:
    """The retrained model of ``03_retrain`` (graph, labels, ...), made now if it is not there yet."""
    from tlcourse import datasets, retrain

    image_dir = Path(image_dir or datasets.stamps())
    run_dir = Path(run_dir or notebook_run_dir("retrain"))
    steps = steps or (200 if config.small_data() else 1000)
    settings = retrain.RetrainConfig(
        image_dir=image_dir,
        bottleneck_dir=config.project_root() / "runs" / "bottlenecks",
        how_many_training_steps=steps,
        summaries_dir=run_dir / "training_summaries",
        output_graph=run_dir / "retrained_graph.pb",
        output_labels=run_dir / "retrained_labels.txt",
        architecture="efficientnet_lite0",
        precision="float32",  # as lesson 02's cache, and the same numbers on every machine
    )
    paths = settings.output_paths()
    if not all(path.is_file() for path in paths.values()):
        retrain.retrain(settings, progress=False)
    return paths
