"""Graded exercises: the learner writes a function, ``check`` grades it against a hidden reference.

``tlc.exercises.check("NAME", NAME)`` closes every graded cell of a lesson; ``fill_stubs`` pastes
the references into a notebook (CI's run of the pass path); ``python -m tlcourse.exercises list``
and ``check NAME FILE.py:FUNCTION`` work from the shell. See ``core.py`` for how to add one.
Taught in the lessons that hold graded cells (first in ``notebooks/01_prepare_dataset.ipynb``).
"""

import importlib

from tlcourse.exercises.core import (
    REGISTRY,
    Exercise,
    GradingFailure,
    Outcome,
    check,
    fill_stubs,
    grade,
    names,
    reference_source,
    register,
)

# Topic modules, imported in this order; each registers its exercises. A module listed here must exist.
TOPICS = (
    "basics",
    "training",
    "imbalance",
    "data_quality",
    "tuning",
    "confidence",
    "finetuning",
    "deploy",
    "embeddings",
)

for _topic in TOPICS:
    importlib.import_module(f"tlcourse.exercises.{_topic}")

__all__ = [
    "REGISTRY",
    "TOPICS",
    "Exercise",
    "GradingFailure",
    "Outcome",
    "check",
    "fill_stubs",
    "grade",
    "names",
    "reference_source",
    "register",
]
