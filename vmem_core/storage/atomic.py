"""Writes that a crash cannot leave half-done: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..errors import StorageError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON through a temp file, fsync and rename, so a reader sees the old file or the new one, never half."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(f"could not write {path} ({exc.strerror or exc}); it is unchanged: free some space (or "
                           "make the folder writable) and try again") from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:  # a full disk: the old file stays whole, and no temp file stays beside it
        raise StorageError(f"could not write {path} ({exc.strerror or exc}); it is unchanged: free some space (or "
                           "make the folder writable) and try again") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
