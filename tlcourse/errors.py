"""One family of errors for the course's own failures, and one handler for every command line.

Every error the course raises on purpose (a bad image, an unsafe weights file, a failed download,
a dataset that cannot be built, a damaged model file, settings that cannot go together) derives
from ``TLCourseError``, and its message says what went wrong and what to do. Each subclass also
keeps the built-in base it has always had (``ValueError``, ``RuntimeError``), so existing
``except ValueError`` code still works.

``command_line(main)`` wraps a ``main(argv) -> int`` entry point, with one exit-code policy for
every command (``retrain.py``, ``label_image.py``, ``python -m tlcourse.search``, ``.compare``,
``.datasets``, ``.backbones``, ``.exercises``, ``.demo``, ``.book``; ``tests/test_errors.py`` finds
them all):

- 0: done;
- 1: a user's mistake in what the command was given (one of the course's errors, a missing or
  unreadable file: ``TLCourseError`` or ``OSError``), printed as ``error: ...`` on stderr, never a
  traceback; a command that goes on past failed items (an unreadable image) also ends with 1;
- 2: the command line itself is wrong (``UsageError``, as argparse's own usage errors);
- 130: interrupted (Ctrl-C).

Any other exception, ``ValueError`` included, is a bug in the course and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

EXIT_FAILED = 1
EXIT_USAGE = 2  # argparse's own code for a usage error
EXIT_INTERRUPTED = 130


class TLCourseError(Exception):
    """Base class of the course's own errors; the message says what went wrong and what to do."""


class UsageError(TLCourseError, ValueError):
    """A command line that cannot run as typed (settings that cannot go together, no input given)."""


class SettingError(UsageError):
    """Settings that cannot go together. The message names parameters; the command line shows flags.

    ``template`` writes every parameter as ``{name}``: ``str(error)`` fills in the names as they
    are, ``for_command_line()`` as flags (``--name``).
    """

    def __init__(self, template: str):
        self.template = template
        super().__init__(template.format_map(_Names("")))

    def for_command_line(self) -> str:
        return self.template.format_map(_Names("--"))


class _Names(dict):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def __missing__(self, name: str) -> str:
        return self.prefix + name


class ModelFileError(TLCourseError, ValueError):
    """A model or weights file that exists but cannot be read (damaged, truncated, another format)."""


class DatasetError(TLCourseError, RuntimeError):
    """A dataset that cannot be fetched or built here."""


# What a user can cause by what they typed or the files they gave: reported in one line, no traceback.
USER_ERRORS = (TLCourseError, OSError)


def report(error: BaseException, file=None) -> None:
    """Print ``error: MESSAGE`` (the message already says what to do) on ``file`` (stderr)."""
    print(f"error: {error}", file=file or sys.stderr, flush=True)


def command_line(main: Callable[..., int | None]) -> Callable[..., int]:
    """``main`` wrapped for the shell, with the exit codes of the module docstring."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        except USER_ERRORS as error:
            report(error)
            return EXIT_USAGE if isinstance(error, UsageError) else EXIT_FAILED

    return wrapped
