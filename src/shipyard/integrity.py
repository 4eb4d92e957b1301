"""Content hashes, atomic writes and file locks: how Shipyard keeps files what was recorded.

``file_sha256``/``verify_sha256`` check a file before it is loaded; ``write_atomically``
replaces a file whole (a reader sees the old bytes or the new, never half); ``locked`` holds
an ``flock`` on a lock file, so processes (on one host, or on a shared filesystem that
supports ``flock``) take turns at a read-decide-write on files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from shipyard.errors import IntegrityError


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (hex digest)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> None:
    """Raise IntegrityError unless ``path`` has the recorded SHA-256 (call before loading it)."""
    found = file_sha256(path)
    if expected is None or found != expected:
        recorded = f"the recorded {expected[:12]}..." if expected else "no recorded hash"
        raise IntegrityError(
            f"Refusing to load {path}: its SHA-256 {found[:12]}... does not match {recorded}; "
            "the artifact was modified or corrupted."
        )


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole (temp file beside it, fsync, rename, fsync folder)."""
    write_atomically_with(path, lambda fh: fh.write(data))


def write_atomically_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` whole with what ``write(fh)`` writes to an open binary file: a file too
    big to hold in memory streamed, with :func:`write_atomically`'s guarantees."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def locked(lock_file: Path, shared: bool = False) -> Iterator[None]:
    """Hold an ``flock`` on ``lock_file`` (created if missing): exclusive, or ``shared``.

    Example::

        with locked(folder / ".prepare.lock"):
            ...  # one process at a time
    """
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
