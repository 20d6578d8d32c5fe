"""Held-out evaluation: retrieve each query's K nearest exemplars once, then score every rule at every k = 1..K.

The best k is chosen on the same queries it is reported for, so it is labelled best-over-k (optimistic) and always
shown beside the full curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..errors import BadImageError, DatasetError, VmemError
from ..ingest.datasets import LabelledImage, scan_dataset
from ..ingest.images import load_image
from ..memory import DEFAULT_RELIABILITY_TOP_N, VisualMemory
from ..voting import DEFAULT_HARD_THRESHOLD, RULES, check_rule
from .experiments import DEFAULT_FIXED_K, hit_rate_every_k

DEFAULT_K_MAX = 100
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
    pruning: str = "none",
    threshold: float = DEFAULT_HARD_THRESHOLD,
    top_n: int = DEFAULT_RELIABILITY_TOP_N,
) -> dict[str, np.ndarray]:
    """Accuracy at every k for each rule, from one neighbour retrieval (n, K) made by `memory.neighbors` with the
    same pruning."""
    table = memory.table
    position = {label: i for i, label in enumerate(table.labels)}
    truth = np.asarray([position.get(label, -2) for label in true_labels], dtype=np.int64)
    curves = {}
    for rule in rules:
        rule = check_rule(rule)
        *_, predictions = memory.vote(neighbor_ids, distances, rule, pruning, threshold, top_n, table)
        curves[rule] = (predictions == truth[:, None]).mean(axis=0) if len(truth) else np.zeros(0)
    return curves


def evaluate_embeddings(
    memory: VisualMemory,
    embeddings: np.ndarray,
    true_labels: Sequence[str],
    k_max: int = DEFAULT_K_MAX,
    rules: Sequence[str] = RULES,
    pruning: str = "none",
    threshold: float = DEFAULT_HARD_THRESHOLD,
    top_n: int = DEFAULT_RELIABILITY_TOP_N,
) -> EvalResult:
    """Accuracy of each rule at every k = 1..k_max for labelled query embeddings (one retrieval)."""
    if int(k_max) < 1:
        raise VmemError(f"k_max must be at least 1, got {k_max}")
    neighbor_ids, distances = memory.neighbors(embeddings, int(k_max), pruning, threshold, top_n)
    curves = accuracy_curves(memory, neighbor_ids, distances, true_labels, rules, pruning, threshold, top_n)
    known = set(memory.labels)
    table = memory.table
    found = np.asarray([table.labels[c] if c >= 0 else None for c in table.class_indices(neighbor_ids).ravel()],
                       dtype=object).reshape(neighbor_ids.shape)
    return EvalResult(
        hit_rate=hit_rate_every_k(found, np.asarray(list(true_labels), dtype=object)),
        accuracy=curves,
        queries=len(true_labels),
        k_max=neighbor_ids.shape[1],
        pruning=pruning,
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
    pruning: str = "none",
    threshold: float = DEFAULT_HARD_THRESHOLD,
    progress: Optional[Callable[[int, int], None]] = None,
    top_n: int = DEFAULT_RELIABILITY_TOP_N,
) -> EvalResult:
    """Evaluate on a labelled query set (ImageFolder directory or CSV); unreadable images are reported, not fatal."""
    embeddings, labels, rejected = encode_labelled(memory, data, progress)
    result = evaluate_embeddings(memory, embeddings, labels, k_max, rules, pruning, threshold, top_n)
    result.rejected = rejected
    return result


def predict_at_k(
    memory: VisualMemory,
    neighbor_ids: np.ndarray,
    distances: np.ndarray,
    k: int,
    rule: str = "rank",
    pruning: str = "none",
    threshold: float = DEFAULT_HARD_THRESHOLD,
    top_n: int = DEFAULT_RELIABILITY_TOP_N,
) -> list[Optional[str]]:
    """Predicted label per query from the first k neighbours found by `memory.neighbors` (None where none voted)."""
    table = memory.table
    *_, predictions = memory.vote(neighbor_ids, distances, rule, pruning, threshold, top_n, table)
    if predictions.shape[1] == 0:
        return [None] * len(predictions)
    column = predictions[:, min(k, predictions.shape[1]) - 1]
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
    k: int = 10,
    rule: str = "rank",
    progress: Optional[Callable[[int, int], None]] = None,
):
    """Accuracy when the memory holds only n exemplars per class (random subsets, one per seed), at one k and rule.

    Search within each subset is exact (see `experiments.memory_size_sweep`, which this narrows to one rule).

    Returns:
        DataFrame with columns per_class, seed, exemplars, accuracy.
    """
    from .experiments import memory_size_sweep
    from .neighbor_cache import build_cache, memory_arrays

    _, vectors, labels = memory_arrays(memory)
    if not len(labels):
        raise VmemError("the memory has no live exemplars: nothing to subsample")
    cache = build_cache(vectors, labels, query_embeddings, true_labels, k=int(k))
    frame = memory_size_sweep(cache, per_class, seeds, rules=[rule], k=int(k), progress=progress)
    return frame[["per_class", "seed", "exemplars", "accuracy"]].reset_index(drop=True)


EXPERIMENTS = ("accuracy", "memory-size", "new-classes", "pruning", "noise", "taxonomy", "ood")


@dataclass
class ExperimentOptions:
    """Settings of `run_experiments`; defaults follow the paper where it gives one."""

    k: int = DEFAULT_FIXED_K  # the fixed k reported beside best-over-k
    k_max: int = DEFAULT_K_MAX
    rules: Sequence[str] = RULES
    sizes: Sequence[int] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
    seeds: Sequence[int] = (0, 1, 2)
    new_classes: Optional[Sequence[str]] = None  # default: the last label in sorted order
    threshold: float = DEFAULT_HARD_THRESHOLD
    top_n: int = DEFAULT_RELIABILITY_TOP_N
    noise: Sequence[float] = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8)
    taxonomy: Optional[Path] = None
    held_out: Optional[str] = None  # taxonomy's held-out class; default: the last label
    added: Sequence[int] = (0, 1, 2, 5, 10, 20)
    ood_held_out: Optional[Sequence[str]] = None  # default: the same as new_classes
    ood_k: int = 1


def run_experiments(
    memory: VisualMemory,
    query_embeddings: np.ndarray,
    true_labels: Sequence[str],
    experiments: Sequence[str] = EXPERIMENTS,
    options: Optional[ExperimentOptions] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    ood_embeddings: Optional[np.ndarray] = None,
) -> dict[str, dict]:
    """Run the named experiments over one exact neighbour search of the memory's live exemplars.

    Args:
        experiments: any of EXPERIMENTS.
        progress: called as progress(stage, done, total).
        ood_embeddings: extra out-of-distribution images (e.g. photos) scored against the queries in "ood".

    Returns:
        experiment name -> JSON-ready dict (see each function in `vmem_core.analysis.experiments`).
    """
    from .neighbor_cache import memory_arrays

    _, vectors, labels = memory_arrays(memory)
    return run_experiments_on_arrays(vectors, labels, query_embeddings, true_labels, experiments, options, progress,
                                     ood_embeddings)


def run_experiments_on_arrays(
    vectors: np.ndarray,
    labels: Sequence[str],
    query_embeddings: np.ndarray,
    true_labels: Sequence[str],
    experiments: Sequence[str] = EXPERIMENTS,
    options: Optional[ExperimentOptions] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    ood_embeddings: Optional[np.ndarray] = None,
) -> dict[str, dict]:
    """`run_experiments` over a memory given as unit vectors and labels (no VisualMemory needed)."""
    from . import experiments as ex
    from .neighbor_cache import build_cache

    labels = np.asarray(list(labels), dtype=object)
    unknown = [name for name in experiments if name not in EXPERIMENTS]
    if unknown:
        raise VmemError(f"unknown experiment(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(EXPERIMENTS)}")
    options = options or ExperimentOptions()

    def stage(name: str):
        return (lambda done, total: progress(name, done, total)) if progress else None

    if len(set(labels.tolist())) < 2:
        raise VmemError("the experiments need a memory with at least two labels")
    cache = build_cache(vectors, labels, query_embeddings, true_labels, k=options.k_max, progress=stage("search"))
    last_label = sorted(set(labels.tolist()))[-1]
    new = list(options.new_classes or [last_label])
    out: dict[str, dict] = {}
    for name in experiments:
        if name == "accuracy":
            out[name] = ex.accuracy_and_hit_rate(cache, options.rules).to_dict()
        elif name == "memory-size":
            frame = ex.memory_size_sweep(cache, options.sizes, options.seeds, options.rules, options.k,
                                         stage("memory-size"))
            out[name] = {"k": options.k, "rows": frame.to_dict("records"),
                         "fit": {rule: ex.fit_log_error(frame, rule).to_dict() for rule in frame["rule"].unique()},
                         "fit_best_over_k": {rule: ex.fit_log_error(frame, rule, "best_accuracy").to_dict()
                                             for rule in frame["rule"].unique()}}
        elif name == "new-classes":
            out[name] = ex.new_classes(cache, new, options.rules, options.k).to_dict()
        elif name == "pruning":
            loo = build_cache(vectors, labels, k=options.top_n, progress=stage("leave-one-out"))
            reliability = ex.reliability_from_loo(loo, options.top_n)
            out[name] = ex.pruning_comparison(cache, reliability, options.rules, options.threshold).to_dict(options.k)
        elif name == "noise":
            frame = ex.label_noise(cache, options.noise, options.rules, options.k)
            out[name] = {"k": options.k, "rows": frame.to_dict("records")}
        elif name == "taxonomy":
            if options.taxonomy is None:
                raise VmemError("the taxonomy experiment needs a mapping file (CSV: class,group,...)")
            taxonomy = ex.load_taxonomy(options.taxonomy)
            held_out = options.held_out or last_label
            frame = ex.held_out_class_levels(cache, taxonomy, held_out, options.added, options.seeds)
            out[name] = {"k": options.k, "levels": list(taxonomy.levels),
                         "accuracy": ex.taxonomy_accuracy(cache, taxonomy, options.rules, options.k),
                         "held_out": held_out,
                         "held_out_k1": frame.groupby(["added", "level"], sort=False)["accuracy"].mean()
                         .unstack().reindex(columns=list(taxonomy.levels)).reset_index().to_dict("records")}
        elif name == "ood":
            result = ex.ood_auroc(cache, list(options.ood_held_out or new), options.ood_k)
            out[name] = {"held_out_classes": result.to_dict()}
            if ood_embeddings is not None and len(ood_embeddings):
                out[name]["images"] = ex.ood_auroc_of_images(cache, ood_embeddings, options.ood_k).to_dict()
    return out
