"""tlcourse: transfer learning for image classification, as a course and as a tool.

Use it as ``import tlcourse as tlc``; submodules load on first use (``tlc.backbones``,
``tlc.data``, ...), so importing the package itself is instant.
"""

import importlib
import os

# TensorFlow's C++ start-up chatter (CPU feature lines, CUDA probes) hides what matters to a learner.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

SUBMODULES = (
    "atomic",
    "backbones",
    "book",
    "bottlenecks",
    "calibration",
    "capstone",
    "compare",
    "course",
    "config",
    "data",
    "datasets",
    "depths",
    "download",
    "embeddings",
    "exercises",
    "export",
    "finetune",
    "formats",
    "hardware",
    "images",
    "label",
    "litert",
    "many_classes",
    "model_card",
    "pipeline",
    "plots",
    "retrain",
    "search",
    "stats",
    "tflite",
    "torch_weights",
    "train",
    "widgets",
    "your_data",
)


def __getattr__(name):
    if name in SUBMODULES:
        return importlib.import_module(f"tlcourse.{name}")
    raise AttributeError(f"module 'tlcourse' has no attribute {name!r}")
