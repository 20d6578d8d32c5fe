"""The embedded hnswlib backend: an in-process AnnIndex with crash-safe snapshots in the memory's `index/` folder.

On open it loads the snapshot and replays the store's changes made after it, or rebuilds from the store when the
snapshot is missing or damaged. A purge overwrites the vectors in memory and patches them out of the snapshot file
in place (or writes a fresh snapshot when the file cannot be patched).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ..storage.layout import HNSW_DIR
from .base import Evidence, LabelLookup, RowFetcher, catch_up
from .hnsw_index import (AnnIndex, IndexParams, element_bytes, find_snapshot, patch_snapshot,
                         reconcile_deleted_marks, snapshot_needed, upgrade_checksums)

if TYPE_CHECKING:
    from ..storage.store import Store

log = logging.getLogger(__name__)


class HnswlibBackend:
    name = "hnswlib"

    def __init__(self, directory: Path, index: AnnIndex, applied_seq: int, label_lookup: LabelLookup) -> None:
        self.directory = directory
        self.index = index
        self.dim = index.dim
        self._applied_seq = applied_seq
        self._label_lookup = label_lookup
        # what changed since the snapshot: adds need a new one, tombstones only past the compaction threshold
        self._added_since = False
        self._tombstones_since = 0

    @classmethod
    def open(cls, directory: Path, dim: int, params: IndexParams, store: "Store",
             label_lookup: LabelLookup) -> "HnswlibBackend":
        snapshot, why = find_snapshot(directory, dim)
        seq = store.seq()
        if snapshot is not None and snapshot.applied_seq <= seq:
            try:
                index = AnnIndex.load(snapshot.path, dim, params, store.deleted_ids())
            except RuntimeError as exc:
                why = f"index file unreadable ({exc})"
            else:
                backend = cls(directory, index, snapshot.applied_seq, label_lookup)
                if snapshot.rehashed and not getattr(store, "read_only", False):
                    try:  # verified under the old checksum: later opens verify it under the fast one
                        upgrade_checksums(directory, snapshot)
                    except OSError as exc:
                        log.warning("index manifest of %s kept its sha256 checksums (%s)", directory.parent, exc)
                catch_up(backend, store)
                # purged rows stay in hnswlib as scrubbed, deleted elements: keep them out of every count
                index.mark_deleted(np.setdiff1d(index.ids(), store.all_ids()))
                # live in the database: live in the index
                reconcile_deleted_marks(index, store.live_labels()[0], snapshot.path)
                return backend
        elif snapshot is not None:
            why = f"index snapshot is ahead of the database (seq {snapshot.applied_seq} > {seq})"
        if why == "no index snapshot" and not len(store.all_ids()):
            return cls(directory, AnnIndex(dim, params), -1, label_lookup)  # a new memory: nothing to rebuild
        log.warning("rebuilding the index of %s from its database: %s", directory.parent, why)
        return cls.from_store(directory, dim, params, store, label_lookup)

    @classmethod
    def from_store(cls, directory: Path, dim: int, params: IndexParams, store: "Store",
                   label_lookup: LabelLookup) -> "HnswlibBackend":
        """A fresh index of the store's live rows, not yet snapshotted (applied_seq -1)."""
        ids, vectors = store.embeddings()
        index = AnnIndex(dim, params, capacity=max(1024, len(ids)))
        index.add(ids, vectors)
        return cls(directory, index, -1, label_lookup)

    # --- contents -------------------------------------------------------------------------------------------------
    @property
    def applied_seq(self) -> int:
        return self._applied_seq

    @property
    def live_count(self) -> int:
        return self.index.live_count

    def live_ids(self) -> np.ndarray:
        return self.index.live_ids()

    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[str] = ()) -> None:
        self._added_since = True
        self.index.add(ids, vectors)  # labels are the memory's: `label_lookup` reads them at search time

    def relabel(self, ids: Sequence[int], label: str) -> None:
        pass  # labels are looked up in the memory's label table when a search filters by label

    def mark_deleted(self, ids: Sequence[int]) -> None:
        self._tombstones_since += len(ids)
        self.index.mark_deleted(ids)

    def sync(self, live: np.ndarray, deleted: np.ndarray, fetch: RowFetcher) -> None:
        live = np.asarray(live, dtype=np.int64)
        present = np.isin(live, self.index.ids())
        self.index.unmark_deleted(live[present])
        if not present.all():
            ids, vectors, _ = fetch(live[~present])
            self._added_since = True
            self.index.add(ids, vectors)
        self._tombstones_since += int(present.sum()) + len(deleted)
        self.index.mark_deleted(deleted)

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: Optional[np.ndarray] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if labels is not None:
            with_labels = self._label_lookup(labels)
            allowed_ids = with_labels if allowed_ids is None else np.intersect1d(with_labels, allowed_ids)
        return self.index.search(queries, k, allowed_ids=allowed_ids)

    # --- durability -----------------------------------------------------------------------------------------------
    def persist(self, seq: int) -> None:
        """Snapshot the index when the database is far enough ahead of it (vmem_core.backends.hnsw_index.
        snapshot_needed: deletes alone are replayed from the database's log instead). A snapshot that cannot be
        written (a full disk) is not an error: the database has committed every change already, and the next open
        replays those after the last snapshot; the failed write leaves no file behind."""
        if snapshot_needed(self._applied_seq, seq, self._added_since, self._tombstones_since,
                           self.index.element_count()):
            try:
                self.index.save_snapshot(self.directory, seq)
            except OSError as exc:
                log.warning("index snapshot of %s not saved (%s); the next open replays the changes from the "
                            "database", self.directory.parent, exc)
                return
            self._applied_seq = seq
            self._added_since, self._tombstones_since = False, 0

    def purge(self, ids: Sequence[int], originals: np.ndarray, seq: int) -> list[Evidence]:
        """Overwrite the vectors with noise in memory, then in the snapshot file: patched in place where it holds
        them, else (no snapshot, another format, damaged, or older than this index) rewritten from memory."""
        ids = [int(i) for i in ids]
        noise = self.index.scrub(ids)  # the in-memory index: vectors overwritten, elements marked deleted
        rng = np.random.default_rng()
        # every id, also those the in-memory index lacks (tombstoned before a rebuild): the snapshot on disk may
        # still hold them
        replacements = [
            (element_bytes(original, i),
             element_bytes(noise[i] if i in noise else rng.normal(size=self.dim).astype(np.float32), i))
            for i, original in zip(ids, originals)
        ]
        rebuilt = self._applied_seq < 0  # the file on disk predates this index: patching it is not enough
        patched = None if rebuilt else patch_snapshot(self.directory, replacements)
        if patched is None:
            self._applied_seq = seq  # the live index holds every committed change
            self.index.save_snapshot(self.directory, seq)
            self._added_since, self._tombstones_since = False, 0
            how = "a fresh snapshot written from the scrubbed index"
        else:
            how = f"{patched} record(s) overwritten in place in the snapshot file"
        return [Evidence("index (hnswlib)", True,
                         f"{len(noise)} vector(s) overwritten with random unit vectors in the in-memory index and "
                         f"marked deleted; {how}")]

    def resident_bytes(self) -> int:
        return self.index.resident_bytes()

    def describe(self) -> dict:
        return {"name": self.name, "location": str(self.directory), "live": self.live_count}

    def set_search_ef(self, ef: int) -> None:
        self.index.set_search_ef(ef)

    def settle(self, step_guard, pause: float = 0.0) -> int:
        """Work a load left for later, for a long-lived process to run in the background: the loaded block's huge
        pages (AnnIndex.collapse_huge_pages, `pause` seconds between steps). Returns bytes collapsed."""
        return self.index.collapse_huge_pages(step_guard, pause)

    def close(self) -> None:
        pass



# --- the registry's hooks (vmem_core.backends.registry) -------------------------------------------------------------
def open_index(path: Path, record: dict, dim: int, params: IndexParams, store: "Store", label_lookup: LabelLookup,
               index_uri: Optional[str] = None) -> HnswlibBackend:
    return HnswlibBackend.open(path / HNSW_DIR, dim, params, store, label_lookup)


def build_index(path: Path, record: dict, old: dict, dim: int, params: IndexParams, store: "Store",
                label_lookup: LabelLookup) -> HnswlibBackend:
    shutil.rmtree(path / HNSW_DIR, ignore_errors=True)  # a half-built index from an interrupted migrate
    return HnswlibBackend.from_store(path / HNSW_DIR, dim, params, store, label_lookup)
