"""The compute-vs-memory trade-off (the paper's encoder-size figure): accuracy against memory size for encoders of
growing size, and where a smaller encoder with a larger memory matches a larger encoder with a smaller one.

Each encoder brings its own embeddings of the memory and the queries. For every memory size and seed, the memory is a
random subset drawn stratified by class: every class keeps its share of the full memory (to within one or two
exemplars; exactly, for classes of equal size and a memory size that is a multiple of their number), and a seed's
subsets are nested (the 200-exemplar memory holds the 100-exemplar one), so a curve does not zigzag with the
draw. The draw depends on the labels and the seed only, so encoders that embed the same images in the same order vote
over the very same exemplars: the comparison between encoders is paired. Accuracy is RankVoting's (by default) at a
fixed k and at the best k (chosen on the same queries, optimistic), averaged over seeds.

>>> _first_matching_size([100, 1000, 10000], [0.70, 0.80, 0.90], target=0.78)
1000
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from ..errors import VmemError
from ..voting import VoteSettings
from .experiments import DEFAULT_K_MAX, FIXED_K_SETTINGS, accuracy_every_k, best_over_k, predictions_every_k
from .neighbor_cache import build_cache

Progress = Callable[[int, int], None]
DEFAULT_TRADEOFF_SIZES = (100, 200, 500, 1000, 2000, 5000, 10000)
METRICS = ("accuracy", "best_accuracy")  # at the fixed k; at the best k


class EncoderEmbeddings(NamedTuple):
    """One encoder's view of the same data set: its name, memory embeddings and labels, query embeddings and labels."""

    name: str
    memory_vectors: np.ndarray
    memory_labels: Sequence[str]
    query_vectors: np.ndarray
    query_labels: Sequence[str]


def stratified_order(labels: Sequence[str], seed: int) -> np.ndarray:
    """Memory positions in the order a stratified subset takes them: the first n positions are a random subset of n
    exemplars in which every class holds its share of the memory (class c's count lies within
    [share * n - share * classes, share * n + 1]); subsets are nested.

    >>> order = stratified_order(["a"] * 4 + ["b"] * 4, seed=0)
    >>> sorted(np.asarray(["a"] * 4 + ["b"] * 4)[order[:4]].tolist())
    ['a', 'a', 'b', 'b']
    """
    labels = np.asarray(list(labels), dtype=object)
    rng = np.random.default_rng(seed)
    key = np.empty(len(labels))
    for name in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == name)
        # a class's j-th random pick sits at (j + jitter) / class size: each class fills its share at the same pace
        key[members[rng.permutation(len(members))]] = (np.arange(len(members)) + rng.random(len(members))) / len(
            members)
    return np.argsort(key, kind="stable")


def _check(encoders: Sequence[EncoderEmbeddings], sizes: Sequence[int]) -> tuple[list[EncoderEmbeddings], list[int]]:
    encoders = [EncoderEmbeddings(*encoder) for encoder in encoders]
    if not encoders:
        raise VmemError("give at least one encoder's embeddings")
    names = [encoder.name for encoder in encoders]
    if len(set(names)) != len(names):
        raise VmemError(f"encoder names must differ, got {names}")
    for encoder in encoders:
        memory, queries = np.asarray(encoder.memory_vectors), np.asarray(encoder.query_vectors)
        if memory.ndim != 2 or len(memory) != len(encoder.memory_labels):
            raise VmemError(f"encoder {encoder.name!r}: memory vectors of shape {memory.shape} do not match its "
                            f"{len(encoder.memory_labels)} labels; expected (labels, dim)")
        if queries.ndim != 2 or len(queries) != len(encoder.query_labels):
            raise VmemError(f"encoder {encoder.name!r}: query vectors of shape {queries.shape} do not match its "
                            f"{len(encoder.query_labels)} labels; expected (labels, dim)")
        if queries.shape[1] != memory.shape[1]:
            raise VmemError(f"encoder {encoder.name!r}: queries are {queries.shape[1]}-d but its memory is "
                            f"{memory.shape[1]}-d; both must come from the same encoder")
    sizes = sorted({int(size) for size in sizes})
    if not sizes or sizes[0] < 1:
        raise VmemError(f"memory sizes must be whole numbers of at least 1, got {list(sizes)}")
    smallest = min(len(encoder.memory_labels) for encoder in encoders)
    if sizes[-1] > smallest:
        raise VmemError(f"memory size {sizes[-1]} is larger than the memory of {smallest} exemplars; accepted: "
                        f"sizes from 1 to {smallest}")
    return encoders, sizes


@dataclass
class TradeoffResult:
    encoders: list[str]  # in the order given: smallest (cheapest) encoder first
    sizes: list[int]
    seeds: list[int]
    settings: VoteSettings
    rows: list[dict]  # encoder, size, seed, accuracy (at settings.k), best_accuracy, best_k

    def curves(self) -> dict[str, list[dict]]:
        """encoder -> per memory size: mean and standard deviation over seeds of both metrics, mean best k."""
        out = {}
        for name in self.encoders:
            points = []
            for size in self.sizes:
                rows = [row for row in self.rows if row["encoder"] == name and row["size"] == size]
                point = {"size": size}
                for metric in METRICS:
                    values = np.array([row[metric] for row in rows])
                    point[metric] = round(float(values.mean()), 6)
                    point[f"{metric}_std"] = round(float(values.std()), 6)
                point["best_k"] = round(float(np.mean([row["best_k"] for row in rows])), 2)
                points.append(point)
            out[name] = points
        return out

    def to_dict(self) -> dict:
        curves = self.curves()
        return {"encoders": self.encoders, "sizes": self.sizes, "seeds": self.seeds, "rule": self.settings.rule,
                "k": self.settings.k, "stratified": True, "rows": self.rows, "curves": curves,
                "overtakes": {metric: overtakes(curves, self.encoders, metric) for metric in METRICS}}


def encoder_tradeoff(
    encoders: Sequence[EncoderEmbeddings],
    sizes: Sequence[int] = DEFAULT_TRADEOFF_SIZES,
    seeds: Sequence[int] = (0, 1, 2),
    settings: VoteSettings = FIXED_K_SETTINGS,
    k_max: int = DEFAULT_K_MAX,
    progress: Optional[Progress] = None,
) -> TradeoffResult:
    """Accuracy of each encoder at each memory size, over seeded stratified subsets of its memory.

    Args:
        encoders: (name, memory vectors, memory labels, query vectors, query labels) per encoder, cheapest first
            (the order `overtakes` reads as "smaller" and "larger").
        sizes: memory sizes in exemplars, each at most the smallest memory given.
        seeds: one subset per seed and size.
        settings: the rule, its parameters and the fixed k (default: RankVoting, k = 10).
        k_max: the largest k tried for best-over-k.
        progress: called as progress(done, total) per encoder, size and seed.

    Raises:
        VmemError: no encoders, repeated names, vectors that do not match their labels or each other's dimension, a
            size below 1 or above a memory's size, no seeds.
    """
    encoders, sizes = _check(encoders, sizes)
    if not seeds:
        raise VmemError("give at least one seed")
    rows, done, total = [], 0, len(encoders) * len(sizes) * len(seeds)
    for encoder in encoders:
        labels = np.asarray(list(encoder.memory_labels), dtype=object)
        cache = build_cache(encoder.memory_vectors, labels, encoder.query_vectors, encoder.query_labels,
                            k=min(int(k_max), len(labels)))
        for seed in seeds:
            order = stratified_order(labels, seed)
            for size in sizes:
                keep = np.zeros(len(labels), dtype=bool)
                keep[order[:size]] = True
                positions, distances = cache.restricted(keep)
                curve = accuracy_every_k(*predictions_every_k(positions, distances, labels, cache.query_labels,
                                                              settings))
                best = best_over_k(curve)
                rows.append({"encoder": encoder.name, "size": size, "seed": int(seed),
                             "accuracy": round(float(curve[min(settings.k, len(curve)) - 1]), 6),
                             "best_accuracy": round(best["accuracy"], 6), "best_k": best["k"]})
                done += 1
                if progress:
                    progress(done, total)
    return TradeoffResult([e.name for e in encoders], sizes, [int(s) for s in seeds], settings, rows)


def _first_matching_size(sizes: Sequence[int], accuracies: Sequence[float], target: float) -> Optional[int]:
    """The smallest memory size whose accuracy reaches `target`, or None."""
    return next((size for size, accuracy in zip(sizes, accuracies) if accuracy >= target), None)


def overtakes(curves: dict[str, list[dict]], order: Sequence[str], metric: str = "best_accuracy") -> list[dict]:
    """For each pair (smaller, larger) in `order` (cheapest first) and each memory size of the larger encoder: the
    smallest memory at which the smaller encoder reaches the larger one's accuracy (None if it never does).

    A row whose `smaller_size` exceeds `larger_size` is the trade-off itself: the cheaper encoder buys the larger
    one's accuracy with `memory_factor` times the memory. One at or below it means the "larger" encoder is no better.

    Raises:
        VmemError: an unknown metric, or a name in `order` without a curve.
    """
    if metric not in METRICS:
        raise VmemError(f"unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
    missing = [name for name in order if name not in curves]
    if missing:
        raise VmemError(f"no curve for encoders {missing}; curves exist for {sorted(curves)}")
    out = []
    for i, smaller in enumerate(order):
        sizes = [point["size"] for point in curves[smaller]]
        accuracies = [point[metric] for point in curves[smaller]]
        for larger in order[i + 1:]:
            for point in curves[larger]:
                match = _first_matching_size(sizes, accuracies, point[metric])
                out.append({
                    "smaller": smaller, "larger": larger, "larger_size": point["size"],
                    "larger_accuracy": point[metric], "smaller_size": match,
                    "smaller_accuracy": None if match is None else accuracies[sizes.index(match)],
                    "memory_factor": None if match is None else round(match / point["size"], 4),
                })
    return out
