"""Find byte patterns (removed embeddings, thumbnails) anywhere in a folder's files, reading each file once.

A purge certificate must show that no file still holds a removed exemplar's bytes at any offset. One `mmap.find` per
pattern per file reads every file once per pattern: 200 removed exemplars made ~600 patterns and ~6,800 finds over a
60,000-exemplar memory (94 s), and even the three patterns of one exemplar took ~0.45 s over its 700 MB.

Here a file is not read whole: only every stride-th 8-byte-aligned word (`PatternSet.stride`, a power of two; a few
hundred thousand words for 700 MB), each looked up among windows of the patterns, where a window is the 8 bytes at
some offset o of a pattern; where one matches, the whole pattern is compared at the start that window implies.
An occurrence starting at file offset s puts the sampled words at pattern offsets o = q - s for the multiples q of
8 x stride, that is at the offsets of one residue class modulo 8 x stride. So each pattern registers, for every
residue modulo 8 x stride, one offset of that class whose window is varied (`_varied_offsets`: not zeros, padding, a
small integer or a value repeated, which fill files and would match everywhere), and the stride is the largest for
which every pattern has one in every class. Every occurrence then holds a sampled word on a registered window, so the
answer is exactly that of one `find` per pattern per file (a hit is a full byte comparison), the first occurrence
included. A pattern shorter than MIN_SAMPLED, or too sparse to be sampled every MIN_STRIDE words (an embedding of
zeros, say), is searched with `find`.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .scan import held_descriptor, pieces

WORD = 8  # bytes: one uint64, read at 8-byte-aligned offsets
MIN_STRIDE = 16  # words: a pattern that cannot be sampled this sparsely is searched with find
MIN_SAMPLED = WORD * MIN_STRIDE + WORD - 1  # bytes: a shorter pattern cannot be (a window per class), so find
MAX_STRIDE = 4096  # words: no pattern is sampled more sparsely (bounds the windows of long ones)
_HASH_BITS = 22  # a 4 MiB bitmap of the windows' hashes: with 100,000 windows, 1 sampled word in 40 passes by chance
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _hash(words: np.ndarray) -> np.ndarray:
    return ((words * _MULTIPLIER) >> np.uint64(64 - _HASH_BITS)).astype(np.int64)


def _varied_offsets(pattern: bytes) -> np.ndarray:
    """Offsets of `pattern` whose 8-byte window is varied: not periodic in 1, 2 or 4 bytes (zeros, padding, one
    float repeated), not a little-endian integer below 2**32, and not two 32-bit integers below 2**16 each (ids,
    counts, offsets and link lists fill index and database files)."""
    if len(pattern) < WORD:
        return np.zeros(0, dtype=np.int64)
    windows = np.ascontiguousarray(
        np.lib.stride_tricks.sliding_window_view(np.frombuffer(pattern, dtype=np.uint8), WORD)).view("<u8").ravel()
    rotated = (windows << np.uint64(32)) | (windows >> np.uint64(32))  # equal to itself: periodic in 4 bytes or less
    low, high = windows & np.uint64(0xFFFFFFFF), windows >> np.uint64(32)
    small_pair = (low < np.uint64(1 << 16)) & (high < np.uint64(1 << 16))
    return np.flatnonzero((windows != rotated) & (high != 0) & ~small_pair).astype(np.int64)


def _sparsest_stride(varied: np.ndarray) -> int:
    """The largest power-of-two stride (in words, up to MAX_STRIDE) at which `varied` offsets fall in every residue
    class modulo 8 x stride; 0 if not even every word can be sampled. Powers of two: a stride that works makes every
    smaller one work (each class of a smaller modulus holds whole classes of the larger)."""
    stride = 0
    candidate = 1
    while candidate <= MAX_STRIDE:
        modulus = WORD * candidate
        if len(varied) < modulus or not np.bincount(varied % modulus, minlength=modulus).all():
            break
        stride, candidate = candidate, candidate * 2
    return stride


class PatternSet:
    """Patterns prepared for a sampled search: per pattern, one varied window in each residue class of offsets
    modulo 8 x stride (sorted by value, with the pattern and offset each came from)."""

    def __init__(self, patterns: Sequence[tuple[str, bytes]], scanned_bytes: Optional[int] = None) -> None:
        """`scanned_bytes`, the size of what will be searched, sets a smaller stride where patterns are many: the
        windows (patterns x 8 x stride, sorted once) and the sampled words (scanned_bytes / 8 / stride) then cost
        alike."""
        self.names = [name for name, _ in patterns]
        self.patterns = [bytes(p) for _, p in patterns]
        varied = [_varied_offsets(p) if len(p) >= MIN_SAMPLED else np.zeros(0, np.int64) for p in self.patterns]
        strides = [_sparsest_stride(v) for v in varied]
        sampled = [i for i, stride in enumerate(strides) if stride >= MIN_STRIDE]
        self.found_with_find = [i for i, stride in enumerate(strides) if stride < MIN_STRIDE]
        self.stride = min([strides[i] for i in sampled] + [MAX_STRIDE])
        if scanned_bytes and sampled:
            balanced = np.sqrt(scanned_bytes / len(sampled)) / WORD
            while self.stride > MIN_STRIDE and self.stride > balanced:
                self.stride //= 2
        modulus = WORD * self.stride
        values, owners, offsets = [], [], []
        for i in sampled:
            _, first = np.unique(varied[i] % modulus, return_index=True)  # one offset per class: its first
            chosen = varied[i][first]
            pattern = np.frombuffer(self.patterns[i], dtype=np.uint8)
            words = np.lib.stride_tricks.sliding_window_view(pattern, WORD)[chosen]
            values.append(np.ascontiguousarray(words).view("<u8").ravel())
            owners.append(np.full(len(chosen), i, dtype=np.int64))
            offsets.append(chosen)
        self.bitmap = np.zeros(1 << _HASH_BITS, dtype=bool)  # a first filter, cheaper than a binary search
        if values:
            values_all = np.concatenate(values)
            order = np.argsort(values_all, kind="stable")
            self.window_values = values_all[order]
            self.window_patterns = np.concatenate(owners)[order]
            self.window_offsets = np.concatenate(offsets)[order]
            self.bitmap[_hash(self.window_values)] = True
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
        try:
            sampled = words[::self.stride].copy()  # a copy: no view may outlive an mmap the caller closes
        finally:
            del words
        maybe = np.flatnonzero(self.bitmap[_hash(sampled)])
        at = np.searchsorted(self.window_values, sampled[maybe])
        matched = self.window_values[np.minimum(at, len(self.window_values) - 1)] == sampled[maybe]
        for hit, first in zip(maybe[matched].tolist(), at[matched].tolist()):
            position = hit * self.stride * WORD
            value = sampled[hit]
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
