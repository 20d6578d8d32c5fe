"""Retrieve once, evaluate many: every query's K nearest memory items, found by exact search and kept in memory.

Experiments then vote over this cache for every rule, every k, every pruning setting and every subsample of the
memory without searching again. A subsample (some classes held out, n exemplars per class, pruned exemplars) reuses
the cache wherever it is exact: the nearest kept items among a query's K cached neighbours are its nearest kept items
overall as long as at least `depth` of them survive; only the other rows are searched again, exactly, among the kept
items.

Search here is exact (`vmem_core.backends.exact.exact_top_k`, the project's one exact search), not hnswlib's
approximate index, so that reported accuracies do not depend on index parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import VmemError

Progress = Callable[[int, int], None]


def exact_top_k(
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    exclude: Optional[np.ndarray] = None,
    progress: Optional[Progress] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`vmem_core.backends.exact.exact_top_k` on this process's device (a GPU where there is one): imported on
    first use, because it loads torch, which `import vmem_core` should not pay for."""
    from ..backends.exact import exact_top_k as search

    return search(queries, vectors, k, exclude, progress, device=None)


@dataclass
class NeighborCache:
    """Each query's K nearest memory items (positions into the memory arrays), nearest first.

    `self_positions[i]` is query i's own position in the memory for leave-one-out caches (-1 otherwise); it is never
    among its neighbours.
    """

    memory_vectors: np.ndarray  # (m, d) unit rows
    memory_labels: np.ndarray  # (m,) str
    query_vectors: np.ndarray  # (n, d)
    query_labels: np.ndarray  # (n,) str
    positions: np.ndarray  # (n, K) int64 into the memory
    distances: np.ndarray  # (n, K) float32
    self_positions: np.ndarray  # (n,) int64, -1 where the query is not a memory item

    @property
    def depth(self) -> int:
        return self.positions.shape[1]

    def __len__(self) -> int:
        return len(self.query_labels)

    def restricted(self, keep: np.ndarray, depth: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact neighbours among the memory items where `keep` is True: (positions, distances) of shape
        (n, min(depth, kept items)), nearest first. Rows whose cached list holds too few kept items are searched
        again among the kept items only."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self.memory_labels),):
            raise VmemError(f"keep mask has shape {keep.shape}; expected ({len(self.memory_labels)},)")
        usable = int(keep.sum()) - (1 if (self.self_positions >= 0).any() else 0)
        depth = min(self.depth if depth is None else int(depth), max(usable, 0))
        mask = keep[self.positions]
        reused = min(depth, self.depth)
        order = np.argsort(~mask, axis=1, kind="stable")[:, :reused]
        positions = np.zeros((len(self), depth), dtype=np.int64)
        distances = np.zeros((len(self), depth), dtype=np.float32)
        positions[:, :reused] = np.take_along_axis(self.positions, order, axis=1)
        distances[:, :reused] = np.take_along_axis(self.distances, order, axis=1)
        short = np.flatnonzero(mask.sum(axis=1) < depth)
        if len(short):
            kept_positions = np.flatnonzero(keep)
            exclude = None
            if (self.self_positions >= 0).any():
                lookup = np.full(len(keep), -1, dtype=np.int64)
                lookup[kept_positions] = np.arange(len(kept_positions))
                own = self.self_positions[short]
                exclude = np.where(own >= 0, lookup[np.maximum(own, 0)], -1)
            found, found_d = exact_top_k(self.query_vectors[short], self.memory_vectors[kept_positions], depth,
                                         exclude)
            positions[short] = kept_positions[found]
            distances[short] = found_d
        return positions, distances

    def subset_queries(self, rows: np.ndarray) -> "NeighborCache":
        """The same cache for a subset of the queries."""
        rows = np.asarray(rows)
        return NeighborCache(self.memory_vectors, self.memory_labels, self.query_vectors[rows],
                              self.query_labels[rows], self.positions[rows], self.distances[rows],
                              self.self_positions[rows])


def build_cache(
    memory_vectors: np.ndarray,
    memory_labels: Sequence[str],
    query_vectors: Optional[np.ndarray] = None,
    query_labels: Optional[Sequence[str]] = None,
    k: int = 100,
    progress: Optional[Progress] = None,
) -> NeighborCache:
    """Search once: each query's k nearest memory items. Without queries, the memory items themselves are the
    queries, each with its k nearest *other* items (leave-one-out: K + 1 searched, itself removed)."""
    memory_vectors = np.asarray(memory_vectors, dtype=np.float32)
    memory_labels = np.asarray(list(memory_labels), dtype=object)
    if memory_vectors.ndim != 2 or len(memory_vectors) != len(memory_labels):
        raise VmemError(f"memory vectors {memory_vectors.shape} and {len(memory_labels)} labels do not match")
    if int(k) < 1:
        raise VmemError(f"k must be at least 1, got {k}")
    if query_vectors is None:
        own = np.arange(len(memory_vectors), dtype=np.int64)
        positions, distances = exact_top_k(memory_vectors, memory_vectors, k, own, progress)
        return NeighborCache(memory_vectors, memory_labels, memory_vectors, memory_labels, positions, distances, own)
    query_vectors = np.asarray(query_vectors, dtype=np.float32)
    query_labels = np.asarray(list(query_labels if query_labels is not None else [None] * len(query_vectors)),
                              dtype=object)
    if query_vectors.ndim != 2 or query_vectors.shape[1] != memory_vectors.shape[1]:
        raise VmemError(f"query vectors {query_vectors.shape} do not match memory dimension {memory_vectors.shape[1]}")
    if len(query_vectors) != len(query_labels):
        raise VmemError(f"{len(query_vectors)} query vectors but {len(query_labels)} labels")
    positions, distances = exact_top_k(query_vectors, memory_vectors, k, None, progress)
    return NeighborCache(memory_vectors, memory_labels, query_vectors, query_labels, positions, distances,
                          np.full(len(query_vectors), -1, dtype=np.int64))


def memory_arrays(memory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, unit vectors, labels) of a VisualMemory's live exemplars, for building caches."""
    table = memory.table
    ids, vectors = memory.exemplars.embeddings()
    classes = table.class_indices(ids)
    live = classes >= 0  # rows added after the table was taken
    labels = np.asarray([table.labels[c] for c in classes[live]], dtype=object)
    return ids[live], vectors[live], labels
