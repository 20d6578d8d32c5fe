"""The bytes of exemplars, beside the database: embeddings and thumbnails in two flat files.

Kept out of DuckDB so that a purge can overwrite an exemplar's bytes where they lie (DuckDB keeps deleted values in
its file until the whole database is rewritten, which takes seconds at 100k exemplars).

    vectors.f32   exemplar id i's embedding at byte offset i * dim * 4 (ids are never reused)
    thumbs.bin    thumbnails appended one after another; the database row keeps (offset, length)

Writes land here and are fsynced before the database commits the rows that point at them, so a crash leaves at most
unreferenced bytes past the end, which the store cuts off at its first add (and at once when an add fails);
never when it opens, since an open only reads.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ..errors import MemoryFormatError
from .layout import THUMBNAILS_NAME, VECTORS_NAME

GATHERED_AT_MOST = 512  # `similarities` gathers up to this many records; more are read in one sequential pass
SCAN_BLOCK = 4096  # records per product in that pass (4096 x 1280 float32: 20 MB at a time)


class Vault:
    def __init__(self, directory: Path, dim: int, create: bool = False, read_only: bool = False) -> None:
        """The vault of the memory in `directory`. Its files must exist unless `create` (a new or empty memory, for
        which a writer makes them): a missing file of a memory with rows is damage to report, not to paper over."""
        self.dim = dim
        self.record = dim * 4
        self.read_only = read_only
        self.vectors_path = Path(directory) / VECTORS_NAME
        self.thumbnails_path = Path(directory) / THUMBNAILS_NAME
        for path in (self.vectors_path, self.thumbnails_path):
            if os.path.lexists(path):
                continue
            if not create:
                raise MemoryFormatError(f"{path} is missing: it holds the exemplars' vectors and thumbnails, which "
                                        "the database does not; copy it back from where this memory came from")
            if not read_only:
                os.close(_open(path, os.O_WRONLY | os.O_CREAT))

    def _open(self, path: Path, mode: str):
        """A vault file, never through a symbolic link (a memory from elsewhere could make one point at the user's
        files): O_NOFOLLOW makes the kernel refuse it."""
        flags = {"rb": os.O_RDONLY, "r+b": os.O_RDWR, "ab": os.O_WRONLY | os.O_APPEND}[mode]
        return os.fdopen(_open(path, flags), mode)

    # --- writes ---------------------------------------------------------------------------------------------------
    def write_vectors(self, first_id: int, vectors: np.ndarray) -> None:
        """Store consecutive ids' embeddings from `first_id` on, durably."""
        data = np.ascontiguousarray(vectors, dtype="<f4")
        with self._open(self.vectors_path, "r+b") as f:
            f.seek(first_id * self.record)
            f.write(data.tobytes())
            f.flush()
            os.fsync(f.fileno())

    def append_thumbnails(self, thumbnails: Sequence[Optional[bytes]]) -> list[tuple[int, int]]:
        """Append thumbnails durably; returns (offset, length) for each, (-1, 0) where there is none."""
        places = []
        with self._open(self.thumbnails_path, "ab") as f:
            offset = f.seek(0, os.SEEK_END)
            for thumb in thumbnails:
                if thumb:
                    f.write(thumb)
                    places.append((offset, len(thumb)))
                    offset += len(thumb)
                else:
                    places.append((-1, 0))
            f.flush()
            os.fsync(f.fileno())
        return places

    def erase(self, ids: Sequence[int], thumbnails: Sequence[tuple[int, int]]) -> None:
        """Overwrite ids' embeddings and the given thumbnail ranges with zeros, durably."""
        for path, places in ((self.vectors_path, [(int(i) * self.record, self.record) for i in ids]),
                             (self.thumbnails_path, [p for p in thumbnails if p[0] >= 0 and p[1] > 0])):
            size = path.stat().st_size
            with self._open(path, "r+b") as f:
                for offset, length in places:
                    if offset < size:
                        f.seek(offset)
                        f.write(bytes(min(length, size - offset)))
                f.flush()
                os.fsync(f.fileno())

    def trim_thumbnails(self, end: int) -> None:
        """Cut thumbnail bytes past `end` (left by a write whose database commit never happened)."""
        _truncate(self.thumbnails_path, end)

    def trim_vectors(self, next_id: int) -> None:
        """Cut vector records from `next_id` on (left by a write whose database commit never happened)."""
        _truncate(self.vectors_path, next_id * self.record)

    def sizes(self) -> tuple[int, int]:
        """(bytes of vectors, bytes of thumbnails); a missing file (an empty memory opened read-only) holds none."""
        return tuple(os.lstat(p).st_size if os.path.lexists(p) else 0  # type: ignore[return-value]
                     for p in (self.vectors_path, self.thumbnails_path))

    # --- reads ----------------------------------------------------------------------------------------------------
    def record_count(self) -> int:
        """Records the vectors file holds (ids 0 to this, less one; purged ones zeroed, not removed)."""
        return self.sizes()[0] // self.record

    def read_vectors(self, ids: Sequence[int]) -> np.ndarray:
        """(n, dim) float32 embeddings of ids, in the given order."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        mapped = self.mapped_vectors(ids)
        first = int(ids[0])
        if int(ids[-1]) - first == len(ids) - 1 and np.array_equal(ids, np.arange(first, first + len(ids))):
            # a run of ids (the whole memory, for a digest or a purge's checks): one sequential copy
            return np.array(mapped[first:first + len(ids)], dtype=np.float32)
        # one gathered copy (np.array over the fancy-indexed memmap copied the gathered rows a second time)
        return np.take(mapped, ids, axis=0).astype(np.float32, copy=False)

    def similarities(self, vectors: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """(len(vectors), len(ids)) inner products of `vectors` with the stored embeddings of `ids` (sorted, unique).
        A few ids are gathered; many are read in one sequential pass over the records they span, the products taken
        on the mapped records in place: gathering 26,000 scattered records of 60,000 from a fresh mapping took 0.05
        to 0.6 s, as its page faults went, and a pass over all of them ~15 ms."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            raise ValueError("Vault.similarities takes ids sorted and unique")
        if len(ids) <= GATHERED_AT_MOST:
            return vectors @ self.read_vectors(ids).T if len(ids) else np.zeros((len(vectors), 0), np.float32)
        records = self.mapped_vectors(ids)
        out = np.empty((len(vectors), len(ids)), dtype=np.float32)
        for start in range(int(ids[0]), int(ids[-1]) + 1, SCAN_BLOCK):
            stop = min(start + SCAN_BLOCK, int(ids[-1]) + 1)
            low, high = np.searchsorted(ids, [start, stop])
            if low < high:
                out[:, low:high] = (vectors @ records[start:stop].T)[:, ids[low:high] - start]
        del records
        return out

    def mapped_vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Every record of the vectors file, (records, dim) float32, mapped read-only without a copy (a purge's
        digests and exact search read each once, in place): at least up to the largest of `ids`, else ValueError.
        Records the file holds for no row (purged, zeroed) are there too; the caller picks its rows by id."""
        count = self.record_count()
        if len(ids) and int(np.max(ids)) >= count:
            raise ValueError(f"{self.vectors_path} holds no vector for id {int(np.max(ids))} (file too short)")
        if not count:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(self.vectors_path, dtype="<f4", mode="r", shape=(count, self.dim)).view(np.ndarray)

    def scan_vectors(self, block: int = 8192) -> Iterator[tuple[int, np.ndarray]]:
        """(first id, (n, dim) float32 records) over the whole vectors file, `block` records at a time, read
        through one mapping: every stored record, live or not (the caller knows which ids are live)."""
        mapped = self.mapped_vectors(())
        for first in range(0, len(mapped), block):
            yield first, mapped[first:first + block]

    def read_thumbnails(self, places: Sequence[tuple[int, int]]) -> list[Optional[bytes]]:
        out: list[Optional[bytes]] = []
        with self._open(self.thumbnails_path, "rb") as f:
            for offset, length in places:
                if offset is None or offset < 0 or not length:
                    out.append(None)
                    continue
                f.seek(int(offset))
                out.append(f.read(int(length)))
        return out


def _open(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MemoryFormatError(f"{path} is a symbolic link; vmem does not follow links inside a memory: replace "
                                    "it with a copy of the file") from None
        raise


def _truncate(path: Path, end: int) -> None:
    if os.lstat(path).st_size > end:
        with os.fdopen(_open(path, os.O_RDWR), "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
