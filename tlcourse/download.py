"""Hash-checked downloads that never leave a half-written file behind."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from tlcourse.atomic import atomic_path, recover
from tlcourse.errors import TLCourseError

CHUNK = 1 << 20


class DownloadError(TLCourseError, RuntimeError):
    """A download failed or its content did not match the expected hash."""


def file_hash(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(path: str | Path) -> str:
    """SHA-256 hex digest of a file (``file_hash``), or of a folder: its files' relative paths and digests."""
    path = Path(path)
    if not path.is_dir():
        return file_hash(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{file_hash(item)}\n".encode())
    return digest.hexdigest()


def _hash_algorithm(expected: str) -> str:
    # Keras publishes md5 sums (32 hex digits); we publish sha256 (64).
    return "md5" if len(expected) == 32 else "sha256"


def download(url: str, destination: str | Path, expected_hash: str | None, timeout: float = 30.0) -> Path:
    """Fetch ``url`` into ``destination`` unless a file with the expected hash is already there.

    The bytes go to a temporary file beside the destination (``atomic.atomic_path``) and are moved
    into place only after the hash matches, so a failed, interrupted or corrupt download leaves the
    folder as it was; the temporary file of a killed download is removed by the next one.
    """
    destination = Path(destination)
    if destination.parent.is_dir():
        recover(destination)  # a killed download's temporary file goes, even when nothing is fetched now
    algorithm = _hash_algorithm(expected_hash) if expected_hash else "sha256"
    if destination.is_file() and (expected_hash is None or file_hash(destination, algorithm) == expected_hash):
        return destination
    digest = hashlib.new(algorithm)
    try:
        with (
            atomic_path(destination) as partial,
            urllib.request.urlopen(url, timeout=timeout) as response,
            open(partial, "wb") as out,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name, leave=False) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if expected_hash is not None and digest.hexdigest() != expected_hash:
                raise DownloadError(
                    f"{url}: the downloaded file's {algorithm} is {digest.hexdigest()}, expected {expected_hash}. "
                    f"Nothing was written to {destination}. Try again; if it persists, the server's file changed."
                )
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(
            f"could not download {url} ({error}). Nothing was written to {destination}. "
            f"If you have the file, put it there yourself."
        ) from error
    return destination
