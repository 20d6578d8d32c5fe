"""Who drove a prediction, and which predictions lean on a set of exemplars."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from ..classification import Classification
from ..errors import VmemError
from ..memory import VisualMemory
# counterfactual_predictions lived here before the neighbour set took it: imported from here too
from ..neighbour_set import NeighbourSet, counterfactual_predictions  # noqa: F401
from ..voting import EXPLAIN_SETTINGS, VoteSettings, label_classes


def winning_shares(result: Classification) -> list[float]:
    """Each neighbour's share of the winning class's score (0 for neighbours of other classes)."""
    total = result.scores.get(result.label, 0.0)
    return [n.weight / total if total and n.label == result.label else 0.0 for n in result.neighbors]


def dependent_queries(
    memory: VisualMemory, query_embeddings: np.ndarray, exemplar_ids: Sequence[int], k: int,
    settings: Optional[VoteSettings] = None,
) -> list[int]:
    """Indices of the queries that have any of `exemplar_ids` among their k voting neighbours under `settings`'
    pruning (default: none), from one search (`NeighbourSet.voted_by`; a page that has searched already asks its
    own set)."""
    if len(query_embeddings) == 0 or not len(exemplar_ids):
        return []
    settings = replace(settings or VoteSettings(), k=int(k))
    return memory.search.neighbour_set(query_embeddings, settings.k, settings).voted_by(exemplar_ids, settings)


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


def attribute(
    memory: VisualMemory, embeddings: np.ndarray, settings: VoteSettings = EXPLAIN_SETTINGS
) -> list[list[NeighborAttribution]]:
    """For each query, its settings.k voting neighbours with their share of the winning score and the exact
    counterfactual prediction without each of them (from one search of k + 1 neighbours)."""
    return attribute_set(memory.search.neighbour_set(embeddings, settings.k + 1, settings), settings)


def attribute_set(neighbours: NeighbourSet, settings: VoteSettings) -> list[list[NeighborAttribution]]:
    """`attribute` from neighbours already searched (at least k + 1 deep for exact counterfactuals), e.g. the set a
    page classified with: no search."""
    explained = neighbours.attribution(settings)
    labels, ids, classes = neighbours.labels, explained.ids, explained.classes
    predicted, without, votes, weights = explained.predicted, explained.without, explained.votes, explained.weights
    used = without.shape[1]
    out = []
    for row in range(len(ids)):
        winner = predicted[row]
        total = weights[row][votes[row] == winner].sum() if winner >= 0 else 0.0
        name = labels[winner] if winner >= 0 else None
        out.append([
            NeighborAttribution(
                id=int(ids[row, j]), label=labels[classes[row, j]], rank=j,
                share=float(weights[row, j] / total) if total and classes[row, j] == winner else 0.0,
                without=labels[without[row, j]] if without[row, j] >= 0 else None, prediction=name,
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
    neighbours = memory.search.neighbour_set(embeddings, settings.k + 1, settings)
    explained = neighbours.attribution(settings)
    ids, classes, predicted, without = explained.ids, explained.classes, explained.predicted, explained.without
    used = without.shape[1]
    labels = neighbours.labels
    truth = label_classes(true_labels, labels, missing=-2)  # -2: never a prediction, so always wrong
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
    summary.insert(1, "label", [labels[c] for c in memory.table.class_indices(summary["id"].to_numpy())])
    return summary.sort_values(["flips", "drove_wrong", "id"], ascending=[False, False, True]).reset_index(drop=True)
