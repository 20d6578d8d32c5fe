"""What an hnswlib index file is, read without hnswlib: its header, the byte layout of an element's level-0 record,
the whole-file check run after every save and before every load, the chunk checksums a snapshot's manifest keeps,
and the delete marks it holds.

Used by vmem_core.backends.hnsw_index (snapshots) and vmem_core.backends.hnsw (a purge's in-place patch).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import xxhash


def element_bytes(vector: np.ndarray, label: int) -> bytes:
    """How hnswlib stores an element in level 0: its float32 vector followed by its label as a 64-bit integer."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes() + int(label).to_bytes(8, "little")


# --- what an hnswlib file is: checked after every save and before every load ------------------------------------------
# hnswlib's saveIndex (hnswalg.h, 0.8) writes a 96-byte header (offsetLevel0, max_elements, cur_element_count,
# size_data_per_element, label_offset, offsetData as size_t; maxlevel, enterpoint_node as int; maxM, maxM0, M as
# size_t; mult as double; ef_construction as size_t), then cur_element_count level-0 records, then for each element a
# 4-byte length and its upper-level links. It reports no write error: a full disk leaves a short file that loads.
MARK_SCAN_BYTES = 32 * 1024 * 1024  # how much of an index file `marked_deleted_in_file` maps at once
_HEADER = struct.Struct("<6Q2i3Qd Q".replace(" ", ""))


class SnapshotError(OSError):
    """An index file is not the complete index it should be (short, or of another dimension or size)."""


def file_dimension(path: Path) -> int:
    """The vector dimension an hnswlib file was saved with (its label offset minus its data offset, over 4 bytes)."""
    with open(path, "rb") as f:
        header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise SnapshotError(f"index file {Path(path).name} is shorter than hnswlib's header ({len(header)} bytes)")
    fields = _HEADER.unpack(header)
    return (fields[4] - fields[5]) // 4


def check_saved_file(path: Path, dim: int, count: Optional[int], links: bool = True) -> None:
    """Raise SnapshotError unless `path` is a whole hnswlib file of `dim`-d vectors holding `count` elements (None:
    any): every record and link list it announces is there, to the last byte, and nothing after. Without `links`,
    only the header and the level-0 records' extent: enough for a file whose checksums match those taken when it was
    written and checked whole (walking 60,000 link lists in Python costs ~0.1 s, 1M of them seconds)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else _Empty() as data:
        if size < _HEADER.size:
            raise SnapshotError(f"index file {path.name} is truncated ({size} bytes)")
        fields = _HEADER.unpack_from(data, 0)
        elements, per_element, label_offset, data_offset = fields[2], fields[3], fields[4], fields[5]
        saved_dim = (label_offset - data_offset) // 4
        if saved_dim != dim:
            raise SnapshotError(f"index file {path.name} holds {saved_dim}-d vectors, the memory {dim}-d")
        if count is not None and elements != int(count):
            raise SnapshotError(f"index file {path.name} holds {elements} elements, its manifest says {count}")
        at = _HEADER.size + elements * per_element
        if not links:
            if at > size:
                raise SnapshotError(f"index file {path.name} is {size:,} bytes, shorter than its {elements:,} records")
            return
        for _ in range(elements):  # one 4-byte length per element, then that many bytes of upper-level links
            if at + 4 > size:
                break
            at += 4 + int.from_bytes(data[at:at + 4], "little")
        if at != size:
            raise SnapshotError(f"index file {path.name} is {size:,} bytes where its header needs {at:,} "
                                "(written to a full disk?)")


class _Empty:
    def __enter__(self):
        return b""

    def __exit__(self, *exc):
        return False


def marked_deleted_in_file(path: Path) -> np.ndarray:
    """Labels of the elements an hnswlib file marks deleted, read from its level-0 records without loading it: each
    record starts with its link count, whose third byte holds hnswlib's delete mark (hnswalg.h, DELETE_MARK)."""
    size = Path(path).stat().st_size
    if size < _HEADER.size:
        return np.zeros(0, dtype=np.int64)
    with open(path, "rb") as f:
        fields = _HEADER.unpack(f.read(_HEADER.size))
    elements, per_element, label_offset = fields[2], fields[3], fields[4]
    if not elements or _HEADER.size + elements * per_element > size:
        return np.zeros(0, dtype=np.int64)
    found = []
    # mapped a block at a time: reading one byte per record faults in every page of the file, and the mapped pages
    # count in the process's RSS until unmapped (a whole 100,000 x 1280 index at once added ~500 MiB to its peak)
    block = max(1, MARK_SCAN_BYTES // per_element)
    for first in range(0, elements, block):
        count = min(block, elements - first)
        records = np.memmap(path, dtype=np.uint8, mode="r", offset=_HEADER.size + first * per_element,
                            shape=(count, per_element))
        marked = (records[:, 2] & 1).astype(bool)
        if marked.any():
            found.append(np.ascontiguousarray(records[marked, label_offset:label_offset + 8]).view("<u8").ravel())
        del records
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)


def element_offsets(path: Path, labels: Sequence[int]) -> dict[int, int]:
    """{label: byte offset of its element's vector} for the given labels an hnswlib file holds, read from the labels
    of its level-0 records (a block at a time, as `marked_deleted_in_file`): where a purge patches each element, with
    no search of the file for its bytes."""
    size = Path(path).stat().st_size
    if size < _HEADER.size:
        return {}
    with open(path, "rb") as f:
        fields = _HEADER.unpack(f.read(_HEADER.size))
    elements, per_element, label_offset, data_offset = fields[2], fields[3], fields[4], fields[5]
    if not elements or _HEADER.size + elements * per_element > size or label_offset + 8 > per_element:
        return {}
    wanted = np.unique(np.asarray(labels, dtype=np.uint64))
    found: dict[int, int] = {}
    block = max(1, MARK_SCAN_BYTES // per_element)
    for first in range(0, elements, block):
        count = min(block, elements - first)
        records = np.memmap(path, dtype=np.uint8, mode="r", offset=_HEADER.size + first * per_element,
                            shape=(count, per_element))
        stored = np.ascontiguousarray(records[:, label_offset:label_offset + 8]).view("<u8").ravel()
        del records
        for row in np.flatnonzero(np.isin(stored, wanted)).tolist():
            found.setdefault(int(stored[row]), _HEADER.size + (first + row) * per_element + data_offset)
    return found


# --- the checksums a snapshot's manifest keeps: verified before every load ------------------------------------------
CHECKSUM_CHUNK = 16 * 1024 * 1024  # checksums per 16 MiB chunk: a purge patches one record and re-hashes one chunk
# Every open verifies the snapshot. XXH3-128 hashes ~8 GB/s on one core, sha256 ~0.8 GB/s even with the CPU's SHA
# instructions: 0.04 s against 0.4 s for a 60,000 x 1280 snapshot (316 MB) held in memory (bench/open.py: with the
# file's pages read too, on a busy machine, 0.2-0.6 s against 0.6-1.6 s on every core).
# It detects damage (a flipped byte, a truncation, another file), which is what the checksums are for; nobody signs
# snapshots. A manifest that names no checksum is from before and holds sha256 digests, still verified as such.
CHECKSUM = "xxh3_128"
DIGESTS = {
    "xxh3_128": xxhash.xxh3_128_hexdigest,
    "sha256": lambda data: hashlib.sha256(data).hexdigest(),
}


def manifest_checksum(manifest: dict) -> str:
    """The checksum a manifest's chunk digests were taken with (KeyError for one this version does not know)."""
    algorithm = manifest.get("checksum", "sha256")
    if algorithm not in DIGESTS:
        raise KeyError(f"unknown checksum {algorithm!r}")
    return algorithm


def chunk_digests(path: Path, chunk: int = CHECKSUM_CHUNK, algorithm: str = CHECKSUM) -> list[str]:
    """The `algorithm` digest of each `chunk`-byte piece of a file (an empty file has one empty piece), read through
    one mapping of the file."""
    return chunk_digests_by(path, (algorithm,), chunk)[0]


def chunk_digests_by(path: Path, algorithms: Sequence[str], chunk: int = CHECKSUM_CHUNK) -> list[list[str]]:
    """`chunk_digests` under each of `algorithms`, in one pass over the file."""
    digests = [DIGESTS[algorithm] for algorithm in algorithms]
    size = os.path.getsize(path)
    if not size:
        return [[digest(b"")] for digest in digests]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pieces = range(0, size, chunk)
        if "sha256" in algorithms and len(pieces) >= 4:  # the old checksum: slow enough to be worth every core
            from concurrent.futures import ThreadPoolExecutor

            def each(at: int) -> list[str]:
                piece = data[at:at + chunk]
                return [digest(piece) for digest in digests]

            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                rows = list(pool.map(each, pieces))
        else:
            rows = []
            with memoryview(data) as view:  # no copy: the digest reads the mapped pages
                for at in pieces:
                    with view[at:at + chunk] as piece:
                        rows.append([digest(piece) for digest in digests])
    return [list(column) for column in zip(*rows)]
