"""What a classification returns: the winning label, per-class scores, and the neighbors that voted, with weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from .voting import class_scores


@dataclass(frozen=True)
class Neighbor:
    id: int
    label: str
    distance: float
    rank: int
    weight: float


@dataclass
class Classification:
    """A prediction: the winning label, per-class scores over the first k neighbours, the neighbours themselves."""

    label: Optional[str]
    scores: dict[str, float]
    neighbors: list[Neighbor]
    image: Optional[str] = None

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "label": self.label,
            "scores": self.scores,
            "neighbors": [asdict(n) for n in self.neighbors],
        }


def classifications(
    labels: Sequence[str],
    neighbor_ids: np.ndarray,
    distances: np.ndarray,
    classes: np.ndarray,
    weights: np.ndarray,
    positions: np.ndarray,
    predicted: np.ndarray,
    names: Optional[Sequence[Optional[str]]] = None,
) -> list[Classification]:
    """One Classification per query from its votes over the first k neighbors.

    Args:
        labels: class index -> label.
        neighbor_ids, distances: (n, K) as searched, nearest first.
        classes, weights, positions: (n, k) votes as `voting.prepare_votes` gives them, cut at k: each vote's class,
            weight and position in the searched row (-1: a pruned or missing neighbor, which is not shown).
        predicted: (n,) the winning class index at k, -1 for none.
        names: recorded as each result's `image`.
    """
    scores = class_scores(classes, weights, len(labels))
    results = []
    for row in range(len(neighbor_ids)):
        neighbors = [
            Neighbor(
                id=int(neighbor_ids[row, pos]),
                label=labels[classes[row, slot]],
                distance=float(distances[row, pos]),
                rank=slot,
                weight=float(weights[row, slot]),
            )
            for slot, pos in enumerate(positions[row])
            if pos >= 0 and classes[row, slot] >= 0
        ]
        winner = int(predicted[row])
        results.append(
            Classification(
                label=labels[winner] if winner >= 0 else None,
                scores={labels[c]: float(scores[row, c]) for c in np.flatnonzero(scores[row] > 0)},
                neighbors=neighbors,
                image=names[row] if names is not None else None,
            )
        )
    return results
