"""Find byte patterns (removed embeddings, thumbnails) anywhere in a folder's files, reading each file once.

A purge certificate must show that no file still holds a removed exemplar's bytes at any offset. Searching for each
pattern in turn (`mmap.find`) reads every file once per pattern: 200 removed exemplars make ~600 patterns and ~6,800
finds over a 60,000-exemplar memory, about 94 s. Here each pattern is given anchors, the eight 8-byte words of a
15-byte span of its own (one with varied bytes, so that runs of zeros or a PNG header do not match everywhere):
wherever the pattern starts, one of them lies on an 8-byte-aligned offset of the file. Every file is read once, as
aligned words tested against the anchors' hashes (a bitmap, vectorised), and only where one matches is the whole
pattern compared. The answer is the same as one `find` per pattern per file (a hit is a full byte comparison); for a
few patterns, one `find` each is what runs, being faster there.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .scan import held_descriptor, pieces

ANCHOR = 8  # bytes: one uint64 word
SPAN = 2 * ANCHOR - 1  # a pattern this long holds an anchor word at each of the 8 phases of the file's alignment
_HASH_BITS = 24  # a 2 MiB bitmap: with ~5,000 anchor words, ~1 word in 3,000 passes by chance and is then compared
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
BLOCK_WORDS = 4 * 1024 * 1024  # aligned words scanned at once (32 MiB): bounds the temporary arrays
# Up to this many patterns, one `find` each is faster (memchr runs at memory speed); beyond it, one pass
FIND_EACH_UP_TO = 24
HASHED_COLUMNS = 16  # columns of a row hashed to pick the rows `rows_holding` compares in full


def _anchor_offset(pattern: bytes) -> int:
    """Where in `pattern` its anchor span (SPAN bytes) starts: from the middle on, the first span with at least 12
    distinct bytes (the most varied one if none has), so that its words are rare in other data."""
    last = len(pattern) - SPAN
    best, best_distinct = 0, -1
    for offset in list(range(last // 2, last + 1)) + list(range(0, last // 2)):
        distinct = len(set(pattern[offset:offset + SPAN]))
        if distinct >= 12:
            return offset
        if distinct > best_distinct:
            best, best_distinct = offset, distinct
    return best


def _hash(words: np.ndarray) -> np.ndarray:
    return (words * _MULTIPLIER) >> np.uint64(64 - _HASH_BITS)


class PatternSet:
    """Patterns prepared for a one-pass search. A pattern starting at any offset s puts one of its eight words
    pattern[a + j : a + j + 8] (j = 0..7) on an 8-byte-aligned offset of the file, so only aligned words are read,
    once each, and tested against the anchors' hashes; where one matches, the whole pattern is compared."""

    def __init__(self, patterns: Sequence[tuple[str, bytes]]) -> None:
        self.names = [name for name, _ in patterns]
        self.patterns = [bytes(p) for _, p in patterns]
        self.short = [i for i, p in enumerate(self.patterns) if len(p) < SPAN]  # searched with find
        self.by_anchor: dict[int, list[tuple[int, int]]] = {}  # word -> [(pattern, offset of the word in it)]
        self.bitmap = np.zeros(1 << _HASH_BITS, dtype=bool)
        for index, pattern in enumerate(self.patterns):
            if len(pattern) < SPAN:
                continue
            base = _anchor_offset(pattern)
            for phase in range(ANCHOR):
                at = base + phase
                word = int(np.frombuffer(pattern[at:at + ANCHOR], dtype="<u8")[0])
                self.by_anchor.setdefault(word, []).append((index, at))
        if self.by_anchor:
            words = np.fromiter(self.by_anchor, dtype=np.uint64, count=len(self.by_anchor))
            self.bitmap[_hash(words).astype(np.int64)] = True

    def find_in(self, data) -> set[int]:
        """Indices of the patterns found anywhere in `data` (bytes or an mmap)."""
        return set(self.first_positions(data))

    def first_positions(self, data) -> dict[int, int]:
        """{pattern index: the offset of its first occurrence} for the patterns found in `data`."""
        if len(self.patterns) <= FIND_EACH_UP_TO:
            return {i: at for i, p in enumerate(self.patterns) if (at := data.find(p)) >= 0}
        return self.one_pass(data)

    def one_pass(self, data) -> dict[int, int]:
        """`first_positions` by reading `data` once, whatever the number of patterns."""
        found = {i: at for i in self.short if (at := data.find(self.patterns[i])) >= 0}
        if not self.by_anchor:
            return found
        words = np.frombuffer(data, dtype="<u8", count=len(data) // ANCHOR)
        for first in range(0, len(words), BLOCK_WORDS):
            block = words[first:first + BLOCK_WORDS]
            for hit in np.flatnonzero(self.bitmap[_hash(block).view(np.int64)]):
                position = (first + int(hit)) * ANCHOR
                for index, offset in self.by_anchor.get(int(block[hit]), ()):
                    begin = position - offset
                    pattern = self.patterns[index]
                    if begin >= 0 and (index not in found or begin < found[index]) and \
                            data[begin:begin + len(pattern)] == pattern:
                        found[index] = begin
        return found


def byte_scan(directory: Path, patterns: Sequence[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(file, pattern name) for every pattern found in any file under `directory`, each file read once. A file this
    process already holds open (DuckDB's database) is read through that descriptor, in overlapping pieces, so that
    no descriptor of it is closed and DuckDB keeps its lock (vmem_core.storage.scan)."""
    prepared = PatternSet(patterns)
    overlap = max((len(p) for _, p in patterns), default=1)
    hits = []
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        if path.stat().st_size == 0:
            continue
        found = _found_through_held_descriptor(path, prepared, overlap)
        if found is None:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                found = prepared.find_in(data)
        hits.extend((str(path.relative_to(directory)), prepared.names[i]) for i in sorted(found))
    return hits


def _found_through_held_descriptor(path: Path, prepared: "PatternSet", overlap: int) -> Optional[set[int]]:
    held = held_descriptor(path)
    if held is None:
        return None
    try:
        found: set[int] = set()
        for piece in pieces(held, os.fstat(held).st_size, overlap):
            found |= prepared.find_in(piece)
        return found
    except OSError:
        return None  # the holder closed it meanwhile: read through a descriptor of our own


def rows_holding(stored: np.ndarray, vectors: Iterable[np.ndarray]) -> np.ndarray:
    """Rows of `stored` (n, d) float32 byte-identical to one of `vectors`: a hash of the bits of a few columns spread
    over every row, vectorised (hashing all of them cost ~1.5 s at 60,000 x 1280), then a full comparison of the rows
    whose hash matches (no Python loop over the memory)."""
    stored = np.asarray(stored, dtype=np.float32)
    wanted = np.ascontiguousarray(np.asarray(list(vectors), dtype=np.float32).reshape(-1, stored.shape[1]))
    if not len(stored) or not len(wanted):
        return np.zeros(0, dtype=np.int64)
    columns = np.unique(np.linspace(0, stored.shape[1] - 1, min(stored.shape[1], HASHED_COLUMNS)).astype(np.int64))
    weights = np.random.default_rng(0).integers(1, 2**63, size=len(columns), dtype=np.uint64) | np.uint64(1)

    def row_hashes(rows: np.ndarray) -> np.ndarray:
        bits = np.ascontiguousarray(rows[:, columns]).view(np.uint32).astype(np.uint64)
        return (bits * weights).sum(axis=1)

    candidates = np.flatnonzero(np.isin(row_hashes(stored), row_hashes(wanted)))
    keys = {row.tobytes() for row in wanted}
    return np.asarray([i for i in candidates if stored[i].tobytes() in keys], dtype=np.int64)
