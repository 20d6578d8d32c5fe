"""Held-out evaluation: retrieve each query's K nearest exemplars once, then score every rule at every k = 1..K.

The best k is chosen on the same queries it is reported for, so it is labelled best-over-k (optimistic) and always
shown beside the full curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..errors import BadImageError, DatasetError, VmemError
from ..ingest.datasets import LabelledImage, scan_dataset
from ..ingest.images import load_image
from ..memory import VisualMemory
from ..neighbour_set import NeighbourSet
from ..voting import RULES, VoteSettings, check_rule, label_classes, resolve_settings
from .experiments import DEFAULT_K_MAX, FIXED_K_SETTINGS, hit_rate_every_k

BEST_LABEL = "best-over-k (k chosen on these same queries: an optimistic figure; compare with a fixed k)"


@dataclass
class EvalResult:
    accuracy: dict[str, np.ndarray]  # rule -> accuracy at k = 1..k_max
    queries: int
    k_max: int
    pruning: str = "none"
    unknown_labels: list[str] = field(default_factory=list)  # query labels the memory has never seen
    rejected: list[tuple[str, str]] = field(default_factory=list)  # unreadable query images
    hit_rate: Optional[np.ndarray] = None  # fraction of queries whose true label is among the first k neighbours

    def best(self) -> dict[str, dict]:
        """Per rule, the k with the highest accuracy (smallest such k on ties)."""
        out = {}
        for rule, curve in self.accuracy.items():
            if len(curve):
                k = int(np.argmax(curve)) + 1
                out[rule] = {"k": k, "accuracy": float(curve[k - 1])}
        return out

    def to_dict(self) -> dict:
        return {
            "accuracy": {rule: [round(float(a), 6) for a in curve] for rule, curve in self.accuracy.items()},
            "best": self.best(),
            "best_is": BEST_LABEL,
            "queries": self.queries,
            "k_max": self.k_max,
            "pruning": self.pruning,
            "unknown_labels": self.unknown_labels,
            "rejected": [{"path": p, "reason": r} for p, r in self.rejected],
            **({} if self.hit_rate is None else {"hit_rate": [round(float(h), 6) for h in self.hit_rate]}),
        }


def accuracy_curves(
    memory: VisualMemory,
    neighbor_ids: np.ndarray,
    distances: np.ndarray,
    true_labels: Sequence[str],
    rules: Sequence[str] = RULES,
    settings: Optional[VoteSettings] = None,
) -> dict[str, np.ndarray]:
    """Accuracy at every k for each rule, from one neighbour retrieval (n, K) made by `memory.neighbors` with the
    same settings (their pruning, threshold, top_n and rule parameters; k and rule are not used)."""
    settings = resolve_settings(settings)
    table = memory.table
    truth = label_classes(true_labels, table.labels, missing=-2)  # -2: never a prediction, so always wrong
    curves = {}
    for rule in rules:
        rule = check_rule(rule)
        *_, predictions = memory.search.vote(neighbor_ids, distances, replace(settings, rule=rule), table)
        curves[rule] = (predictions == truth[:, None]).mean(axis=0) if len(truth) else np.zeros(0)
    return curves


def evaluate_embeddings(
    memory: VisualMemory,
    embeddings: np.ndarray,
    true_labels: Sequence[str],
    k_max: int = DEFAULT_K_MAX,
    rules: Sequence[str] = RULES,
    settings: Optional[VoteSettings] = None,
    **changes,
) -> EvalResult:
    """Accuracy of each rule at every k = 1..k_max for labelled query embeddings (one retrieval).

    `settings` (or single settings by keyword, e.g. pruning="hard") give the pruning, its threshold and top_n, and
    the rule parameters; every rule in `rules` and every k is scored whatever settings.rule and settings.k say.
    """
    settings = resolve_settings(settings, **changes)
    if int(k_max) < 1:
        raise VmemError(f"k_max must be at least 1, got {k_max}")
    return evaluate_set(memory.search.neighbour_set(embeddings, int(k_max), settings), true_labels, rules, settings)


def evaluate_set(
    neighbours: NeighbourSet,
    true_labels: Sequence[str],
    rules: Sequence[str] = RULES,
    settings: Optional[VoteSettings] = None,
) -> EvalResult:
    """`evaluate_embeddings` from neighbours already searched (k_max = their depth): every rule at every k, no
    search, so that a page can draw the curves and drill into one k from the same neighbours."""
    settings = resolve_settings(settings if settings is not None else neighbours.searched)
    truth = label_classes(true_labels, neighbours.labels, missing=-2)  # -2: never a prediction, so always wrong
    curves = {}
    for rule in rules:
        rule = check_rule(rule)
        *_, predictions = neighbours.votes(replace(settings, rule=rule))
        curves[rule] = (predictions == truth[:, None]).mean(axis=0) if len(truth) else np.zeros(0)
    known = set(neighbours.labels)
    found = np.asarray([neighbours.labels[c] if c >= 0 else None for c in neighbours.classes.ravel()],
                       dtype=object).reshape(neighbours.ids.shape)
    return EvalResult(
        hit_rate=hit_rate_every_k(found, np.asarray(list(true_labels), dtype=object)),
        accuracy=curves,
        queries=len(true_labels),
        k_max=neighbours.depth,
        pruning=settings.pruning,
        unknown_labels=sorted({label for label in true_labels if label not in known}),
    )


def encode_labelled(
    memory: VisualMemory,
    data: Union[str, Path, Sequence[LabelledImage]],
    progress: Optional[Callable[[int, int], None]] = None,
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """(embeddings, labels, rejected (path, reason)) of a labelled query set (ImageFolder directory or CSV)."""
    items = scan_dataset(Path(data)) if isinstance(data, (str, Path)) else list(data)
    images, labels, rejected = [], [], []
    for item in items:
        try:
            images.append(load_image(item.path, item.source).image)
            labels.append(item.label)
        except BadImageError as exc:  # evaluation goes on without that query
            rejected.append((str(item.path), str(exc)))
    if not images:
        raise DatasetError(f"{data}: none of the {len(items)} query images could be read; first: {rejected[0][1]}")
    return memory.encoder.encode(images, progress=progress), labels, rejected


def evaluate_dataset(
    memory: VisualMemory,
    data: Union[str, Path, Sequence[LabelledImage]],
    k_max: int = DEFAULT_K_MAX,
    rules: Sequence[str] = RULES,
    settings: Optional[VoteSettings] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    **changes,
) -> EvalResult:
    """Evaluate on a labelled query set (ImageFolder directory or CSV); unreadable images are reported, not fatal.
    See `evaluate_embeddings` for the settings."""
    settings = resolve_settings(settings, **changes)
    embeddings, labels, rejected = encode_labelled(memory, data, progress)
    result = evaluate_embeddings(memory, embeddings, labels, k_max, rules, settings)
    result.rejected = rejected
    return result


def predict_at_k(
    memory: VisualMemory, neighbor_ids: np.ndarray, distances: np.ndarray, settings: VoteSettings
) -> list[Optional[str]]:
    """Predicted label per query from the first settings.k neighbours found by `memory.neighbors` (None where none
    voted)."""
    table = memory.table
    *_, predictions = memory.search.vote(neighbor_ids, distances, settings, table)
    if predictions.shape[1] == 0:
        return [None] * len(predictions)
    column = predictions[:, min(settings.k, predictions.shape[1]) - 1]
    return [table.labels[c] if c >= 0 else None for c in column]


def confusion_matrix(true_labels: Sequence[str], predicted: Sequence[Optional[str]]):
    """Counts as a DataFrame: rows are true labels, columns predicted labels (both in sorted order)."""
    import pandas as pd

    labels = sorted({*true_labels, *(p for p in predicted if p is not None)})
    frame = pd.crosstab(
        pd.Categorical(list(true_labels), categories=labels),
        pd.Categorical([p if p is not None else "(none)" for p in predicted], categories=labels + ["(none)"]),
        dropna=False,
    )
    frame.index.name, frame.columns.name = "true", "predicted"
    return frame.loc[:, (frame.sum(axis=0) > 0) | (frame.columns != "(none)")]


def per_class_accuracy(true_labels: Sequence[str], predicted: Sequence[Optional[str]]) -> dict[str, float]:
    out: dict[str, list[bool]] = {}
    for truth, guess in zip(true_labels, predicted):
        out.setdefault(truth, []).append(truth == guess)
    return {label: float(np.mean(hits)) for label, hits in sorted(out.items())}


def accuracy_vs_memory_size(
    memory: VisualMemory,
    query_embeddings: np.ndarray,
    true_labels: Sequence[str],
    per_class: Sequence[int] = (1, 2, 5, 10, 20, 50, 100),
    seeds: Sequence[int] = (0, 1, 2),
    settings: VoteSettings = FIXED_K_SETTINGS,
    progress: Optional[Callable[[int, int], None]] = None,
):
    """Accuracy when the memory holds only n exemplars per class (random subsets, one per seed), at settings.k and
    settings.rule.

    Search within each subset is exact (see `experiments.memory_size_sweep`, which this narrows to one rule).

    Returns:
        DataFrame with columns per_class, seed, exemplars, accuracy.
    """
    from .experiments import memory_size_sweep
    from .neighbor_cache import build_cache, memory_arrays

    _, vectors, labels = memory_arrays(memory)
    if not len(labels):
        raise VmemError("the memory has no live exemplars: nothing to subsample")
    cache = build_cache(vectors, labels, query_embeddings, true_labels, k=settings.k)
    frame = memory_size_sweep(cache, per_class, seeds, rules=[settings.rule], settings=settings, progress=progress)
    return frame[["per_class", "seed", "exemplars", "accuracy"]].reset_index(drop=True)
