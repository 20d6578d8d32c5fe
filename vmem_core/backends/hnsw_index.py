"""The approximate nearest-neighbour index over hnswlib (cosine distance on unit vectors), and crash-safe snapshots.

hnswlib gotchas handled here: `knn_query` raises when fewer than k live items are reachable (k is clamped to the live
count, then the search is widened, then it falls back to exact search); `ef` is not saved with the index; capacity is
fixed until `resize_index` (grown geometrically); `save_index` writes in place with no checksum (snapshots go to a
temp file, are fsynced and renamed, and a manifest keeps their chunks' checksums and the last database change they
include).
What an hnswlib file holds, byte for byte, is read in vmem_core.backends.hnsw_file.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional, Sequence

import hnswlib
import numpy as np

from ..storage.atomic import fsync_file, write_json_atomic
from ..storage.layout import HNSW_MANIFEST_NAME as MANIFEST_NAME
from .hnsw_file import (CHECKSUM, CHECKSUM_CHUNK, DIGESTS, SnapshotError,  # noqa: F401  (re-exported)
                        check_saved_file, chunk_digests, chunk_digests_by, element_bytes, element_offsets,
                        manifest_checksum, marked_deleted_in_file)
from .hugepages import collapse, huge_pages_for_new_mappings

log = logging.getLogger(__name__)

# Cosine distance on unit vectors, computed as hnswlib's inner-product space: 1 - <q, x>. Vectors arrive already
# L2-normalised, and "ip" stores them byte for byte (the "cosine" space renormalises them, changing last bits), so
# the index holds exactly the embeddings in the database and a byte scan can prove a purged one is gone.
SPACE = "ip"
SNAPSHOT_FORMAT = 2
EXACT_SEARCH_BELOW = 2048  # live items or allowed ids: exact search is as fast and perfectly recalled
# Tombstones (delete, restore) since the last snapshot are not written into a new one: the database's per-row change
# stamps are their log, replayed on open (`catch_up`). A snapshot is rewritten once an add needs it, or once this
# many tombstones (at least COMPACT_TOMBSTONES_MIN) have piled up and the replay would start to cost.
COMPACT_TOMBSTONES = 0.02  # of the index's elements
COMPACT_TOMBSTONES_MIN = 1024
NUMPY_EXACT_SCORES = 2**24  # queries x candidates scored with numpy where torch is not loaded (64 MiB of float32)


# Upper bounds of the parameters a user may set: beyond them a graph is no better and costs memory and time without
# limit (hnswlib allocates per M; a beam of 10^12 made every query visit the whole graph).
MAX_EF = 10_000
INDEX_LIMITS = {"M": 256, "ef_construction": MAX_EF, "ef_search": MAX_EF}


@dataclass(frozen=True)
class IndexParams:
    """hnswlib build and search parameters (M and ef_construction are fixed once the index exists)."""

    M: int = 16
    ef_construction: int = 200
    ef_search: int = 128


def numpy_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`exact.exact_top_k` on the CPU without torch: (positions, 1 - cosine), most similar first, equal similarities
    by position (the order every exact search in vmem returns).

    >>> numpy_top_k(np.eye(3, dtype=np.float32)[:1], np.eye(3, dtype=np.float32), 2)[0].tolist()
    [[0, 1]]
    """
    # asarray, not astype: astype copies a float32 matrix whole (300 MB at 60,000 x 1280, a purge's exact check)
    return top_k_of(np.asarray(queries, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T, k)


def top_k_of(similarities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`numpy_top_k` of a (queries, rows) matrix of similarities already computed (a purge computes them once over
    the whole vault, the rows it does not search set to -inf)."""
    k = min(int(k), similarities.shape[1])
    order = np.zeros((len(similarities), k), dtype=np.int64)
    if k == 0:
        return order, np.zeros((len(similarities), 0), np.float32)
    # a floor under each row's k-th highest similarity without a partition of the whole matrix (a copy and a pass
    # of ~0.2 s for a purge's 200 probes x 60,000): the rows' maxima over `blocks` column blocks, of which the k-th
    # highest is reached by k distinct columns. Every column at least that high (ties at the cut included) is then
    # ordered by similarity and position, so the answer is that of a full sort
    blocks = min(similarities.shape[1], max(4 * k, 256))
    starts = np.linspace(0, similarities.shape[1], blocks, endpoint=False).astype(np.int64)
    maxima = np.maximum.reduceat(similarities, starts, axis=1)
    floor = np.partition(maxima, blocks - k, axis=1)[:, blocks - k]
    unbounded = np.flatnonzero(floor == -np.inf)  # fewer than k blocks hold a value: every column would pass
    if len(unbounded):
        floor[unbounded] = np.partition(similarities[unbounded], similarities.shape[1] - k, axis=1)[
            :, similarities.shape[1] - k]
    rows, columns = np.nonzero(similarities >= floor[:, None])
    bounds = np.searchsorted(rows, np.arange(len(similarities) + 1))
    for row in range(len(similarities)):
        found = columns[bounds[row]:bounds[row + 1]]
        scores = similarities[row, found]
        order[row] = found[np.lexsort((found, -scores))][:k]
    return order, 1.0 - np.take_along_axis(similarities, order, axis=1)


class AnnIndex:
    """Cosine kNN over integer ids. Not locked: the memory serialises writers against readers."""

    def __init__(self, dim: int, params: IndexParams = IndexParams(), capacity: int = 1024) -> None:
        self.dim = dim
        self.params = params
        self._index = hnswlib.Index(space=SPACE, dim=dim)
        with huge_pages_for_new_mappings():  # before any element is written, so every page it touches comes huge
            self._index.init_index(max_elements=max(capacity, 16), M=params.M, ef_construction=params.ef_construction)
        self._index.set_ef(params.ef_search)
        self._deleted: set[int] = set()
        self._live_matrix: Optional[tuple[np.ndarray, np.ndarray]] = None
        self._loaded_ranges: tuple[tuple[int, int], ...] = ()  # what a load left on small pages
        self._block = 0  # counts the moves of hnswlib's block (resize)

    @classmethod
    def load(cls, path: Path, dim: int, params: IndexParams, deleted: Iterable[int] = ()) -> "AnnIndex":
        self = cls.__new__(cls)
        self.dim = dim
        self.params = params
        self._index = hnswlib.Index(space=SPACE, dim=dim)
        # loading touches every page: they come small, and `collapse_huge_pages` remaps them later, off the load
        with huge_pages_for_new_mappings() as advice:
            self._index.load_index(str(path), allow_replace_deleted=False)
        self._loaded_ranges, self._block = advice[0].ranges, 0
        self._index.set_ef(params.ef_search)
        self._live_matrix = None
        present = set(self.ids())
        self._deleted = {int(i) for i in deleted if int(i) in present}
        for item in self._deleted:
            try:
                self._index.mark_deleted(item)
            except RuntimeError:
                pass  # already marked in the snapshot
        return self

    def collapse_huge_pages(self, step_guard, pause: float = 0.0) -> int:
        """Remap the block a load left on small pages as huge pages (hugepages.collapse; `step_guard` keeps a resize
        from moving the block meanwhile and says when to stop). Once: later calls do nothing. Returns bytes done."""
        ranges, self._loaded_ranges = self._loaded_ranges, ()
        block = self._block

        @contextmanager
        def still_this_block():
            with step_guard() as go_on:
                yield go_on and self._block == block

        return collapse(ranges, still_this_block, pause=pause)

    def set_search_ef(self, ef: int) -> None:
        self.params = replace(self.params, ef_search=int(ef))
        self._index.set_ef(self.params.ef_search)

    # --- contents -------------------------------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        return np.asarray(self._index.get_ids_list(), dtype=np.int64)

    def element_count(self) -> int:
        """Elements in the graph, live or marked deleted."""
        return int(self._index.get_current_count())

    @property
    def live_count(self) -> int:
        return self._index.get_current_count() - len(self._deleted)

    def _reserve(self, extra: int) -> None:
        needed = self._index.get_current_count() + extra
        capacity = self._index.get_max_elements()
        if needed > capacity:
            self._loaded_ranges, self._block = (), self._block + 1  # the block moves: a pending collapse stops
            with huge_pages_for_new_mappings(collapse=True):  # the block moved: its pages are small again
                self._index.resize_index(max(needed, int(capacity * 1.5)))

    def add(self, ids: np.ndarray, vectors: np.ndarray, threads: int = -1) -> None:
        """Insert unit vectors under ids (ids already present are overwritten in place by hnswlib)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        self._reserve(len(ids))
        self._live_matrix = None
        self._index.add_items(np.asarray(vectors, dtype=np.float32), ids.astype(np.uint64), num_threads=threads)
        self._deleted.difference_update(int(i) for i in ids)

    def resident_bytes(self) -> int:
        """Bytes hnswlib holds in RAM for this index, from its layout (hnswalg.h, 0.8): 65,536 label locks; per
        allocated slot a lock, a level and a link-list pointer; per element its vector, level-0 links (2M + 1
        ints), label, upper-level links and label-map node (~48 bytes together, measured). Level-0 space for unused
        capacity is allocated but not touched, so it is not counted."""
        count = self._index.get_current_count()
        per_element = 4 * self.dim + 4 * (2 * self.params.M + 1) + 8 + 48
        return int(65_536 * 40 + self._index.get_max_elements() * (40 + 4 + 8) + count * per_element)

    def mark_deleted(self, ids: Iterable[int]) -> None:
        """Hide ids from searches; ids not in the index are ignored, ids already marked (in a loaded file) are fine."""
        self._live_matrix = None
        present = None
        for item in ids:
            item = int(item)
            if item in self._deleted:
                continue
            try:
                self._index.mark_deleted(item)
            except RuntimeError:
                present = set(self.ids().tolist()) if present is None else present
                if item not in present:
                    continue  # not in the index: nothing to hide
            self._deleted.add(item)

    def unmark_deleted(self, ids: Iterable[int]) -> None:
        """Make ids searchable again. hnswlib's own mark is cleared even where our record disagrees with it."""
        self._live_matrix = None
        for item in ids:
            item = int(item)
            try:
                self._index.unmark_deleted(item)
            except RuntimeError:
                pass  # not marked (or not present: the caller adds those)
            self._deleted.discard(item)

    def scrub(self, ids: Iterable[int], seed: Optional[int] = None) -> dict[int, np.ndarray]:
        """Overwrite the stored vectors of ids with random unit vectors and mark them deleted, so that the next
        snapshot holds none of their bytes; returns the noise written for each id that was present."""
        present = set(self.ids().tolist())
        targets = [int(i) for i in ids if int(i) in present]
        if not targets:
            return {}
        rng = np.random.default_rng(seed)
        noise = rng.normal(size=(len(targets), self.dim)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        self._live_matrix = None
        # hnswlib updates an existing label's vector in place (unmarking it first if it was deleted)
        self._index.add_items(noise, np.asarray(targets, dtype=np.uint64), num_threads=1)
        self._deleted.difference_update(targets)
        self.mark_deleted(targets)
        return dict(zip(targets, noise))

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._index.get_items(ids, return_type="numpy"), dtype=np.float32)

    def live_ids(self) -> np.ndarray:
        ids = self.ids()
        if not self._deleted:
            return ids
        return ids[~np.isin(ids, np.fromiter(self._deleted, dtype=np.int64))]

    # --- search ---------------------------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: Optional[np.ndarray] = None, threads: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live items of each query: (ids int64 (n, k'), distances float32 (n, k')), nearest first.

        k is clamped to the number of candidates, so k' = min(k, candidates). `allowed_ids` restricts the search.
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have {queries.shape[1]} dimensions, the index {self.dim}")
        candidates = self.live_count if allowed_ids is None else len(allowed_ids)
        k = min(int(k), candidates)
        if k <= 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        if candidates <= EXACT_SEARCH_BELOW:
            return self._exact(queries, k, allowed_ids)
        allowed = None if allowed_ids is None else set(int(i) for i in allowed_ids)
        filter_fn = None if allowed is None else (lambda label: label in allowed)
        ef = max(self.params.ef_search, k)
        if len(queries) == 1:
            threads = 1  # hnswlib would start threads for one query: their start-up costs more than the search
        while ef <= 8 * max(self.params.ef_search, k):
            self._index.set_ef(ef)
            try:
                labels, distances = self._index.knn_query(queries, k=k, num_threads=threads, filter=filter_fn)
                return labels.astype(np.int64), np.maximum(distances, 0)  # 1 - <q, x> rounds below 0 for twins
            except RuntimeError:
                ef *= 2  # too few live items reachable: widen the beam
            finally:
                self._index.set_ef(self.params.ef_search)
        log.info("hnswlib could not return %d neighbours; falling back to exact search", k)
        return self._exact(queries, k, allowed_ids)

    def _exact(
        self, queries: np.ndarray, k: int, allowed_ids: Optional[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        # hnswlib's get_items is slow (~0.1 ms per vector): keep the live matrix until the next change
        if self._live_matrix is None:
            live = self.live_ids()
            order = np.argsort(live)
            self._live_matrix = (live[order], self.vectors(live[order]))
        candidate_ids, matrix = self._live_matrix
        if allowed_ids is not None:
            keep = np.isin(candidate_ids, np.asarray(allowed_ids, dtype=np.int64))
            candidate_ids, matrix = candidate_ids[keep], matrix[keep]
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        queries = queries / np.maximum(norms, 1e-12)
        if "torch" in sys.modules or len(queries) * len(matrix) > NUMPY_EXACT_SCORES:
            from .exact import exact_top_k  # imports torch: only when a search needs it, not when a memory opens

            positions, distances = exact_top_k(queries, matrix, k)
        else:  # a small search in a process without torch: numpy, rather than 1.7 s and ~480 MiB of torch
            positions, distances = numpy_top_k(queries, matrix, k)
        return candidate_ids[positions], np.maximum(distances, 0).astype(np.float32)

    # --- snapshots ------------------------------------------------------------------------------------------------
    def save_snapshot(self, directory: Path, applied_seq: int) -> Path:
        """Write the index atomically and point the manifest at it; returns the index file written."""
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"index.{applied_seq}.hnsw"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".index.", suffix=".tmp")
        os.close(fd)
        try:
            self._index.save_index(tmp)
            fsync_file(Path(tmp))
            check_saved_file(Path(tmp), self.dim, int(self._index.get_current_count()))
            chunks = chunk_digests(Path(tmp))
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "file": final.name,
            "chunk_size": CHECKSUM_CHUNK,
            "checksum": CHECKSUM,
            "chunks": chunks,
            "applied_seq": applied_seq,
            "dim": self.dim,
            "M": self.params.M,
            "ef_construction": self.params.ef_construction,
            "count": int(self._index.get_current_count()),
        }
        try:
            write_json_atomic(directory / MANIFEST_NAME, manifest)
        except BaseException:
            final.unlink(missing_ok=True)  # unnamed by any manifest: it would only hold vectors a purge cannot see
            raise
        remove_unnamed_files(directory, final)
        return final


def snapshot_needed(applied_seq: int, seq: int, added_since: bool, tombstones_since: int, elements: int) -> bool:
    """Whether persisting change `seq` must write a new snapshot. Not when nothing changed, nor when only tombstones
    did (up to the compaction threshold) since a snapshot that exists: the database logs them, and an open replays
    them in milliseconds, where rewriting the snapshot costs ~1.4 s at 60,000 x 1280.

    >>> snapshot_needed(5, 6, False, 1, 60000), snapshot_needed(5, 6, True, 0, 60000)
    (False, True)
    >>> snapshot_needed(-1, 6, False, 1, 60000), snapshot_needed(5, 6, False, 1500, 60000)
    (True, True)
    """
    if seq == applied_seq:
        return False
    if applied_seq < 0 or added_since:
        return True
    return tombstones_since > max(COMPACT_TOMBSTONES_MIN, int(COMPACT_TOMBSTONES * elements))


@dataclass(frozen=True)
class Snapshot:
    path: Path
    applied_seq: int
    # for a manifest of the old checksum (sha256): the file's chunks as CHECKSUM digests them, taken in the same
    # pass, so that a writer can record them (`upgrade_checksums`) and later opens verify in a tenth of the time
    rehashed: Optional[list[str]] = None


def find_snapshot(directory: Path, dim: int) -> tuple[Optional[Snapshot], str]:
    """The manifest's snapshot if its file is present, whole and of this dimension; else (None, why not)."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.exists():
        return None, "no index snapshot"
    try:
        manifest = json.loads(manifest_path.read_text())
        path = directory / manifest["file"]
        expected, applied_seq = manifest["chunks"], int(manifest["applied_seq"])
        algorithm = manifest_checksum(manifest)
        if int(manifest["chunk_size"]) != CHECKSUM_CHUNK:
            return None, f"index snapshot checksummed in chunks of {manifest['chunk_size']} bytes"
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"index manifest unreadable ({exc})"
    if manifest.get("dim") != dim:
        return None, f"index snapshot has dimension {manifest.get('dim')}, the memory {dim}"
    if not path.exists():
        return None, f"index file {path.name} missing"
    algorithms = (algorithm,) if algorithm == CHECKSUM else (algorithm, CHECKSUM)
    digests = chunk_digests_by(path, algorithms)
    if digests[0] != expected:
        return None, f"index file {path.name} does not match its checksum (truncated or corrupted)"
    try:
        # its bytes are those checked whole when it was saved: the header says whether it is what the manifest names
        check_saved_file(path, dim, manifest.get("count"), links=False)
    except SnapshotError as exc:  # a whole file that is not what its manifest says (another index copied in)
        return None, str(exc)
    return Snapshot(path, applied_seq, digests[1] if len(digests) > 1 else None), "ok"


def upgrade_checksums(directory: Path, snapshot: Snapshot) -> bool:
    """Record `snapshot.rehashed` (its chunks under CHECKSUM) in the manifest, if it still names that snapshot, so
    that later opens verify it the fast way; a writer's step, never a reader's. True when the manifest was written."""
    if not snapshot.rehashed:
        return False
    manifest_path = directory / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("file") != snapshot.path.name or int(manifest.get("applied_seq", -2)) != snapshot.applied_seq \
            or manifest_checksum(manifest) == CHECKSUM:
        return False
    write_json_atomic(manifest_path, {**manifest, "checksum": CHECKSUM, "chunks": snapshot.rehashed})
    return True


def patch_snapshot(directory: Path, replacements: Sequence[tuple[bytes, bytes]]) -> Optional[int]:
    """Overwrite byte runs in the current snapshot file in place, then re-hash only the chunks touched.

    Each (old, new) pair is an element's stored vector followed by its 8-byte label (unique per element), as hnswlib
    lays them out; pairs not found (already patched, or added after the snapshot) are skipped. A crash midway leaves
    a file that fails its checksum, which the next open rebuilds from the store. Index files the manifest does not
    name (left by a crash during a snapshot) are removed. Returns how many were patched, or None when the snapshot
    cannot be patched (no manifest, another format): the caller must then write a fresh one.
    """
    manifest_path = directory / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
        path = directory / manifest["file"]
        if manifest.get("format") != SNAPSHOT_FORMAT or int(manifest["chunk_size"]) != CHECKSUM_CHUNK:
            return None
        manifest["chunks"]
        algorithm = manifest_checksum(manifest)  # touched chunks are re-hashed the way the others were
    except (OSError, ValueError, KeyError, TypeError):
        remove_unnamed_files(directory, None)
        return None
    remove_unnamed_files(directory, path)
    if not path.exists():
        return None
    touched, patched = set(), 0
    chunks = list(manifest["chunks"])
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as data:
        found = []
        if any(len(old) != len(new) for old, new in replacements):
            raise ValueError("a patch must keep the length of what it replaces")
        # each element where its label puts it (its record), patched only if it still holds the old bytes there: no
        # search of the file for them (one pass of ~1 s for 200 elements at 60,000 x 1280); the certificate's byte
        # scan still looks for them at every offset of every file
        places = element_offsets(path, [int.from_bytes(old[-8:], "little") for old, _ in replacements])
        for old, new in replacements:
            at = places.get(int.from_bytes(old[-8:], "little"))
            if at is None or data[at:at + len(old)] != old:
                continue
            found.append((at, new))
            touched.update(range(at // CHECKSUM_CHUNK, (at + len(new) - 1) // CHECKSUM_CHUNK + 1))
        if any(index >= len(chunks) or _chunk_digest(data, index, algorithm) != chunks[index] for index in touched):
            return None  # damaged already: re-hashing would bless the damage; the caller writes a fresh snapshot
        for at, new in found:
            data[at:at + len(new)] = new
            patched += 1
        data.flush()
        os.fsync(f.fileno())
        for index in sorted(touched):
            chunks[index] = _chunk_digest(data, index, algorithm)
    if touched:
        write_json_atomic(manifest_path, {**manifest, "chunks": chunks})
    return patched


def _chunk_digest(data, index: int, algorithm: str) -> str:
    return DIGESTS[algorithm](data[index * CHECKSUM_CHUNK:(index + 1) * CHECKSUM_CHUNK])


def remove_unnamed_files(directory: Path, keep: Optional[Path]) -> None:
    """Delete every file in the index directory but the manifest and `keep`: stale snapshots and temp files left
    by a crash may hold vectors that a purge must not leave behind."""
    for path in directory.glob("*"):
        if path.is_file() and path.name != MANIFEST_NAME and path != keep:
            path.unlink(missing_ok=True)


def reconcile_deleted_marks(index: "AnnIndex", live_ids: np.ndarray, snapshot: Path) -> int:
    """Clear hnswlib's own deleted mark on every element of the loaded `snapshot` that the database says is live (a
    snapshot saved after a mark_deleted whose tombstone never committed): such an element breaks every search that
    reads its vector ("Label not found"). Returns how many marks were cleared."""
    marked = marked_deleted_in_file(snapshot)
    stale = marked[np.isin(marked, np.asarray(live_ids, dtype=np.int64))] if len(marked) else marked
    for item in stale.tolist():
        if item in index._deleted:
            continue
        try:
            index._index.unmark_deleted(item)
        except RuntimeError:
            continue  # not marked after all
    if len(stale):
        index._live_matrix = None
        log.warning("%d element(s) of the index were marked deleted though the database holds them live; "
                    "unmarked", len(stale))
    return len(stale)
