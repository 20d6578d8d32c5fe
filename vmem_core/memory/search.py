"""`memory.search`: the nearest exemplars of a query, and the votes over them.

`memory.search(embeddings, k, allowed_ids=None, labels=None)` is the raw k-nearest search; `neighbors` is the search
that voting uses (hard pruning searches the kept exemplars only), `vote` weighs found neighbours, and
`classify_embeddings` does both. `memory_neighbors` is the leave-one-out search over the memory's own items.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..classification import Classification
from ..errors import UnknownIdError
from ..label_table import LabelTable
from ..neighbour_set import NeighbourSet
from ..storage.neighbour_table import _member
from ..voting import VoteSettings, prepare_votes, resolve_settings, vote_all_k
from .part import Part, check_embeddings
from .query_rows import MIN_QUERIES
from .reliability import NEIGHBOUR_TABLE_DEPTH


class Search(Part):
    """Searches of one open memory (`memory.search`); every method reads."""

    __slots__ = ()

    def __call__(
        self, embeddings: np.ndarray, k: int, allowed_ids: Optional[np.ndarray] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live exemplars of each embedding: (ids (n, k'), distances (n, k')), k' = min(k, candidates).

        `allowed_ids` restricts the search to those exemplars, `labels` to exemplars with one of those labels.
        """
        queries = check_embeddings(embeddings, self._memory.dim)
        if isinstance(labels, str):
            labels = [labels]
        with self._lock.read():
            return self._index.search(queries, k, allowed_ids=allowed_ids, labels=labels)

    def neighbors(
        self, embeddings: np.ndarray, settings: Optional[VoteSettings] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The settings.k neighbours that vote: with hard pruning, the k nearest among the kept exemplars (ranks
        renumbered over them), so every k has k voters wherever enough exemplars are kept."""
        settings = resolve_settings(settings)
        if settings.pruning == "hard":
            return self(embeddings, settings.k, allowed_ids=self._memory.reliability.kept_ids(settings))
        return self(embeddings, settings.k)

    def memory_neighbors(
        self, k: int, ids: Optional[Sequence[int]] = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Leave-one-out neighbours of memory items: each item's k nearest other live exemplars.

        Returns:
            (item ids (n,), neighbour ids (n, k'), distances (n, k')), k' = min(k, live exemplars - 1).
        """
        if ids is None and int(k) <= NEIGHBOUR_TABLE_DEPTH:
            return self._memory.reliability.table(need=int(k)).leave_one_out(int(k))
        if ids is None:
            # deeper than the table: computed once per change and per depth
            seq = self._store.seq()  # read before computing: a write meanwhile makes this result stale, not current
            cached = self._derived.get(("loo", "deepest"))
            if cached is not None and cached[0] == seq and cached[1][1].shape[1] >= min(
                int(k), max(len(self._memory) - 1, 0)
            ):
                items, found, distances = cached[1]
                return items, found[:, :k], distances[:, :k]
            result = self._memory_neighbors(int(k), None)
            self._derived[("loo", "deepest")] = (seq, result)
            return result
        return self._memory_neighbors(int(k), np.asarray(ids, dtype=np.int64))

    def _memory_neighbors(
        self, k: int, ids: Optional[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._lock.read():
            table = self._table
            item_ids = table.ids.copy() if ids is None else ids
            unknown = item_ids[table.class_indices(item_ids) < 0]
            if len(unknown):
                raise UnknownIdError(f"no live exemplar with id(s) {', '.join(map(str, unknown[:20]))}")
            k = min(k, max(len(table.ids) - 1, 0))
            if len(item_ids) == 0 or k == 0:
                return item_ids, np.zeros((len(item_ids), 0), np.int64), np.zeros((len(item_ids), 0), np.float32)
            # the database reads faster than hnswlib's get_items
            stored_ids, vectors = self._memory.exemplars.embeddings(item_ids)
            order = np.searchsorted(stored_ids, item_ids)
            found, distances = self._index.search(vectors[order], k + 1)
        is_self = found == item_ids[:, None]
        # Drop the item itself; if the approximate search missed it, drop the farthest instead.
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), found.shape[1] - 1)
        keep = np.ones_like(found, dtype=bool)
        keep[np.arange(len(found)), drop] = False
        return (
            item_ids,
            found[keep].reshape(len(found), -1)[:, :k],
            distances[keep].reshape(len(found), -1)[:, :k],
        )

    def vote(
        self,
        neighbor_ids: np.ndarray,
        distances: np.ndarray,
        settings: Optional[VoteSettings] = None,
        table: Optional[LabelTable] = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Votes over found neighbours: (class indices into table.labels, weights, positions kept, predictions for
        every k). Neighbours for hard pruning should come from `neighbors` with the same settings; the hard mask
        applied here then drops nothing."""
        settings = resolve_settings(settings)
        table = table or self._table
        neighbor_ids = np.atleast_2d(neighbor_ids)
        reliability = (None if settings.pruning == "none"
                       else self._memory.reliability.of_neighbors(neighbor_ids, settings.top_n))
        classes, weights, positions = prepare_votes(table.class_indices(neighbor_ids), distances, settings, reliability)
        return classes, weights, positions, vote_all_k(classes, weights, len(table.labels))

    def classify_embeddings(
        self,
        embeddings: np.ndarray,
        settings: Optional[VoteSettings] = None,
        names: Optional[Sequence[Optional[str]]] = None,
        **changes,
    ) -> list[Classification]:
        """Classify precomputed query embeddings by the weighted vote of their k nearest exemplars.

        Args:
            embeddings: (n, dim) query features.
            settings: how to vote (k, rule, pruning, threshold, top_n, rule parameters); default VoteSettings().
            names: recorded as each result's `image`.
            changes: single settings by keyword, e.g. `k=5, rule="softmax"` (applied over `settings`).

        Raises:
            BadSettingError: a setting out of range.
        """
        settings = resolve_settings(settings, **changes)  # once per call: what follows takes it as it is
        return self._neighbour_set(embeddings, settings.k, settings).classifications(settings, names)

    def neighbour_set(
        self, embeddings: np.ndarray, depth: int, settings: Optional[VoteSettings] = None
    ) -> NeighbourSet:
        """One search: each query's `depth` nearest exemplars that may vote under `settings` (with hard pruning,
        among the exemplars it keeps), with their labels and, where the pruning needs it, their reliability v. The
        set answers votes at any k <= depth, attribution (depth k + 1) and which queries lean on which exemplars
        without searching again (vmem_core.neighbour_set)."""
        return self._neighbour_set(embeddings, depth, resolve_settings(settings))

    def _neighbour_set(self, embeddings: np.ndarray, depth: int, settings: VoteSettings) -> NeighbourSet:
        queries = check_embeddings(embeddings, self._memory.dim)
        reliability = self._memory.reliability
        allowed = reliability.kept_under(settings) if settings.pruning == "hard" else None
        depth = int(depth)
        key = self._memory._query_rows.key(queries, depth, allowed is not None) if len(queries) >= MIN_QUERIES else None
        with self._lock.read():  # the exemplars searched among and the search: one state
            table = self._table  # one table for the labels of the whole set
            members = table.ids if allowed is None else allowed[_member(allowed, table.ids)]
            ids, distances = self._memory._query_rows.rows(
                key, queries, depth, members,
                lambda rows, k: self._index.search(rows, k, allowed_ids=allowed),
                self._store.vault.read_vectors)
        v = None if settings.pruning == "none" else reliability.of_neighbors(ids, settings.top_n)
        return NeighbourSet(ids, distances, tuple(table.labels), table.class_indices(ids), settings, v)
