"""tlcourse: transfer learning for image classification, as a course and as a tool.

Use it as ``import tlcourse as tlc``; submodules load on first use (``tlc.backbones``,
``tlc.data``, ...), so importing the package itself is instant.
"""

import importlib
import os
import pkgutil

# TensorFlow's C++ start-up chatter (CPU feature lines, CUDA probes) hides what matters to a learner.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

SUBMODULES = tuple(module.name for module in pkgutil.iter_modules(__path__))  # every one, found on disk


def __getattr__(name):
    if name in SUBMODULES:
        return importlib.import_module(f"tlcourse.{name}")
    raise AttributeError(f"module 'tlcourse' has no attribute {name!r}")
