"""Find byte patterns (removed embeddings, thumbnails) anywhere in a folder's files, reading each file once.

A purge certificate must show that no file still holds a removed exemplar's bytes at any offset. Searching for each
pattern in turn (`mmap.find`) reads every file once per pattern: 200 removed exemplars make ~600 patterns and ~6,800
finds over a 60,000-exemplar memory, about 94 s. Here each pattern is given an anchor, an 8-byte window of its own
(one with varied bytes, so that runs of zeros or a PNG header do not match everywhere), and every file is read once:
the 8-byte word at every byte offset is tested against the anchors' hashes (a bitmap, vectorised), and only where
one matches is the whole pattern compared. The answer is the same as one `find` per pattern per file: every offset
is tested, and a hit is a full byte comparison.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

ANCHOR = 8  # bytes: one uint64 word
_HASH_BITS = 24  # a 2 MiB bitmap: with ~600 anchors, ~1 word in 28,000 passes by chance and is then compared
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
BLOCK = 32 * 1024 * 1024  # bytes scanned at once: bounds the temporary arrays


def _anchor_offset(pattern: bytes) -> int:
    """Where in `pattern` its anchor lies: from the middle on, the first window with at least 7 distinct bytes (the
    most varied one if none has), so that the anchor is rare in other data."""
    last = len(pattern) - ANCHOR
    best, best_distinct = 0, -1
    for offset in list(range(last // 2, last + 1)) + list(range(0, last // 2)):
        distinct = len(set(pattern[offset:offset + ANCHOR]))
        if distinct >= 7:
            return offset
        if distinct > best_distinct:
            best, best_distinct = offset, distinct
    return best


def _hash(words: np.ndarray) -> np.ndarray:
    return (words * _MULTIPLIER) >> np.uint64(64 - _HASH_BITS)


class PatternSet:
    """Patterns prepared for `find_in`: their anchors, hashed into a bitmap."""

    def __init__(self, patterns: Sequence[tuple[str, bytes]]) -> None:
        self.names = [name for name, _ in patterns]
        self.patterns = [bytes(p) for _, p in patterns]
        self.short = [i for i, p in enumerate(self.patterns) if len(p) < ANCHOR]  # searched with find
        self.by_anchor: dict[int, list[tuple[int, int]]] = {}  # anchor word -> [(pattern, anchor offset)]
        self.bitmap = np.zeros(1 << _HASH_BITS, dtype=bool)
        for index, pattern in enumerate(self.patterns):
            if len(pattern) < ANCHOR:
                continue
            offset = _anchor_offset(pattern)
            word = int(np.frombuffer(pattern[offset:offset + ANCHOR], dtype="<u8")[0])
            self.by_anchor.setdefault(word, []).append((index, offset))
        if self.by_anchor:
            words = np.fromiter(self.by_anchor, dtype=np.uint64, count=len(self.by_anchor))
            self.bitmap[_hash(words).astype(np.int64)] = True
        self.longest = max((len(p) for p in self.patterns), default=0)

    def find_in(self, data) -> set[int]:
        """Indices of the patterns found anywhere in `data` (bytes or an mmap)."""
        return set(self.first_positions(data))

    def first_positions(self, data) -> dict[int, int]:
        """{pattern index: the offset of its first occurrence} for the patterns found in `data`, in one pass."""
        found = {i: at for i in self.short if (at := data.find(self.patterns[i])) >= 0}
        size = len(data)
        if not self.by_anchor or size < ANCHOR:
            return found
        start = 0
        while start < size - ANCHOR + 1:
            # a block of words starting at every byte offset in [start, stop): eight strided views, one per offset
            # modulo 8; the block overlaps the next by ANCHOR - 1 bytes so that no window is skipped
            stop = min(start + BLOCK, size - ANCHOR + 1)
            chunk = np.frombuffer(data, dtype=np.uint8, count=min(stop - start + ANCHOR - 1, size - start),
                                  offset=start)
            for shift in range(ANCHOR):
                words_count = (len(chunk) - shift) // ANCHOR
                if words_count <= 0:
                    continue
                words = np.frombuffer(chunk.data, dtype="<u8", count=words_count, offset=shift)
                hits = np.flatnonzero(self.bitmap[_hash(words).astype(np.int64)])
                for hit in hits:
                    position = start + shift + int(hit) * ANCHOR
                    if position >= stop:
                        continue
                    for index, offset in self.by_anchor.get(int(words[hit]), ()):
                        begin = position - offset
                        pattern = self.patterns[index]
                        if begin >= 0 and (index not in found or begin < found[index]) and \
                                data[begin:begin + len(pattern)] == pattern:
                            found[index] = begin
            start = stop
        return found


def byte_scan(directory: Path, patterns: Sequence[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(file, pattern name) for every pattern found in any file under `directory`, each file read once."""
    prepared = PatternSet(patterns)
    hits = []
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        if path.stat().st_size == 0:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = prepared.find_in(data)
        hits.extend((str(path.relative_to(directory)), prepared.names[i]) for i in sorted(found))
    return hits


def rows_holding(stored: np.ndarray, vectors: Iterable[np.ndarray]) -> np.ndarray:
    """Rows of `stored` (n, d) float32 byte-identical to one of `vectors`: a hash of every row's bits, vectorised,
    then a full comparison of the rows whose hash matches (no Python loop over the memory)."""
    stored = np.ascontiguousarray(stored, dtype=np.float32)
    wanted = np.ascontiguousarray(np.asarray(list(vectors), dtype=np.float32).reshape(-1, stored.shape[1]))
    if not len(stored) or not len(wanted):
        return np.zeros(0, dtype=np.int64)
    weights = np.random.default_rng(0).integers(1, 2**63, size=stored.shape[1], dtype=np.uint64) | np.uint64(1)

    def row_hashes(rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), dtype=np.uint64)
        for start in range(0, len(rows), 4096):  # bounds the uint64 temporary to ~40 MiB
            bits = rows[start:start + 4096].view(np.uint32).astype(np.uint64)
            out[start:start + 4096] = (bits * weights).sum(axis=1)
        return out

    candidates = np.flatnonzero(np.isin(row_hashes(stored), row_hashes(wanted)))
    keys = {row.tobytes() for row in wanted}
    return np.asarray([i for i in candidates if stored[i].tobytes() in keys], dtype=np.int64)
