"""Content hashes: the one way Shipyard checks that a file is what was recorded."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
