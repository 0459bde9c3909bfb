"""One family of errors for the course's own failures, and one handler for every command line.

Every error the course raises on purpose (a bad image, an unsafe weights file, a failed download,
a dataset that cannot be built, a damaged model file) derives from ``TLCourseError``, and its
message says what went wrong and what to do. Each subclass also keeps the built-in base it has
always had (``ValueError``, ``RuntimeError``), so existing ``except ValueError`` code still works.

``command_line(main)`` wraps a ``main(argv) -> int`` entry point: a user's mistake (one of the
course's errors, a bad value, a missing or unreadable file) prints ``error: ...`` on stderr and
exits non-zero, never a traceback; Ctrl-C exits with 130. A bug still shows its traceback.
Used by ``retrain.py``, ``label_image.py``, ``python -m tlcourse.datasets`` and ``python -m tlcourse.backbones``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class TLCourseError(Exception):
    """Base class of the course's own errors; the message says what went wrong and what to do."""


class ModelFileError(TLCourseError, ValueError):
    """A model or weights file that exists but cannot be read (damaged, truncated, another format)."""


class DatasetError(TLCourseError, RuntimeError):
    """A dataset that cannot be fetched or built here."""


# What a user can cause by what they typed or the files they gave: reported in one line, no traceback.
USER_ERRORS = (TLCourseError, ValueError, OSError)


def report(error: BaseException, file=None) -> None:
    """Print ``error: MESSAGE`` (the message already says what to do) on ``file`` (stderr)."""
    print(f"error: {error}", file=file or sys.stderr, flush=True)


def command_line(main: Callable[..., int | None], status: int = 1) -> Callable[..., int]:
    """``main`` wrapped for the shell: user errors print ``error: ...`` and return ``status``; Ctrl-C 130."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            return 130
        except USER_ERRORS as error:
            report(error)
            return status

    return wrapped
