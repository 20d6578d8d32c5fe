"""What every experiment of `vmem_core.analysis.experiments` is measured with: the votes of one neighbour search at
every k = 1..K (`predictions_every_k`, `accuracy_every_k`), the best and the fixed k, and the check of the labels an
experiment holds out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import VmemError
from ..voting import VoteSettings, check_rule, class_names, label_classes, prepare_votes, soft_or_unpruned, vote_all_k
from .neighbor_cache import NeighborCache

DEFAULT_FIXED_K = 10  # the fixed k reported beside best-over-k
DEFAULT_K_MAX = 100  # neighbours searched once per query: every k = 1..K is voted from them
FIXED_K_SETTINGS = VoteSettings(k=DEFAULT_FIXED_K)


def _classes(memory_labels: np.ndarray, query_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Class indices of memory and query labels (queries with a label the memory lacks get -2: always wrong)."""
    names = class_names(memory_labels.tolist())
    return label_classes(memory_labels, names), label_classes(query_labels, names, missing=-2), len(names)


def predictions_every_k(
    positions: np.ndarray,
    distances: np.ndarray,
    memory_labels: np.ndarray,
    query_labels: np.ndarray,
    settings: Union[VoteSettings, str],
    reliability: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(predictions (n, K) as class indices, true classes (n,)) for one rule (a rule name, or settings for its
    parameters); `reliability` (per memory item) switches on soft pruning."""
    settings = VoteSettings(rule=settings) if isinstance(settings, str) else settings
    memory_classes, truth, num_classes = _classes(memory_labels, query_labels)
    labels = np.where(positions >= 0, memory_classes[np.maximum(positions, 0)], -1)
    neighbor_reliability = None if reliability is None else reliability[np.maximum(positions, 0)]
    votes, weights, _ = prepare_votes(labels, distances, soft_or_unpruned(settings, reliability), neighbor_reliability)
    return vote_all_k(votes, weights, num_classes), truth


def accuracy_every_k(predictions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return (predictions == truth[:, None]).mean(axis=0) if len(truth) else np.zeros(predictions.shape[1])


def best_over_k(curve: np.ndarray) -> dict:
    """{"k", "accuracy"} at the highest accuracy (smallest k on ties)."""
    if not len(curve):
        return {"k": 0, "accuracy": float("nan")}
    k = int(np.argmax(curve)) + 1
    return {"k": k, "accuracy": float(curve[k - 1])}


def _curves(cache: NeighborCache, positions, distances, rules, settings: VoteSettings = FIXED_K_SETTINGS,
            memory_labels=None, reliability=None):
    """rule -> accuracy at every k, each rule voting with the parameters of `settings`."""
    labels = cache.memory_labels if memory_labels is None else memory_labels
    return {check_rule(rule): accuracy_every_k(*predictions_every_k(positions, distances, labels, cache.query_labels,
                                                                     replace(settings, rule=rule), reliability))
            for rule in rules}


def _at(curve: np.ndarray, k: int) -> float:
    return float(curve[min(k, len(curve)) - 1]) if len(curve) else float("nan")


def _round(curve) -> list[float]:
    return [round(float(a), 6) for a in curve]


def _check_labels(cache: NeighborCache, labels: Sequence[str], what: str) -> list[str]:
    known = set(cache.memory_labels.tolist())
    labels = list(dict.fromkeys(labels))
    unknown = [label for label in labels if label not in known]
    if unknown or not labels:
        raise VmemError(f"{what}: {', '.join(map(repr, unknown)) or 'none given'}; the memory's labels are: "
                        f"{', '.join(sorted(known))}")
    if len(labels) >= len(known):
        raise VmemError(f"{what}: at least one memory label must stay in memory")
    return labels
