"""`memory.reliability`: v(m), how often an exemplar votes against the label of a differently-labelled neighbour
(the paper's pruning signal), the exemplars hard pruning keeps, and v of found neighbours (soft pruning)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import VmemError
from ..voting import DEFAULT_RELIABILITY_TOP_N, VoteSettings, reliability_counts, resolve_settings
from .part import Part


class Reliability(Part):
    """Reliability of one open memory's exemplars (`memory.reliability(top_n)`); every method reads, and caches its
    result until the memory changes."""

    __slots__ = ()

    def kept_ids(self, settings: Optional[VoteSettings] = None) -> np.ndarray:
        """Live exemplars that hard pruning keeps under `settings`: reliability v (over top_n) < threshold."""
        return self.kept_under(resolve_settings(settings))

    def kept_under(self, settings: VoteSettings) -> np.ndarray:
        """`kept_ids` for settings already resolved (a caller that resolved them once passes them on as they are)."""
        threshold, top_n = settings.threshold, settings.top_n

        def compute() -> np.ndarray:
            v = self(top_n)
            return np.asarray(sorted(i for i, count in v.items() if count < threshold), dtype=np.int64)

        return self._memory.derived(("kept", threshold, top_n), compute)

    def __call__(self, top_n: int = DEFAULT_RELIABILITY_TOP_N) -> dict[int, int]:
        """v(m): how often exemplar m is among the top-N leave-one-out neighbours of a differently-labelled item.

        Cached until the memory changes.
        """
        return self._memory.derived(("reliability", top_n), lambda: self._compute_reliability(top_n))

    def _compute_reliability(self, top_n: int) -> dict[int, int]:
        if top_n < 1:
            raise VmemError(f"top_n must be at least 1, got {top_n}")
        table = self._table
        item_ids, neighbor_ids, _ = self._memory.search.memory_neighbors(top_n)
        counts = reliability_counts(item_ids, table.class_indices(item_ids), neighbor_ids)
        return {int(i): int(c) for i, c in zip(item_ids, counts)}

    def of_neighbors(self, neighbor_ids: np.ndarray, top_n: int = DEFAULT_RELIABILITY_TOP_N) -> np.ndarray:
        """v of each neighbour id (same shape; 0 for ids with no count, e.g. -1 padding)."""
        v = self(top_n)
        return np.vectorize(lambda i: v.get(int(i), 0), otypes=[np.int64])(np.asarray(neighbor_ids))
