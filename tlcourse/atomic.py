"""Write files and folders so that a failed or killed run never leaves a half-written one behind.

The new content is written under a temporary name in the same folder and renamed into place only
when complete; until then the previous file (if any) stays intact and loadable. Temporary names
carry the writer's process id: leftovers of a killed writer are removed by the next one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import uuid
from pathlib import Path

TEMPORARY_TAG = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}")


def temporary_tag() -> str:
    """Marks a temporary file with the writer's process id, so that leftovers can be recognised."""
    return f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def is_stale_temporary(path: Path) -> bool:
    """True for a temporary file whose writer is no longer running (it was killed mid-write)."""
    match = TEMPORARY_TAG.search(path.name)
    if not match:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def remove_stale_temporaries(paths) -> None:
    for path in paths:
        if not is_stale_temporary(path):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _temporary_sibling(target: Path, keep_suffix: bool) -> Path:
    suffix = "".join(target.suffixes) if keep_suffix else ""
    return target.with_name(f".{target.name}{temporary_tag()}{suffix}")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the output folder {folder}: {error.strerror or error}") from error
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"the output folder {folder} is read-only; choose another output path")


@contextlib.contextmanager
def atomic_path(target: str | Path, keep_suffix: bool = False):
    """Yield a temporary path to write ``target``'s new content to; it replaces ``target`` on success.

    ``keep_suffix`` keeps the extension at the end of the temporary name, for writers that choose
    the format by extension (Keras' ``.keras``, ``.weights.h5``).
    """
    target = Path(target)
    _check_writable(target.parent)
    remove_stale_temporaries(target.parent.glob(f".{glob.escape(target.name)}.tmp-*"))
    temporary = _temporary_sibling(target, keep_suffix)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(target: str | Path):
    """Like ``atomic_path`` for a folder (a SavedModel): the old folder goes only once the new one is whole."""
    target = Path(target)
    _check_writable(target.parent)
    remove_stale_temporaries(target.parent.glob(f".{glob.escape(target.name)}.tmp-*"))
    temporary = _temporary_sibling(target, keep_suffix=False)
    try:
        yield temporary
        if target.exists():
            retired = _temporary_sibling(target, keep_suffix=False)
            os.replace(target, retired)
            os.replace(temporary, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
