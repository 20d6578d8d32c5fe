"""Find byte patterns (removed embeddings, thumbnails) anywhere in a folder's files, reading each file once.

A purge certificate must show that no file still holds a removed exemplar's bytes at any offset. One `mmap.find` per
pattern per file reads every file once per pattern: 200 removed exemplars made ~600 patterns and ~6,800 finds over a
60,000-exemplar memory (94 s), and even the three patterns of one exemplar took ~0.45 s over its 700 MB.

Here a file is not read whole. A pattern of L bytes, wherever it starts, covers every 8-byte-aligned word of the file
that falls inside it, and in particular one of any `stride` consecutive aligned words once 8 x stride <= L - 7. So
only every stride-th aligned word is read (a few hundred thousand words for 700 MB) and looked up among the 8-byte
windows each pattern has at *every* byte offset of a stretch of 8 x stride + 7 of its bytes; where one matches, the
whole pattern is compared at the start that window implies. Every occurrence contains a sampled word, so the answer is
exactly that of one `find` per pattern per file (a hit is a full byte comparison), the first occurrence included.

The stretch is one whose windows are all varied (`_varied_stretch`), so that runs of zeros, padding or a float
repeated do not match everywhere. A pattern with no such stretch of at least MIN_STRETCH bytes, and any pattern
shorter than that, is searched with `find`.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .scan import held_descriptor, pieces

WORD = 8  # bytes: one uint64, read at 8-byte-aligned offsets
MAX_ZERO_BYTES = 4  # a window with more zero bytes (a small integer, a zero float beside a sparse one) is common
MIN_STRETCH = 8 * 16 + WORD - 1  # the shortest stretch worth sampling: every 16th word at least; shorter: find
MAX_STRIDE = 4096  # words: a longer pattern is sampled no more sparsely (bounds its windows)


def _varied_stretch(pattern: bytes) -> tuple[int, int]:
    """(start, length) of the longest stretch of `pattern` whose 8-byte windows are all varied (length 0 if none): not
    periodic in 1, 2 or 4 bytes (zeros, padding, one float repeated) and with at most MAX_ZERO_BYTES zero bytes."""
    if len(pattern) < WORD:
        return 0, 0
    bytes_ = np.lib.stride_tricks.sliding_window_view(np.frombuffer(pattern, dtype=np.uint8), WORD)
    words = np.ascontiguousarray(bytes_).view("<u8").ravel()
    rotated = (words << np.uint64(32)) | (words >> np.uint64(32))  # equal to itself: periodic in 4 bytes or less
    good = np.r_[False, (words != rotated) & ((bytes_ == 0).sum(axis=1) <= MAX_ZERO_BYTES), False]
    edges = np.flatnonzero(np.diff(good.astype(np.int8)))
    if len(edges) == 0:
        return 0, 0
    starts, ends = edges[::2], edges[1::2]  # runs of good window offsets [start, end)
    best = int(np.argmax(ends - starts))
    return int(starts[best]), int(ends[best] - starts[best]) + WORD - 1


class PatternSet:
    """Patterns prepared for a sampled search: the 8-byte windows of a varied stretch of each (sorted, with the
    pattern and offset each came from), and the stride every pattern's stretch allows."""

    def __init__(self, patterns: Sequence[tuple[str, bytes]], scanned_bytes: Optional[int] = None) -> None:
        """`scanned_bytes`, the size of what will be searched, sets the stride where patterns are many: the windows
        (patterns x 8 x stride, sorted once) and the sampled words (scanned_bytes / 8 / stride) then cost alike."""
        self.names = [name for name, _ in patterns]
        self.patterns = [bytes(p) for _, p in patterns]
        stretches = [_varied_stretch(p) if len(p) >= MIN_STRETCH else (0, 0) for p in self.patterns]
        self.found_with_find = [i for i, (_, length) in enumerate(stretches) if length < MIN_STRETCH]
        sampled = [i for i, (_, length) in enumerate(stretches) if length >= MIN_STRETCH]
        # one stride for all, no longer than the shortest stretch allows (then every occurrence of every pattern
        # holds a sampled word)
        self.stride = min([(stretches[i][1] - WORD + 1) // WORD for i in sampled] + [MAX_STRIDE])
        if scanned_bytes and sampled:
            balanced = int(np.sqrt(scanned_bytes / len(sampled)) / WORD)
            self.stride = min(self.stride, max(balanced, (MIN_STRETCH - WORD + 1) // WORD))
        values, owners, offsets = [], [], []
        for i in sampled:
            start = stretches[i][0]
            count = WORD * self.stride  # windows at consecutive offsets: any sampled word, wherever, falls on one
            windows = np.lib.stride_tricks.sliding_window_view(
                np.frombuffer(self.patterns[i], dtype=np.uint8)[start:start + count + WORD - 1], WORD)
            values.append(np.ascontiguousarray(windows).view("<u8").ravel())
            owners.append(np.full(count, i, dtype=np.int64))
            offsets.append(np.arange(start, start + count, dtype=np.int64))
        if values:
            values_all = np.concatenate(values)
            order = np.argsort(values_all, kind="stable")
            self.window_values = values_all[order]
            self.window_patterns = np.concatenate(owners)[order]
            self.window_offsets = np.concatenate(offsets)[order]
        else:
            self.window_values = np.zeros(0, dtype="<u8")

    def find_in(self, data) -> set[int]:
        """Indices of the patterns found anywhere in `data` (bytes or an mmap)."""
        return set(self.first_positions(data))

    def first_positions(self, data) -> dict[int, int]:
        """{pattern index: the offset of its first occurrence} for the patterns found in `data`."""
        found = {i: at for i in self.found_with_find if (at := data.find(self.patterns[i])) >= 0}
        if not len(self.window_values):
            return found
        words = np.frombuffer(data, dtype="<u8", count=len(data) // WORD)
        sampled = words[::self.stride].copy()  # a copy: no view may outlive an mmap the caller closes
        del words
        at = np.searchsorted(self.window_values, sampled)
        hits = np.flatnonzero(self.window_values[np.minimum(at, len(self.window_values) - 1)] == sampled)
        for hit in hits.tolist():
            position = hit * self.stride * WORD
            value = sampled[hit]
            first = int(at[hit])
            last = int(np.searchsorted(self.window_values, value, side="right"))
            for index, offset in zip(self.window_patterns[first:last].tolist(),
                                     self.window_offsets[first:last].tolist()):
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
    files = sorted(p for p in Path(directory).rglob("*") if p.is_file())
    prepared = PatternSet(patterns, scanned_bytes=sum(p.stat().st_size for p in files))
    overlap = max((len(p) for _, p in patterns), default=1)
    hits = []
    for path in files:
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
