"""Who drove a prediction, and which predictions lean on a set of exemplars."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .memory import Classification, VisualMemory


def winning_shares(result: Classification) -> list[float]:
    """Each neighbour's share of the winning class's score (0 for neighbours of other classes)."""
    total = result.scores.get(result.label, 0.0)
    return [n.weight / total if total and n.label == result.label else 0.0 for n in result.neighbors]


def dependent_queries(
    memory: VisualMemory, query_embeddings: np.ndarray, exemplar_ids: Sequence[int], k: int
) -> list[int]:
    """Indices of the queries whose k nearest exemplars include any of `exemplar_ids`."""
    if len(query_embeddings) == 0 or not len(exemplar_ids):
        return []
    found, _ = memory.search(query_embeddings, k)
    hits = np.isin(found, np.asarray(list(exemplar_ids), dtype=np.int64)).any(axis=1)
    return np.flatnonzero(hits).tolist()
