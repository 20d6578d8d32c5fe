"""Reading a file of the memory this process may hold a lock on, without dropping that lock.

POSIX record locks (DuckDB's lock on its database file) belong to the process and the file: closing *any* descriptor
of the file drops them, however it was opened (an `open().read()` of memory.duckdb, or an mmap, which duplicates
its descriptor and closes the duplicate). A purge's byte scan reads every file in the memory, the database included;
reading the database through a new descriptor would leave the database unlocked beside the process that holds it.
So a file this process already has open is read through that descriptor, with pread, and no descriptor of it is
closed (vmem_core.storage.byte_scan does so).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Iterator, Optional

CHUNK = 16 * 1024 * 1024


def held_descriptor(path: Path) -> Optional[int]:
    """A descriptor this process already has open on `path`'s file (Linux's /proc/self/fd), or None."""
    try:
        target = os.stat(path)
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in names:
        try:
            stat = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) == (target.st_dev, target.st_ino):
            try:
                flags = fcntl.fcntl(int(name), fcntl.F_GETFL)
            except OSError:
                continue  # closed meanwhile (another thread)
            if flags & os.O_ACCMODE != os.O_WRONLY and not flags & getattr(os, "O_PATH", 0):
                return int(name)  # one that can be read: write-only and path-only descriptors cannot
    return None


def pieces(fd: int, size: int, overlap: int) -> Iterator[bytes]:
    """The file in pieces that overlap by `overlap` bytes, so that no pattern shorter than that falls between two."""
    at = 0
    while at < size:
        piece = os.pread(fd, CHUNK + overlap, at)
        if not piece:
            return
        yield piece
        at += CHUNK
