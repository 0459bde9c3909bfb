"""Write files and folders so that a failed or killed run never leaves a half-written one behind.

One helper, ``atomic_path``, used by every writer of the course (model files, bottlenecks,
downloads, datasets, converted weights): the new content is written under a temporary name in
the same folder and renamed into place only when complete; until then the previous file or folder
(if any) stays intact and loadable. Temporary names carry the writer's process id, so leftovers
of a killed writer are recognised and removed by the next writer of the same target.

A folder cannot be swapped for another in one step, so a new folder replaces an old one in three:
the old one is renamed aside, the new one renamed in, the old one deleted. A run killed between
the first two renames leaves the old folder aside; the next call for that target renames it back.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import uuid
from pathlib import Path

TEMPORARY_TAG = re.compile(r"\.(tmp|old)-(\d+)-[0-9a-f]{8}")


def temporary_tag(kind: str = "tmp") -> str:
    """Marks a temporary file with the writer's process id, so that leftovers can be recognised."""
    return f".{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def is_stale_temporary(path: Path) -> bool:
    """True for a temporary file whose writer is no longer running (it was killed mid-write)."""
    match = TEMPORARY_TAG.search(path.name)
    if not match:
        return False
    try:
        os.kill(int(match.group(2)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def remove_stale_temporaries(paths) -> None:
    for path in paths:
        if not is_stale_temporary(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _sibling(target: Path, kind: str, keep_suffix: bool = False) -> Path:
    suffix = "".join(target.suffixes) if keep_suffix else ""
    return target.with_name(f".{target.name}{temporary_tag(kind)}{suffix}")


def recover(target: str | Path) -> None:
    """Undo what a killed writer of ``target`` left: put an old folder set aside back, remove temporaries."""
    target = Path(target)
    leftovers = sorted(target.parent.glob(f".{glob.escape(target.name)}.[to][ml][pd]-*"))
    if not os.path.lexists(target):
        for aside in leftovers:
            if aside.name.startswith(f".{target.name}.old-") and is_stale_temporary(aside):
                os.replace(aside, target)  # killed between the two renames: the old folder is still whole
                break
    remove_stale_temporaries(path for path in leftovers if os.path.lexists(path))


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the output folder {folder}: {error.strerror or error}") from error
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"the output folder {folder} is read-only; choose another output path")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(target: str | Path, keep_suffix: bool = False, durable: bool = True, clean: bool = True):
    """Yield a temporary path to write ``target``'s new content to (a file, or a folder you create).

    On success it replaces ``target``; on any error the temporary is removed and ``target`` is
    left as it was. ``keep_suffix`` keeps the extension at the end of the temporary name, for
    writers that choose the format by extension (Keras' ``.keras``, ``.weights.h5``).
    ``durable`` flushes a file to disk before the rename, so that a power cut cannot leave an
    empty file under the final name. ``clean`` first undoes what a killed writer of ``target``
    left (``recover``); a writer of many small files (the bottleneck store) does that once instead.
    """
    target = Path(target)
    _check_writable(target.parent)
    if clean:
        recover(target)
    temporary = _sibling(target, "tmp", keep_suffix)
    try:
        yield temporary
        if temporary.is_dir() and not temporary.is_symlink():
            _replace_folder(temporary, target)
        else:
            if durable:
                _fsync(temporary)
            os.replace(temporary, target)
        if durable:
            with contextlib.suppress(OSError):  # the rename is done; some file systems cannot flush a folder
                _fsync(target.parent)
    finally:
        if temporary.is_dir() and not temporary.is_symlink():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


def _replace_folder(new: Path, target: Path) -> None:
    """``new`` renamed to ``target``; an old ``target`` goes only once the new one is in place."""
    if not os.path.lexists(target):
        os.replace(new, target)
        return
    aside = _sibling(target, "old")
    os.replace(target, aside)
    os.replace(new, target)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
