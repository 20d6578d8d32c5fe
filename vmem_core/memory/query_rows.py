"""A fixed set of queries' nearest exemplars, kept through edits: the Evaluate page asks the same question (its query
split, 100 deep) on every rerun and after every edit, and a search of all of it (0.6 s for the shipped split at
60,000 exemplars) for a change to one exemplar is what the neighbour table avoids for the memory's own items.

The rows are a function of the set of exemplars searched among (the live ones, or the ones hard pruning keeps), so
they are brought up to date from the difference between that set when they were found and now, in whatever process
it changed: a row that lists an exemplar no longer in the set is searched again; an exemplar new to the set enters
every other row where it is nearer than the row's last entry (a direct comparison with each query). With exact search
that is the search's own answer; with hnswlib, what the same approximate search finds row by row, as for the
neighbour table. A large change (more than `MAX_INCREMENTAL` exemplars in or out) searches every row again.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..storage.neighbour_table import _member, cosine_distances

MAX_INCREMENTAL = 256
MAX_KEPT = 8  # sets of queries remembered per memory (the shipped split, an upload or two, the Unlearning page's)
# fewer queries than this are searched every time: their search costs about what keeping them would, and a page that
# classifies one image after another would push the evaluation split out of the remembered sets
MIN_QUERIES = 32

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries, k) -> (ids, distances)
Vectors = Callable[[np.ndarray], np.ndarray]  # ids -> their unit vectors


@dataclass(frozen=True)
class QueryRows:
    members: np.ndarray  # sorted ids the rows were found among
    ids: np.ndarray  # (n, depth) nearest first
    distances: np.ndarray  # (n, depth)


class QueryRowsCache:
    """A memory's remembered query sets, by the queries' bytes and depth and whether hard pruning restricts them."""

    def __init__(self) -> None:
        self._rows: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(queries: np.ndarray, depth: int, restricted: bool) -> tuple:
        digest = hashlib.blake2b(np.ascontiguousarray(queries).tobytes(), digest_size=16).digest()
        return digest, queries.shape, int(depth), bool(restricted)

    def rows(self, key: tuple, queries: np.ndarray, depth: int, members: np.ndarray, search: Search,
             vectors: Vectors) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances) of each query's `depth` nearest among `members` (sorted): remembered, brought up to
        date, or searched."""
        if len(queries) < MIN_QUERIES:
            return search(queries, depth)
        with self._lock:
            known = self._rows.get(key)
        found = None if known is None else updated(known, queries, depth, members, search, vectors)
        if found is None:
            found = search(queries, depth)
        with self._lock:
            self._rows[key] = QueryRows(members, *found)
            self._rows.move_to_end(key)
            while len(self._rows) > MAX_KEPT:
                self._rows.popitem(last=False)
        return found

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


def updated(known: QueryRows, queries: np.ndarray, depth: int, members: np.ndarray, search: Search,
            vectors: Vectors) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The remembered rows brought to `members`, or None where searching every row again is the answer (a large
    change, or too few exemplars to fill a row: the rows then list every member and the search is cheap)."""
    if np.array_equal(known.members, members):
        return known.ids, known.distances
    ids, distances = known.ids, known.distances
    if ids.shape[1] < depth or len(members) <= depth or (ids < 0).any():
        return None
    removed = known.members[~_member(known.members, members)]
    added = members[~_member(members, known.members)]
    if len(removed) + len(added) > MAX_INCREMENTAL:
        return None
    ids, distances = ids.copy(), distances.copy()
    stale = _member(ids, removed).any(axis=1) if len(removed) else np.zeros(len(ids), dtype=bool)
    if len(added):
        d = cosine_distances(queries, vectors(added))  # (n, added)
        enters = (d < distances[:, -1:]) & ~stale[:, None]
        rows = np.flatnonzero(enters.any(axis=1))
        if len(rows):  # an exemplar the row lists already (found while it was added) does not enter twice
            enters[rows] &= ~(ids[rows][:, :, None] == added[None, None, :]).any(axis=1)
            merged_ids = np.concatenate([ids[rows], np.where(enters[rows], added[None, :], -1)], axis=1)
            merged_d = np.concatenate([distances[rows], np.where(enters[rows], d[rows], np.inf)], axis=1)
            best = np.argsort(merged_d, axis=1, kind="stable")[:, :depth]
            ids[rows] = np.take_along_axis(merged_ids, best, axis=1)
            distances[rows] = np.take_along_axis(merged_d, best, axis=1).astype(distances.dtype)
    if stale.any():
        found, found_d = search(queries[stale], depth)
        if found.shape[1] < depth:
            return None
        ids[stale], distances[stale] = found, found_d
    return ids, distances
