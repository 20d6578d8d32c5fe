"""The owner lock: one process holds a memory at a time, whatever files it rewrites on the way.

DuckDB locks its database file, but a lock belongs to a file (an inode), not to a path: once a purge, a migration or a
compaction writes a fresh memory.duckdb and swaps it in, the old lock guards nothing and a second process can open the
new file and write beside the first, each with its own view. So the process that opens a memory first takes an
exclusive `flock` on the folder's lock file, a file that is never replaced nor removed, before DuckDB opens, and keeps
it for the life of the handle. The kernel drops the lock when the process ends, however it ends, so a crashed holder
never leaves a stale lock behind.

Handles opened in one process share its lock (DuckDB shares one database between them too), counted per lock file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

from ..errors import MemoryFormatError, MemoryLockedError
from .layout import LOCK_FILE

_guard = threading.Lock()
_held: dict[tuple[int, int], list[int]] = {}  # (device, inode) of a lock file -> [its locked descriptor, handles]


class OwnerLock:
    """This process's hold on a memory folder, taken by `acquire` and given up by `release` (idempotent)."""

    def __init__(self, key: tuple[int, int] | None, path: Path) -> None:
        self._key: tuple[int, int] | None = key
        self.path = path

    @classmethod
    def acquire(cls, folder: Path, read_only: bool = False) -> "OwnerLock":
        """Hold the memory in `folder` for this process; `read_only`: for reading alone, which writes no byte (the
        lock file is opened for reading, not created, and locked shared: readers exclude a writer, not each other).

        Raises:
            MemoryLockedError: another process holds it (the message names that process's id).
            MemoryFormatError: the lock file is a symbolic link.
        """
        path = Path(folder) / LOCK_FILE
        try:
            if read_only:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            else:  # never through a link: the pid written below would land in whatever file it points at
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            # a reader of a memory no writer has held yet (a fresh copy): nothing to lock against but DuckDB's own
            # lock, which a read-only open takes as well
            return cls(None, path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise MemoryFormatError(f"{path} is a symbolic link; vmem does not follow links inside a memory: "
                                        "remove it (vmem makes a new one)") from None
            raise
        with _guard:
            stat = os.fstat(fd)
            key = (stat.st_dev, stat.st_ino)
            if key in _held:  # this process holds it already: share the lock
                os.close(fd)
                _held[key][1] += 1
                return cls(key, path)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise MemoryLockedError(
                    f"memory {Path(folder)} is open in another process{f' (pid {holder})' if holder else ''}, "
                    "for example the vmem app or another vmem command; close that process, or run this command in "
                    "it, and try again"
                ) from None
            _held[key] = [fd, 1]
        return cls(key, path)

    def announce(self) -> None:
        """Write this process's id into the lock file, for another process's "held by pid N" message: called once
        the memory has opened, so that an open refused for a damaged folder leaves even this file as it was.
        Fixed width, so that the folder's size does not depend on the pid."""
        with _guard:
            entry = _held.get(self._key) if self._key is not None else None
            if entry is not None and _writable(entry[0]):
                if _read_pid(entry[0]) != os.getpid():
                    os.pwrite(entry[0], f"{os.getpid():>10}\n".encode(), 0)

    def still_guards(self) -> bool:
        """Whether the lock file at the path is still the file this process locked (nobody replaced or removed it)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        return self._key is not None and (stat.st_dev, stat.st_ino) == self._key

    def release(self) -> None:
        with _guard:
            if self._key is None:
                return
            entry = _held[self._key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                os.close(entry[0])  # closing the last descriptor of the open file drops its flock
            self._key = None


def _writable(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def holder(folder: Path) -> int | None:
    """The id of another process that holds the memory in `folder` (0 if it did not say), or None if none does.
    Reads only: the lock file is opened for reading and locked shared for an instant."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file (no writer yet) or a link, which the open itself refuses with one line
    try:
        with _guard:
            stat = os.fstat(fd)
            if (stat.st_dev, stat.st_ino) in _held:
                return None  # this process holds it
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_pid(fd) or 0
            return None
    finally:
        os.close(fd)  # also drops the instant's shared lock (flock locks go with their open file)
