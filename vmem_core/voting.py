"""Voting rules of the visual memory, as pure functions over neighbour arrays.

Neighbours are sorted nearest first; rank i = 0, 1, 2, ... ; distance d = 1 - cosine.

- plurality: weight 1
- distance:  exp(-d)
- softmax:   exp((1 - d) / T), T = 0.07
- rank:      1 / (i + 2)  (RankVoting, the default)

A class's score is the sum of its neighbours' weights. Ties go to the class that reached the tied score first, which
with positive weights is the class whose last contributing neighbour is nearest: the leader only changes when another
class strictly exceeds its score.

Pruning by reliability v (how often an exemplar sits among the neighbours of differently-labelled memory items):
hard pruning drops neighbours with v >= threshold before ranks are assigned; soft pruning multiplies a weight by
1.75 / (1 + v) where v > 0.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

RULES = ("rank", "plurality", "distance", "softmax")
DEFAULT_RULE = "rank"
SOFTMAX_TEMPERATURE = 0.07
SOFT_PRUNING_NUMERATOR = 1.75
PRUNING_MODES = ("none", "hard", "soft")
# Hard pruning skips exemplars with v >= this. At 1 every exemplar ever seen among another class's neighbours goes
# (two thirds of the Fashion-MNIST sample); 2 keeps the ones that strayed once.
DEFAULT_HARD_THRESHOLD = 2.0
# v counts appearances among each memory item's N nearest leave-one-out neighbours.
DEFAULT_RELIABILITY_TOP_N = 10

_ALIASES = {"rankvoting": "rank", "rank_voting": "rank", "uniform": "plurality", "majority": "plurality"}


def check_rule(rule: str) -> str:
    """Return the canonical rule name, or raise ValueError naming the accepted ones.

    >>> check_rule("Softmax")
    'softmax'
    """
    name = _ALIASES.get(str(rule).lower(), str(rule).lower())
    if name not in RULES:
        raise ValueError(f"unknown voting rule {rule!r}; accepted: {', '.join(RULES)}")
    return name


def rule_weights(rule: str, distances: np.ndarray, ranks: Optional[np.ndarray] = None) -> np.ndarray:
    """Weights of neighbours under `rule`.

    Args:
        rule: one of RULES.
        distances: array (..., K) of cosine distances, nearest first.
        ranks: ranks of the same shape; defaults to 0..K-1 along the last axis.

    >>> rule_weights("rank", np.array([0.1, 0.2, 0.3])).round(3).tolist()
    [0.5, 0.333, 0.25]
    """
    rule = check_rule(rule)
    distances = np.asarray(distances, dtype=np.float64)
    if ranks is None:
        ranks = np.broadcast_to(np.arange(distances.shape[-1]), distances.shape)
    if rule == "plurality":
        return np.ones_like(distances)
    if rule == "distance":
        return np.exp(-distances)
    if rule == "softmax":
        return np.exp((1.0 - distances) / SOFTMAX_TEMPERATURE)
    return 1.0 / (np.asarray(ranks, dtype=np.float64) + 2.0)


def soft_pruning_factors(reliability: np.ndarray) -> np.ndarray:
    """Multipliers 1.75 / (1 + v) where v > 0, else 1.

    >>> soft_pruning_factors(np.array([0, 1, 3])).tolist()
    [1.0, 0.875, 0.4375]
    """
    v = np.asarray(reliability, dtype=np.float64)
    return np.where(v > 0, SOFT_PRUNING_NUMERATOR / (1.0 + v), 1.0)


def compact_kept(mask: np.ndarray, *arrays: np.ndarray, fill: float | int = -1) -> tuple[np.ndarray, ...]:
    """Move the kept entries of each row to the front (order preserved), padding the rest with `fill`.

    Ranks are then renumbered over the kept neighbours, as hard pruning requires.

    >>> compact_kept(np.array([[True, False, True]]), np.array([[7, 8, 9]]))[0].tolist()
    [[7, 9, -1]]
    """
    mask = np.asarray(mask, dtype=bool)
    order = np.argsort(~mask, axis=-1, kind="stable")
    kept = np.take_along_axis(mask, order, axis=-1)
    out = []
    for array in arrays:
        moved = np.take_along_axis(np.asarray(array), order, axis=-1)
        out.append(np.where(kept, moved, np.asarray(fill, dtype=moved.dtype)))
    return tuple(out)


def vote_all_k(
    neighbor_labels: np.ndarray,
    weights: np.ndarray,
    num_classes: int,
) -> np.ndarray:
    """Predicted class for every prefix k = 1..K in one pass.

    Args:
        neighbor_labels: int array (n, K) of class indices, nearest first; -1 marks a missing neighbour (skipped).
        weights: float array (n, K) of vote weights (already multiplied by any pruning factors).
        num_classes: number of classes C (class indices are 0..C-1; 0 is a class like any other).

    Returns:
        int array (n, K): column k-1 holds the prediction from the first k neighbours (-1 while no neighbour voted).

    >>> vote_all_k(np.array([[0, 1]]), np.ones((1, 2)), 2).tolist()
    [[0, 0]]
    >>> vote_all_k(np.array([[2, 3, 3, 1, 1]]), np.ones((1, 5)), 4)[0, -1].item()
    3
    """
    labels = np.asarray(neighbor_labels, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != weights.shape:
        raise ValueError(f"labels {labels.shape} and weights {weights.shape} must be equal 2-D shapes")
    n, depth = labels.shape
    scores = np.zeros((n, max(num_classes, 1)), dtype=np.float64)
    leader = np.full(n, -1, dtype=np.int64)
    leader_score = np.full(n, -np.inf)
    rows = np.arange(n)
    predictions = np.empty((n, depth), dtype=np.int64)
    for j in range(depth):
        cls = labels[:, j]
        present = cls >= 0
        safe = np.where(present, cls, 0)
        scores[rows[present], safe[present]] += weights[present, j]
        new_score = scores[rows, safe]
        # Strictly greater: an equal score arrived later, so the earlier class keeps the tie.
        takes_lead = present & (new_score > leader_score)
        leader = np.where(takes_lead, cls, leader)
        leader_score = np.where(takes_lead, new_score, leader_score)
        predictions[:, j] = leader
    return predictions


def class_scores(neighbor_labels: np.ndarray, weights: np.ndarray, num_classes: int) -> np.ndarray:
    """Summed weights per class for each row: (n, K) -> (n, C). Missing neighbours (-1) are skipped."""
    labels = np.asarray(neighbor_labels, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    scores = np.zeros((labels.shape[0], num_classes), dtype=np.float64)
    rows = np.repeat(np.arange(labels.shape[0]), labels.shape[1])
    flat_labels = labels.ravel()
    present = flat_labels >= 0
    np.add.at(scores, (rows[present], flat_labels[present]), weights.ravel()[present])
    return scores


def prepare_votes(
    neighbor_labels: np.ndarray,
    distances: np.ndarray,
    rule: str,
    reliability: Optional[np.ndarray] = None,
    pruning: str = "none",
    threshold: float = DEFAULT_HARD_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply pruning and compute weights.

    Args:
        neighbor_labels: int (n, K) class indices, -1 for missing.
        distances: float (n, K), nearest first.
        rule: voting rule.
        reliability: v of each neighbour, shape (n, K); required unless pruning is "none".
        pruning: "none", "hard" (drop v >= threshold, renumber ranks) or "soft" (x 1.75 / (1 + v) where v > 0).
        threshold: hard-pruning threshold.

    Returns:
        (labels, weights, kept_positions): labels and weights after pruning, compacted nearest first, and for each
        output slot the index of the original neighbour it came from (-1 where empty).
    """
    if pruning not in PRUNING_MODES:
        raise ValueError(f"unknown pruning {pruning!r}; accepted: {', '.join(PRUNING_MODES)}")
    labels = np.asarray(neighbor_labels, dtype=np.int64)
    distances = np.asarray(distances, dtype=np.float64)
    positions = np.broadcast_to(np.arange(labels.shape[-1]), labels.shape)
    if pruning != "none" and reliability is None:
        raise ValueError(f"pruning {pruning!r} needs the neighbours' reliability")
    if pruning == "hard":
        keep = (labels >= 0) & (np.asarray(reliability) < threshold)
        labels, distances, positions = compact_kept(keep, labels, distances, positions)
    weights = rule_weights(rule, distances)
    if pruning == "soft":
        weights = weights * soft_pruning_factors(reliability)
    weights = np.where(labels >= 0, weights, 0.0)
    return labels, weights, np.where(labels >= 0, positions, -1)
