"""Hide what TensorFlow and LiteRT print while they start, convert, save or load a model.

Those lines ("Assets written to ...", "Created TensorFlow Lite XNNPACK delegate for CPU", the
converter's notes on its own flags) are notes for their developers: in a lesson they bury the
output a learner should read. Errors still raise, with their messages.

``import_tensorflow()`` is for command lines: on a machine without a GPU, importing TensorFlow
prints absl and CUDA probe lines ("Could not find cuda drivers", "failed call to cuInit ...
(303)", twice) before any setting can stop them (``TF_CPP_MIN_LOG_LEVEL`` does not). It imports
TensorFlow and runs its device probe with the process's stderr caught, then prints back every
line that is not one of those known start-up notes: real warnings and errors still show.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager

# TensorFlow's start-up notes on a CPU machine; anything else it prints while starting is kept.
START_UP_NOTES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|cpu_feature_guard\.cc"
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|TF-TRT Warning: Could not find TensorRT"
)


def import_tensorflow():
    """``import tensorflow`` and its device probe, without its start-up notes (``START_UP_NOTES``); returns it."""
    if "tensorflow" in sys.modules:  # started already: its notes, if any, are printed
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    with tempfile.TemporaryFile() as caught:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr descriptor: nothing native to hide
            saved = None
        if saved is not None:
            os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # where the CUDA probe happens
        finally:
            sys.stderr.flush()
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
        caught.seek(0)
        lines = caught.read().decode("utf-8", errors="replace").splitlines(keepends=True)
    kept = [line for line in lines if not START_UP_NOTES.search(line)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
    return tf


@contextmanager
def quiet():
    """Within this block: TensorFlow's loggers show errors only; Python warnings and native output are hidden."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    saved = {}
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        for descriptor in (1, 2):  # native code writes to the process's own stdout and stderr
            saved[descriptor] = os.dup(descriptor)
            os.dup2(devnull, descriptor)
        os.close(devnull)
    except (OSError, ValueError):  # no such descriptors here: nothing native to hide
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for descriptor, original in saved.items():
            os.dup2(original, descriptor)
            os.close(original)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
