"""The paper's experiments, each computed from one NeighbourCache (search once, vote many times).

1. accuracy and hit rate vs k for every rule            `accuracy_and_hit_rate`
2. accuracy vs memory size, several seeds, log-log fit  `memory_size_sweep`, `fit_log_error`
3. new classes without forgetting                       `new_classes`
4. hard / soft pruning vs none, per rule                `pruning_comparison` (reliability from `reliability_from_loo`)
5. label noise                                          `label_noise`
6. taxonomy levels, and a held-out class added at k=1   `taxonomy_accuracy`, `held_out_class_levels`
7. out-of-distribution AUROC                            `ood_auroc`

Accuracies at every k = 1..K come from one pass of `vote_all_k`; "best-over-k" picks k on the same queries
(optimistic), so fixed-k figures are always reported beside it. The votes at every k are
`vmem_core.analysis.experiment_curves`; experiment 6 is `vmem_core.analysis.experiment_taxonomy`: both re-exported.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import VmemError
from ..voting import (
    DEFAULT_RELIABILITY_TOP_N,
    RULES,
    VoteSettings,
    check_rule,
    class_names,
    label_classes,
    prepare_votes,
    reliability_counts,
    vote_all_k,
)
from .experiment_curves import (  # noqa: F401  (re-exported: the experiments' public names stay here)
    DEFAULT_FIXED_K,
    DEFAULT_K_MAX,
    FIXED_K_SETTINGS,
    _at,
    _check_labels,
    _classes,
    _curves,
    _round,
    accuracy_every_k,
    best_over_k,
    predictions_every_k,
)
from .experiment_taxonomy import (  # noqa: F401  (re-exported)
    DEFAULT_ADDED,
    PAPER_ADDED,
    Taxonomy,
    held_out_class_levels,
    load_taxonomy,
    taxonomy_accuracy,
    taxonomy_every_class,
)
from .neighbor_cache import NeighborCache, exact_top_k

Progress = Callable[[int, int], None]
DEFAULT_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
DEFAULT_NOISE = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8)
DEFAULT_RANK_OFFSETS = (0.5, 1, 2, 5, 10, 100)  # RankVoting's 1 / (rank + offset); the paper's default is 2
DEFAULT_TEMPERATURES = (0.01, 0.02, 0.05, 0.07, 0.1, 0.2, 0.5)  # softmax's exp((1 - d) / T); the paper's is 0.07
DEFAULT_PRUNE_THRESHOLDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
PAPER_THRESHOLD = 128.0  # the paper skips v >= 128 (top-100 leave-one-out neighbours, ImageNet's 1.28M exemplars)
PAPER_FRACTION_PRUNED = 0.02  # ... which prunes about 2% of ImageNet's memory


# --- 1. accuracy and hit rate vs k ----------------------------------------------------------------------------------
@dataclass
class AccuracyCurves:
    accuracy: dict[str, np.ndarray]  # rule -> accuracy at k = 1..K
    hit_rate: np.ndarray  # fraction of queries whose true label is among the first k neighbours
    queries: int

    def to_dict(self) -> dict:
        return {"accuracy": {r: _round(c) for r, c in self.accuracy.items()},
                "best_over_k": {r: best_over_k(c) for r, c in self.accuracy.items()},
                "hit_rate": _round(self.hit_rate), "queries": self.queries}


def hit_rate_every_k(neighbor_labels: np.ndarray, true_labels: np.ndarray) -> np.ndarray:
    """Fraction of rows whose true label appears among the first k neighbours, for k = 1..K.

    >>> hit_rate_every_k(np.array([["a", "b"], ["b", "b"]]), np.array(["b", "a"])).tolist()
    [0.0, 0.5]
    """
    if neighbor_labels.shape[1] == 0 or len(true_labels) == 0:
        return np.zeros(neighbor_labels.shape[1])
    hits = np.logical_or.accumulate(neighbor_labels == np.asarray(true_labels)[:, None], axis=1)
    return hits.mean(axis=0)


def accuracy_and_hit_rate(
    cache: NeighborCache, rules: Sequence[str] = RULES, settings: VoteSettings = FIXED_K_SETTINGS
) -> AccuracyCurves:
    """Experiment 1: every rule's accuracy and the hit rate at every k = 1..K of the cache (settings: the rule
    parameters)."""
    curves = _curves(cache, cache.positions, cache.distances, rules, settings)
    hit = hit_rate_every_k(cache.memory_labels[cache.positions], cache.query_labels)
    return AccuracyCurves(curves, hit, len(cache))


def rule_parameter_sweep(
    cache: NeighborCache, settings: VoteSettings = FIXED_K_SETTINGS,
    rank_offsets: Sequence[float] = DEFAULT_RANK_OFFSETS, temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
) -> dict[str, list[dict]]:
    """Experiment 1b: the rules' parameters swept as the paper's appendix does: RankVoting's offset and softmax's
    temperature. {"rank_offset": [...], "temperature": [...]}, each row {"value", "accuracy" (at settings.k),
    "best_over_k"}."""
    out: dict[str, list[dict]] = {}
    for parameter, rule, values in (("rank_offset", "rank", rank_offsets), ("temperature", "softmax", temperatures)):
        rows = []
        for value in values:
            curve = _curves(cache, cache.positions, cache.distances, [rule],
                            replace(settings, **{parameter: float(value)}))[rule]
            rows.append({"value": float(value), "accuracy": _at(curve, settings.k), "best_over_k": best_over_k(curve)})
        out[parameter] = rows
    return out


# --- 2. memory size -------------------------------------------------------------------------------------------------
def memory_sizes(memory_labels, per_class: Sequence[int]) -> tuple[list[int], Optional[str]]:
    """The sizes per class the sweep runs, and a note naming those capped at the largest class (None when none is).

    A size above the largest class is run at the largest class (every exemplar); 0 or a negative size is refused."""
    bad = [int(n) for n in per_class if int(n) < 1]
    if bad or not len(per_class):
        raise VmemError(f"memory sizes per class must be whole numbers of at least 1, got {list(per_class)}"
                        + (f" ({', '.join(map(str, bad))} refused)" if bad else ""))
    counts = np.unique(np.asarray(memory_labels), return_counts=True)[1]
    largest = int(counts.max()) if len(counts) else 0
    if largest < 1:
        raise VmemError("the memory holds no exemplar: no memory size can be sampled")
    capped = sorted({int(n) for n in per_class if int(n) > largest})
    note = None
    if capped:
        note = (f"memory size(s) {', '.join(map(str, capped))} per class are above the largest class "
                f"({largest} exemplars): run at {largest}")
    return sorted({min(int(n), largest) for n in per_class}), note


def memory_size_sweep(
    cache: NeighborCache,
    per_class: Sequence[int] = DEFAULT_SIZES,
    seeds: Sequence[int] = (0, 1, 2),
    rules: Sequence[str] = RULES,
    settings: VoteSettings = FIXED_K_SETTINGS,
    progress: Optional[Progress] = None,
):
    """Experiment 2: accuracy with only n random exemplars per class (one subset per seed), at settings.k.

    Returns:
        DataFrame: per_class, seed, exemplars, rule, accuracy (at k), best_accuracy, best_k (best-over-k up to the
        cache depth).
    """
    import pandas as pd

    if not seeds:
        raise VmemError("give at least one seed")
    labels = cache.memory_labels
    by_class = [np.flatnonzero(labels == name) for name in sorted(set(labels.tolist()))]
    sizes, _ = memory_sizes(labels, per_class)
    rows, total, done = [], len(sizes) * len(seeds), 0
    for size in sizes:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            keep = np.zeros(len(labels), dtype=bool)
            for members in by_class:
                keep[rng.choice(members, min(size, len(members)), replace=False)] = True
            positions, distances = cache.restricted(keep)
            for rule, curve in _curves(cache, positions, distances, rules, settings).items():
                best = best_over_k(curve)
                rows.append({"per_class": size, "seed": seed, "exemplars": int(keep.sum()), "rule": rule,
                             "accuracy": _at(curve, settings.k), "best_accuracy": best["accuracy"], "best_k": best["k"]})
            done += 1
            if progress:
                progress(done, total)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PowerFit:
    """log10(error) = intercept + slope * log10(exemplars), fitted on the mean error per memory size."""

    slope: float
    intercept: float
    r_squared: float
    points: int

    def to_dict(self) -> dict:
        return {"slope": self.slope, "intercept": self.intercept, "r_squared": self.r_squared, "points": self.points}


def fit_log_error(frame, rule: str, column: str = "accuracy", loglog: bool = False) -> PowerFit:
    """Least-squares line through (log10 exemplars, log10 mean error) for one rule; sizes with zero error are left
    out (their log is undefined).

    loglog: fit against log10(log10 exemplars) instead, the paper's form (its appendix F: error falls linearly in
    log log N on log axes); sizes of one exemplar or fewer are left out there."""
    rows = frame[frame["rule"] == check_rule(rule)]
    mean = rows.groupby("exemplars")[column].mean()
    error = 1.0 - mean.to_numpy()
    x, y = np.log10(mean.index.to_numpy(dtype=float)), error
    usable = y > 0
    if loglog:
        usable &= x > 0
        x = np.log10(np.where(x > 0, x, 1.0))
    if usable.sum() < 2:
        return PowerFit(float("nan"), float("nan"), float("nan"), int(usable.sum()))
    x, y = x[usable], np.log10(y[usable])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (residual ** 2).sum() / total if total > 0 else 1.0
    return PowerFit(float(slope), float(intercept), float(r2), int(usable.sum()))


# --- 3. new classes -------------------------------------------------------------------------------------------------
@dataclass
class NewClassesResult:
    new_labels: list[str]
    k: int
    old_before: dict[str, float]  # rule -> accuracy on old-class queries, memory of old classes only
    old_after: dict[str, float]  # ... after the new classes were added
    new_after: dict[str, float]  # rule -> accuracy on new-class queries after adding them
    old_queries: int
    new_queries: int

    def to_dict(self) -> dict:
        return {"new_labels": self.new_labels, "k": self.k, "old_queries": self.old_queries,
                "new_queries": self.new_queries, "old_before": self.old_before, "old_after": self.old_after,
                "old_delta_pp": {r: 100 * (self.old_after[r] - self.old_before[r]) for r in self.old_before},
                "new_after": self.new_after}


def new_classes(
    cache: NeighborCache, new_labels: Sequence[str], rules: Sequence[str] = RULES,
    settings: VoteSettings = FIXED_K_SETTINGS,
) -> NewClassesResult:
    """Experiment 3: memory of the other classes, then `new_labels` added: old-class accuracy before and after
    (forgetting), new-class accuracy after, at settings.k."""
    k = settings.k
    new_labels = _check_labels(cache, new_labels, "new classes must be memory labels")
    is_new_memory = np.isin(cache.memory_labels, new_labels)
    is_new_query = np.isin(cache.query_labels, new_labels)
    old = cache.subset_queries(np.flatnonzero(~is_new_query))
    new = cache.subset_queries(np.flatnonzero(is_new_query))
    positions, distances = old.restricted(~is_new_memory, max(k, 1))
    before = {r: _at(c, k) for r, c in _curves(old, positions, distances, rules, settings).items()}
    after = {r: _at(c, k) for r, c in _curves(old, old.positions, old.distances, rules, settings).items()}
    new_after = {r: _at(c, k) for r, c in _curves(new, new.positions, new.distances, rules, settings).items()}
    return NewClassesResult(new_labels, k, before, after, new_after, len(old), len(new))


def new_classes_each(
    cache: NeighborCache, rules: Sequence[str] = RULES, settings: VoteSettings = FIXED_K_SETTINGS,
) -> list[dict]:
    """Experiment 3 with each class in turn as the new one (so classes that overlap old ones and classes that do not
    both show): one `NewClassesResult.to_dict()` per class that has queries."""
    return [new_classes(cache, [label], rules, settings).to_dict()
            for label in sorted(set(cache.memory_labels.tolist())) if (cache.query_labels == label).any()]


# --- 4. pruning -----------------------------------------------------------------------------------------------------
def reliability_from_loo(loo: NeighborCache, top_n: int = DEFAULT_RELIABILITY_TOP_N) -> np.ndarray:
    """v per memory item: how often it is among the top-N leave-one-out neighbours of a differently-labelled item
    (the same definition as VisualMemory.reliability, over the cache's exact search)."""
    if (loo.self_positions < 0).any():
        raise VmemError("reliability needs a leave-one-out cache (build_cache without queries)")
    memory_classes, _, _ = _classes(loo.memory_labels, loo.query_labels)
    return reliability_counts(loo.self_positions, memory_classes[loo.self_positions], loo.positions[:, :top_n])


@dataclass
class PruningResult:
    accuracy: dict[str, dict[str, np.ndarray]]  # mode -> rule -> accuracy at k = 1..K
    threshold: float
    pruned: int  # exemplars hard pruning skips
    soft_weighted: int  # exemplars soft pruning down-weights (v > 0)
    memory: int

    def to_dict(self, k: int = DEFAULT_FIXED_K) -> dict:
        return {"threshold": self.threshold, "pruned": self.pruned, "soft_weighted": self.soft_weighted,
                "memory": self.memory,
                "accuracy": {m: {r: _round(c) for r, c in rules.items()} for m, rules in self.accuracy.items()},
                f"accuracy_at_k{k}": {m: {r: _at(c, k) for r, c in rules.items()}
                                      for m, rules in self.accuracy.items()},
                "best_over_k": {m: {r: best_over_k(c) for r, c in rules.items()}
                                for m, rules in self.accuracy.items()}}


def pruning_comparison(
    cache: NeighborCache, reliability: np.ndarray, rules: Sequence[str] = RULES,
    settings: VoteSettings = FIXED_K_SETTINGS,
) -> PruningResult:
    """Experiment 4: accuracy curves with no pruning, hard pruning (skip v >= settings.threshold, ranks renumbered
    over the kept exemplars) and soft pruning (weights x 1.75 / (1 + v) where v > 0)."""
    threshold = settings.threshold
    reliability = np.asarray(reliability)
    if reliability.shape != cache.memory_labels.shape:
        raise VmemError(f"reliability has shape {reliability.shape}; expected one value per memory item "
                        f"({len(cache.memory_labels)})")
    keep = reliability < threshold
    hard_positions, hard_distances = cache.restricted(keep)
    accuracy = {
        "none": _curves(cache, cache.positions, cache.distances, rules, settings),
        "hard": _curves(cache, hard_positions, hard_distances, rules, settings),
        "soft": _curves(cache, cache.positions, cache.distances, rules, settings, reliability=reliability),
    }
    return PruningResult(accuracy, float(threshold), int((~keep).sum()), int((reliability > 0).sum()),
                         len(reliability))


def paper_hard_pruning_curves(
    cache: NeighborCache, reliability: np.ndarray, threshold: float, rules: Sequence[str] = RULES,
    settings: VoteSettings = FIXED_K_SETTINGS,
) -> dict[str, np.ndarray]:
    """Hard pruning as the paper's notebook does it: among a query's first k neighbours, those with v >= threshold
    cast no vote (the others keep their ranks); if every one of the k is pruned, none is (the query votes unpruned).

    Returns: rule -> accuracy at k = 1..K."""
    memory_classes, truth, num_classes = _classes(cache.memory_labels, cache.query_labels)
    labels = np.where(cache.positions >= 0, memory_classes[np.maximum(cache.positions, 0)], -1)
    pruned = np.asarray(reliability)[np.maximum(cache.positions, 0)] >= threshold
    curves = {}
    for rule in rules:
        _, weights, _ = prepare_votes(labels, cache.distances, replace(settings, rule=check_rule(rule), pruning="none"))
        unpruned = vote_all_k(labels, weights, num_classes)
        masked = vote_all_k(np.where(pruned, -1, labels), weights, num_classes)
        curves[rule] = accuracy_every_k(np.where(masked < 0, unpruned, masked), truth)
    return curves


def pruning_threshold_sweep(
    cache: NeighborCache, reliability: np.ndarray, thresholds: Sequence[float], rules: Sequence[str] = RULES,
    settings: VoteSettings = FIXED_K_SETTINGS,
) -> list[dict]:
    """The paper's hard pruning at each threshold: rows of threshold, pruned (exemplars with v >= threshold),
    fraction_pruned, and per rule the accuracy at settings.k and best-over-k; a last row with threshold None is no
    pruning."""
    reliability = np.asarray(reliability)
    rows = []
    for threshold in sorted({float(t) for t in thresholds} | {float("inf")}):
        curves = paper_hard_pruning_curves(cache, reliability, threshold, rules, settings)
        pruned = int((reliability >= threshold).sum())
        rows.append({"threshold": threshold if np.isfinite(threshold) else None, "pruned": pruned,
                     "fraction_pruned": pruned / max(len(reliability), 1),
                     "accuracy": {r: _at(c, settings.k) for r, c in curves.items()},
                     "best_over_k": {r: best_over_k(c) for r, c in curves.items()}})
    return rows


def matched_threshold(sweep: Sequence[dict], fraction: float = PAPER_FRACTION_PRUNED) -> Optional[float]:
    """The swept threshold whose fraction pruned is nearest `fraction` (the paper's ~2%), for a memory whose v are
    on another scale than ImageNet's (v counts appearances, which grow with the number of confusable items)."""
    pruning = [row for row in sweep if row["threshold"] is not None]
    if not pruning:
        return None
    return min(pruning, key=lambda row: (abs(row["fraction_pruned"] - fraction), -row["threshold"]))["threshold"]


# --- 5. label noise -------------------------------------------------------------------------------------------------
def flip_labels(labels: np.ndarray, fraction: float, seed: int = 0, any_class: bool = False) -> np.ndarray:
    """A copy of `labels` with round(fraction * n) of them, chosen at random, changed to another label at random;
    any_class: replaced by a class drawn uniformly from all of them, which may be the true one (the paper's
    protocol)."""
    if not 0 <= fraction <= 1:
        raise VmemError(f"noise fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    names = np.asarray(class_names(labels.tolist()), dtype=object)
    if len(names) < 2:
        raise VmemError("label noise needs at least two labels")
    out = labels.copy()
    chosen = rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)
    current = label_classes(labels[chosen], names)
    shift = rng.integers(0 if any_class else 1, len(names), size=len(chosen))  # 0 keeps the label
    out[chosen] = names[(current + shift) % len(names)]
    return out


def label_noise(
    cache: NeighborCache, fractions: Sequence[float] = DEFAULT_NOISE, rules: Sequence[str] = RULES,
    settings: VoteSettings = FIXED_K_SETTINGS, seed: int = 0, any_class: bool = False,
):
    """Experiment 5: accuracy per rule when a fraction of memory labels is wrong (any_class: see `flip_labels`).
    DataFrame: noise, rule, accuracy (at settings.k), best_accuracy, best_k."""
    import pandas as pd

    rows = []
    for fraction in fractions:
        noisy = flip_labels(cache.memory_labels, float(fraction), seed, any_class)
        for rule, curve in _curves(cache, cache.positions, cache.distances, rules, settings,
                                   memory_labels=noisy).items():
            best = best_over_k(curve)
            rows.append({"noise": float(fraction), "rule": rule, "accuracy": _at(curve, settings.k),
                         "best_accuracy": best["accuracy"], "best_k": best["k"]})
    return pd.DataFrame(rows)


# --- 7. out of distribution -----------------------------------------------------------------------------------------
def auroc(in_scores: Sequence[float], out_scores: Sequence[float]) -> float:
    """Probability that an out-of-distribution score exceeds an in-distribution one (ties count half): the area
    under the ROC curve, by the Mann-Whitney statistic.

    >>> auroc([0.1, 0.2], [0.3, 0.2])
    0.875
    """
    inside, outside = np.asarray(in_scores, float), np.asarray(out_scores, float)
    if not len(inside) or not len(outside):
        raise VmemError("AUROC needs at least one in- and one out-of-distribution score")
    scores = np.concatenate([inside, outside])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    rank_sum = ranks[len(inside):].sum()
    return float((rank_sum - len(outside) * (len(outside) + 1) / 2) / (len(inside) * len(outside)))


@dataclass
class OodResult:
    held_out: list[str]
    k: int
    auroc: float
    in_scores: np.ndarray
    out_scores: np.ndarray

    def to_dict(self) -> dict:
        return {"held_out": self.held_out, "k": self.k, "auroc": self.auroc, "in_queries": len(self.in_scores),
                "out_queries": len(self.out_scores),
                "in_score_median": float(np.median(self.in_scores)) if len(self.in_scores) else None,
                "out_score_median": float(np.median(self.out_scores)) if len(self.out_scores) else None,
                "histogram": self.histogram()}

    def summary(self) -> dict:
        """The figures without the scores: k, auroc and the medians."""
        out = self.to_dict()
        return {key: out[key] for key in ("k", "auroc", "in_score_median", "out_score_median")}

    def histogram(self, bins: int = 30) -> dict:
        """Fractions of in- and out-of-distribution queries per score bin (shared edges), for plotting."""
        both = np.concatenate([self.in_scores, self.out_scores])
        edges = np.histogram_bin_edges(both, bins=bins) if len(both) else np.zeros(bins + 1)
        fraction = [np.histogram(s, edges)[0] / max(len(s), 1) for s in (self.in_scores, self.out_scores)]
        return {"edges": _round(edges), "in": _round(fraction[0]), "out": _round(fraction[1])}


def ood_auroc(cache: NeighborCache, held_out: Sequence[str], k: int = 1) -> OodResult:
    """Experiment 7: memory without the `held_out` classes; score = mean distance to the k nearest exemplars;
    AUROC of held-out-class queries (out) against the other queries (in)."""
    held_out = _check_labels(cache, held_out, "held-out classes must be memory labels")
    positions, distances = cache.restricted(~np.isin(cache.memory_labels, held_out), k)
    scores = distances[:, :k].mean(axis=1)
    out = np.isin(cache.query_labels, held_out)
    return OodResult(held_out, k, auroc(scores[~out], scores[out]), scores[~out], scores[out])


def ood_auroc_of_images(cache: NeighborCache, outside_vectors: np.ndarray, k: int = 1) -> OodResult:
    """AUROC of other images (e.g. natural photos) against the cache's queries, by the same distance score."""
    if k <= cache.depth:  # the cache holds each query's exact nearest over the whole memory
        inside = cache.distances[:, :k]
    else:
        _, inside = exact_top_k(cache.query_vectors, cache.memory_vectors, k)
    _, outside = exact_top_k(np.asarray(outside_vectors, np.float32), cache.memory_vectors, k)
    in_scores, out_scores = inside.mean(axis=1), outside.mean(axis=1)
    return OodResult([], k, auroc(in_scores, out_scores), in_scores, out_scores)
