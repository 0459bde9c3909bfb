"""Hide what TensorFlow and LiteRT print while they convert, save or load a model.

Those lines ("Assets written to ...", "Created TensorFlow Lite XNNPACK delegate for CPU", the
converter's notes on its own flags) are notes for their developers: in a lesson they bury the
output a learner should read. Errors still raise, with their messages.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager


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
