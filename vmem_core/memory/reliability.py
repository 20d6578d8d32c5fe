"""`memory.reliability`: v(m), how often an exemplar votes against the label of a differently-labelled neighbour
(the paper's pruning signal), the exemplars hard pruning keeps, and v of found neighbours (soft pruning)."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

import numpy as np

from ..errors import VmemError
from ..storage.neighbour_table import NeighbourTable
from ..voting import (DEFAULT_K, DEFAULT_RELIABILITY_TOP_N, VoteSettings, id_positions, reliability_counts,
                      resolve_settings)
from .part import Part

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]

# the neighbour table keeps as many leave-one-out neighbours as the memory's pages ask for by default: reliability's
# top_n and curation's k; a deeper request is computed on demand
NEIGHBOUR_TABLE_DEPTH = max(DEFAULT_K, DEFAULT_RELIABILITY_TOP_N)


class ReliabilityReads(Part):
    """Reliability of one open memory's exemplars (`memory.reliability(top_n)`, a reader's too): every method reads,
    and caches its result until the memory changes. Its inside is the neighbour table (every live exemplar's
    leave-one-out neighbours, vmem_core.storage.neighbour_table), kept up to date edit by edit."""

    __slots__ = ()
    _read_half = True

    def table(self, progress: Optional[Progress] = None, need: Optional[int] = None) -> NeighbourTable:
        """Every live exemplar's leave-one-out neighbours, brought up to date with the changes since it was last used;
        built in full (with `progress`) only where the memory has none yet. With `need`, rows that lost entries to
        deletes or purges are searched again only where they list fewer than `need` (the first `need` columns are
        then exact; the rest may pad); by default every row is complete."""
        with self._lock.read():  # the change counter and the live ids of one state
            seq, live = self._store.seq(), self._table.ids
        return self._neighbours.current(live, seq, _IndexSearch(self._memory), progress, need)

    def table_is_kept(self) -> bool:
        """Whether the memory keeps its neighbour table on disk, as current as the one this process holds (a memory
        from before there were tables has none: then the first use in each process that cannot save one searches
        the whole memory)."""
        return self._neighbours.kept()

    def kept_ids(self, settings: Optional[VoteSettings] = None) -> np.ndarray:
        """Live exemplars that hard pruning keeps under `settings`: reliability v (over top_n) < threshold."""
        return self.kept_under(resolve_settings(settings))

    def kept_under(self, settings: VoteSettings) -> np.ndarray:
        """`kept_ids` for settings already resolved (a caller that resolved them once passes them on as they are)."""
        threshold, top_n = settings.threshold, settings.top_n

        def compute() -> np.ndarray:
            ids, counts = self.counts(top_n)  # ids sorted
            return ids[counts < threshold]

        return self._memory.derived(("kept", threshold, top_n), compute)

    def __call__(self, top_n: int = DEFAULT_RELIABILITY_TOP_N) -> dict[int, int]:
        """v(m): how often exemplar m is among the top-N leave-one-out neighbours of a differently-labelled item.

        Cached until the memory changes.
        """
        def as_dict() -> dict[int, int]:
            ids, counts = self.counts(top_n)
            return dict(zip(ids.tolist(), counts.tolist()))  # plain ints, made at once

        return self._memory.derived(("reliability", top_n), as_dict)

    def counts(self, top_n: int = DEFAULT_RELIABILITY_TOP_N) -> tuple[np.ndarray, np.ndarray]:
        """v as arrays: (ids (n,) sorted, v of each (n,)), cached until the memory changes. What pages and pruning
        read: the dictionary of `self(top_n)` is made from these only when asked for (~15-30 ms at 60,000)."""
        return self._memory.derived(("reliability counts", top_n), lambda: self._compute_counts(top_n))

    def _compute_counts(self, top_n: int) -> tuple[np.ndarray, np.ndarray]:
        if top_n < 1:
            raise VmemError(f"top_n must be at least 1, got {top_n}")
        item_ids, neighbor_ids, _ = self._memory.search.memory_neighbors(top_n)
        item_ids = np.asarray(item_ids, dtype=np.int64)
        counts = np.asarray(reliability_counts(item_ids, self._table.class_indices(item_ids), neighbor_ids),
                            dtype=np.int64)
        if len(item_ids) > 1 and not np.all(item_ids[1:] > item_ids[:-1]):
            order = np.argsort(item_ids, kind="stable")
            item_ids, counts = item_ids[order], counts[order]
        return item_ids, counts

    def of_neighbors(self, neighbor_ids: np.ndarray, top_n: int = DEFAULT_RELIABILITY_TOP_N) -> np.ndarray:
        """v of each neighbour id (same shape; 0 for ids with no count, e.g. -1 padding): a gather, not a dictionary
        lookup per neighbour (100,000 of them for an evaluation split 100 deep)."""
        ids, counts = self.counts(top_n)
        at = id_positions(ids, np.asarray(neighbor_ids, dtype=np.int64))
        return np.where(at >= 0, counts[np.maximum(at, 0)] if len(counts) else 0, 0).astype(np.int64)


class Reliability(ReliabilityReads):
    """`memory.reliability`: the reads, and the upkeep of the neighbour table on disk (a writer's)."""

    __slots__ = ()
    _read_half = False

    def table_in_background(self) -> Optional[threading.Thread]:
        """Where the memory has no neighbour table on disk (built before there was one), build it in a thread and
        save it (unless read-only); returns the thread, or None where there is nothing to do."""
        memory = self._memory
        if memory._neighbours.loaded() is not None or memory._neighbours.path.exists():
            return None

        def build() -> None:
            try:
                ReliabilityReads(memory).table()
                if not memory._read_only:
                    memory._neighbours.save()
            except Exception:  # noqa: BLE001 - the next reader builds it instead, and reports what fails
                log.exception("building the neighbour table of %s in the background failed", memory.path)

        thread = threading.Thread(target=build, name="vmem-neighbour-table", daemon=True)
        thread.start()
        return thread

    def rebuild_table(self, progress: Optional[Progress] = None) -> NeighbourTable:
        """Recompute the neighbour table from scratch (resumable: an interrupted rebuild continues from its
        checkpoint), e.g. after changing the index's search parameters."""
        with self._lock.read():
            seq, live = self._store.seq(), self._table.ids
        return self._neighbours.rebuild(live, seq, _IndexSearch(self._memory), progress)


class _IndexSearch:
    """The neighbour table's view of a memory (vmem_core.storage.neighbour_table.VectorSearch): its index, its vault."""

    def __init__(self, memory) -> None:
        self._memory = memory

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._memory._lock.read():
            return self._memory._index.search(vectors, k)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self._memory._store.vault.read_vectors(ids)

    def distances(self, vectors: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return 1.0 - self._memory._store.vault.similarities(vectors, ids)
