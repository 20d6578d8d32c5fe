"""Who drove a prediction, and which predictions lean on a set of exemplars."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from ..classification import Classification
from ..errors import VmemError
from ..memory import VisualMemory
from ..voting import EXPLAIN_SETTINGS, VoteSettings, label_classes, prepare_votes, soft_or_unpruned, vote_all_k


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


def counterfactual_predictions(
    classes: np.ndarray,
    distances: np.ndarray,
    settings: VoteSettings,
    num_classes: int,
    reliability: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The prediction at k, and the prediction at k with each of the first k neighbours removed, exactly.

    Removing a neighbour lets the (k+1)-th one in and renumbers the ranks behind it, so the inputs hold k + 1
    neighbours per row (fewer where the memory is smaller: then removal just leaves k - 1 voters).

    Args:
        classes: int (n, k+1) class indices, nearest first (-1 for missing).
        distances: float (n, k+1).
        settings: k (voters per prediction), the rule and its parameters; hard pruning has already chosen the
            neighbours, soft pruning applies where `reliability` is given.
        num_classes: C.
        reliability: v per neighbour, (n, k+1), for soft pruning; None for none.

    Returns:
        (predicted (n,), without (n, k)): without[:, j] is the prediction with neighbour j left out (-1: no voter).

    >>> counterfactual_predictions(np.array([[0, 1, 1]]), np.zeros((1, 3)), VoteSettings(k=2), 2)[1].tolist()
    [[1, 0]]
    """
    classes = np.asarray(classes, dtype=np.int64)
    distances = np.asarray(distances, dtype=np.float64)
    voting = soft_or_unpruned(settings, reliability)
    k = settings.k
    depth = classes.shape[1]
    used = min(k, depth)

    def predict(columns: np.ndarray, voters: int) -> np.ndarray:
        votes, weights, _ = prepare_votes(classes[:, columns], distances[:, columns], voting,
                                          None if reliability is None else reliability[:, columns])
        if voters == 0 or votes.shape[1] == 0:
            return np.full(len(classes), -1, dtype=np.int64)
        return vote_all_k(votes[:, :voters], weights[:, :voters], num_classes)[:, -1]

    predicted = predict(np.arange(used), used)
    without = np.empty((len(classes), used), dtype=np.int64)
    for j in range(used):
        columns = np.delete(np.arange(min(k + 1, depth)), j)
        without[:, j] = predict(columns, min(used, len(columns)))
    return predicted, without


@dataclass(frozen=True)
class NeighborAttribution:
    id: int
    label: str
    rank: int
    share: float  # of the winning class's score (0 for other classes)
    without: Optional[str]  # the prediction if this exemplar were not in memory
    prediction: Optional[str]  # the prediction with every exemplar present

    @property
    def flips(self) -> bool:
        return self.without != self.prediction


def attribution_rows(explained: Sequence[NeighborAttribution]) -> list[dict]:
    """One query's attribution as table rows (for the app and the CLI)."""
    return [{"rank": n.rank, "id": n.id, "label": n.label, "share of winning score": round(n.share, 4),
             "prediction without it": n.without, "flips": n.flips} for n in explained]


def _neighbor_votes(memory: VisualMemory, embeddings: np.ndarray, settings: VoteSettings):
    """k + 1 voting neighbours per query (hard pruning already applied by the search) as class indices."""
    table = memory.table
    ids, distances = memory.search.neighbors(embeddings, replace(settings, k=settings.k + 1))
    classes = table.class_indices(ids)
    reliability = memory.reliability.of_neighbors(ids, settings.top_n) if settings.pruning == "soft" else None
    return table, ids, distances, classes, reliability


def attribute(
    memory: VisualMemory, embeddings: np.ndarray, settings: VoteSettings = EXPLAIN_SETTINGS
) -> list[list[NeighborAttribution]]:
    """For each query, its settings.k voting neighbours with their share of the winning score and the exact
    counterfactual prediction without each of them (from one search of k + 1 neighbours)."""
    table, ids, distances, classes, reliability = _neighbor_votes(memory, embeddings, settings)
    predicted, without = counterfactual_predictions(classes, distances, settings, len(table.labels), reliability)
    used = without.shape[1]
    votes, weights, _ = prepare_votes(classes[:, :used], distances[:, :used], soft_or_unpruned(settings, reliability),
                                      None if reliability is None else reliability[:, :used])
    out = []
    for row in range(len(ids)):
        winner = predicted[row]
        total = weights[row][votes[row] == winner].sum() if winner >= 0 else 0.0
        name = table.labels[winner] if winner >= 0 else None
        out.append([
            NeighborAttribution(
                id=int(ids[row, j]), label=table.labels[classes[row, j]], rank=j,
                share=float(weights[row, j] / total) if total and classes[row, j] == winner else 0.0,
                without=table.labels[without[row, j]] if without[row, j] >= 0 else None, prediction=name,
            )
            for j in range(used) if classes[row, j] >= 0
        ])
    return out


def exemplar_influence(
    memory: VisualMemory,
    embeddings: np.ndarray,
    true_labels: Sequence[str],
    settings: VoteSettings = EXPLAIN_SETTINGS,
):
    """Per exemplar over a labelled eval set: how many correct predictions it supported (voted for the winner),
    how many wrong ones it drove, and how many predictions flip without it.

    Returns:
        DataFrame (id, label, supported_correct, drove_wrong, flips, flips_to_correct, flips_to_wrong), sorted by
        flips then wrong predictions driven, only exemplars that voted for some query.
    """
    import pandas as pd

    if len(embeddings) != len(true_labels):
        raise VmemError(f"{len(embeddings)} query embeddings but {len(true_labels)} labels")
    table, ids, distances, classes, reliability = _neighbor_votes(memory, embeddings, settings)
    predicted, without = counterfactual_predictions(classes, distances, settings, len(table.labels), reliability)
    used = without.shape[1]
    truth = label_classes(true_labels, table.labels, missing=-2)  # -2: never a prediction, so always wrong
    voter_ids = ids[:, :used]
    present = classes[:, :used] >= 0
    supports = (classes[:, :used] == predicted[:, None]) & present
    correct = (predicted == truth)[:, None]
    flips = (without != predicted[:, None]) & present
    frame = pd.DataFrame({
        "id": voter_ids[present],
        "supported_correct": (supports & correct)[present],
        "drove_wrong": (supports & ~correct)[present],
        "flips": flips[present],
        "flips_to_correct": (flips & (without == truth[:, None]))[present],
        "flips_to_wrong": (flips & correct)[present],
    })
    columns = ["supported_correct", "drove_wrong", "flips", "flips_to_correct", "flips_to_wrong"]
    summary = frame.groupby("id")[columns].sum().astype(int).reset_index()
    summary.insert(1, "label", [table.labels[c] for c in table.class_indices(summary["id"].to_numpy())])
    return summary.sort_values(["flips", "drove_wrong", "id"], ascending=[False, False, True]).reset_index(drop=True)
