"""The evidence each registered claim (`claims.CLAIMS`) is judged on, computed from embeddings.

One exact search of the test queries (K = `DEEP_K`, deep enough for label noise) and one leave-one-out search of the
memory (for reliability) feed every claim; subsets (smaller memories, held-out classes, pruned exemplars, deleted
exemplars) reuse them through `NeighborCache.restricted`, which searches again exactly where the cached list runs
short. Every accuracy is kept per query, so intervals are bootstraps over queries and comparisons are paired on the
same queries; what is random (memory subsets, label noise, digit splits, deletions) runs over `SEEDS` seeds.

The output is `{claim id: evidence}` in the form `claims.Claim.verdict` reads, plus "tables" with the numbers the
report shows beside the verdicts. The evidence measured elsewhere (delete latency, purge, re-ranking) is
`vmem_core.analysis.measured_evidence`, re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from ..voting import VoteSettings, class_names, label_classes, reliability_counts, rule_weights, \
    soft_pruning_factors, vote_all_k
from . import stats
from .measured_evidence import reranking_evidence, unlearning_timing  # noqa: F401  (re-exported)
from .neighbor_cache import build_cache, exact_top_k

SEEDS = (0, 1, 2, 3, 4)
DEEP_K = 500  # label noise at 60% needs large k; the best k must not sit at the cap (else: censored)
CURVE_K = 100  # accuracy-vs-k, hit rate and neighbour index, as the paper's figures
FIXED_K = 10
TEMPERATURES = (0.01, 0.02, 0.05, 0.07, 0.1, 0.2, 0.5)
OFFSETS = (1.0, 2.0, 5.0, 10.0)
SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)  # per class; the full memory is the largest size
NOISE = 0.6
PRUNED_FRACTION = 0.02  # the paper prunes ~2% of ImageNet's memory with v >= 128 over the top-100
DELETIONS = 200
Progress = Callable[[str], None]


@dataclass
class Inputs:
    memory_vectors: np.ndarray
    memory_labels: np.ndarray
    query_vectors: np.ndarray
    query_labels: np.ndarray
    digits_vectors: Optional[np.ndarray] = None
    digits_labels: Optional[np.ndarray] = None
    photo_vectors: Optional[np.ndarray] = None
    taxonomy: Optional[dict] = None  # class -> group
    overlapping: Sequence[str] = ("shirt", "sneaker")
    encoders: dict = field(default_factory=dict)  # name -> (memory vectors, memory labels, query vectors, labels)


def _iv(interval: stats.Interval) -> dict:
    return interval.to_dict()


def correct_every_k(cache_labels: np.ndarray, distances: np.ndarray, truth: np.ndarray, num_classes: int,
                    rule: str, settings: VoteSettings = VoteSettings()) -> np.ndarray:
    """(n, K) bool: is the vote of the first k neighbours right, for every k."""
    weights = rule_weights(rule, distances, settings=settings)
    weights = np.where(cache_labels >= 0, weights, 0.0)
    return vote_all_k(cache_labels, weights, num_classes) == truth[:, None]


def notebook_predict(classes: Sequence[int], ids: Sequence[int], excluded: set, offset: float = 2.0) -> list[int]:
    """The paper notebook's hard-pruned RankVoting for one query (main_analysis_plots.ipynb,
    PredictionAggregation.predict with exclude sets), ported line by line for the check below: prediction at every
    prefix of the retrieved list; excluded neighbours are skipped and do not advance the rank; if every retrieved
    neighbour is excluded none is; before the first kept neighbour the first retrieved one's class is predicted.
    One deliberate difference: the notebook tests `not highest_weight_class`, which also fires for a leading class
    0 when classes are integers; the port tests for no leader, which is what the notebook means."""
    counts: dict = {}
    max_count, leader, kept_rank = -math.inf, None, 0
    exclude = bool(excluded) and len(ids) - len(set(ids) & excluded) > 0
    out = []
    for i, p in enumerate(classes):
        if not (exclude and ids[i] in excluded):
            counts[p] = counts.get(p, 0.0) + 1.0 / (kept_rank + offset)
            if counts[p] > max_count:
                max_count, leader = counts[p], p
            kept_rank += 1
        out.append(classes[0] if leader is None else leader)
    return out


def skip_pruned_predictions(neighbor_classes: np.ndarray, excluded: np.ndarray, offset: float = 2.0) -> np.ndarray:
    """The notebook's hard pruning, vectorised: (n, K) predictions at every k, pruned neighbours skipped within the
    retrieved list (not replaced by the next kept item), ranks counted over the kept ones. `excluded`: (n, K) bool."""
    excluded = np.where(excluded.all(axis=1, keepdims=True), False, excluded)  # all pruned: none is
    kept = ~excluded
    ranks = np.cumsum(kept, axis=1) - 1
    weights = np.where(kept, 1.0 / (np.maximum(ranks, 0) + offset), 0.0)
    # a zero weight still takes the lead while no kept neighbour has voted: the first retrieved class, as the notebook
    return vote_all_k(neighbor_classes, weights, int(neighbor_classes.max()) + 1)


def scaling_misses(sizes: np.ndarray, error: np.ndarray, fit_below: float) -> tuple[float, float]:
    """Fit log10(error) linearly in log10(N) (power law) and in log10(log10(N)) (the paper's form) on the sizes below
    `fit_below`; return each form's |miss| in log10(error) at the largest size."""
    sizes, error = np.asarray(sizes, dtype=float), np.asarray(error, dtype=float)
    fit = sizes < fit_below
    target = np.log10(error[~fit][-1])
    misses = []
    for x in (np.log10(sizes), np.log10(np.log10(sizes))):
        slope, intercept = np.polyfit(x[fit], np.log10(error[fit]), 1)
        misses.append(abs(slope * x[~fit][-1] + intercept - target))
    return float(misses[0]), float(misses[1])


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            total += rows.mean() * abs(confidence[rows].mean() - correct[rows].mean())
    return float(total)


def stratified_keep(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """A mask keeping `per_class` random items of each class (all of a smaller class)."""
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep[rng.choice(rows, min(per_class, len(rows)), replace=False)] = True
    return keep


def _merge(positions, distances, extra_distances, offset: int, k: int):
    """The k nearest of two candidate lists (the cached memory neighbours and extra items numbered from offset)."""
    order = np.argsort(extra_distances, axis=1, kind="stable")[:, :k]
    extra_d = np.take_along_axis(extra_distances, order, axis=1)
    all_p = np.concatenate([positions[:, :k], order + offset], axis=1)
    all_d = np.concatenate([distances[:, :k], extra_d], axis=1)
    pick = np.argsort(all_d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_p, pick, axis=1), np.take_along_axis(all_d, pick, axis=1)


class Evidence:
    def __init__(self, inputs: Inputs, progress: Optional[Progress] = None, seeds: Sequence[int] = SEEDS,
                 deep_k: int = DEEP_K):
        self.x = inputs
        self.say = progress or (lambda text: None)
        self.seeds = tuple(seeds)
        self.names = class_names(list(inputs.memory_labels))
        self.memory_classes = label_classes(inputs.memory_labels, self.names)
        self.truth = label_classes(inputs.query_labels, self.names, missing=-2)
        self.say("exact search of the queries")
        self.cache = build_cache(inputs.memory_vectors, inputs.memory_labels, inputs.query_vectors,
                                 inputs.query_labels, k=min(deep_k, len(inputs.memory_labels)))
        self.neighbor_classes = self.memory_classes[self.cache.positions]
        self.out: dict = {}
        self.tables: dict = {}

    def classes_of(self, positions: np.ndarray) -> np.ndarray:
        return np.where(positions >= 0, self.memory_classes[np.maximum(positions, 0)], -1)

    def correct(self, rule: str, depth: int = CURVE_K, settings: VoteSettings = VoteSettings(),
                positions=None, distances=None, classes=None, truth=None) -> np.ndarray:
        positions = self.cache.positions if positions is None else positions
        distances = self.cache.distances if distances is None else distances
        classes = self.classes_of(positions) if classes is None else classes
        truth = self.truth if truth is None else truth
        return correct_every_k(classes[:, :depth], distances[:, :depth], truth, len(self.names), rule, settings)

    # -- accuracy vs k, neighbour index, hit rate, temperature, sweeps, calibration
    def accuracy(self) -> None:
        self.say("accuracy vs k")
        curves = {rule: self.correct(rule) for rule in ("rank", "plurality", "distance", "softmax")}
        self.curves = curves
        table = {}
        for rule, ok in curves.items():
            acc = ok.mean(axis=0)
            best = int(np.argmax(acc))
            drop = stats.paired_difference(ok[:, best], ok[:, -1])
            table[rule] = {"best_k": best + 1, "best": float(acc[best]), "k10": float(acc[FIXED_K - 1]),
                           "k100": float(acc[-1]), "drop": drop.to_dict(),
                           "k10_interval": stats.mean_interval(ok[:, FIXED_K - 1]).to_dict()}
        self.tables["accuracy"] = table
        note = lambda r: f"best k = {table[r]['best_k']} ({100 * table[r]['best']:.2f}%), k = {CURVE_K} " \
                         f"({100 * table[r]['k100']:.2f}%)"
        self.out["rank-plateau"] = {"interval": table["rank"]["drop"], "note": note("rank")}
        self.out["plurality-falls"] = {"interval": table["plurality"]["drop"], "note": note("plurality")}
        self.out["softmax-falls"] = {"interval": table["softmax"]["drop"], "note": note("softmax")}
        self.out["rank-beats-softmax"] = {"interval": _iv(stats.paired_difference(curves["rank"][:, -1],
                                                                                   curves["softmax"][:, -1])),
                                          "note": f"McNemar p = {stats.mcnemar_p(curves['rank'][:, -1], curves['softmax'][:, -1]):.2g}"}
        # the i-th neighbour alone, and the hit rate
        alone = self.neighbor_classes[:, :CURVE_K] == self.truth[:, None]
        self.tables["neighbour_index"] = alone.mean(axis=0).tolist()
        self.out["neighbour-index"] = {"interval": _iv(stats.paired_difference(alone[:, 0], alone[:, -1])),
                                       "note": f"1st {100 * alone[:, 0].mean():.2f}%, {CURVE_K}th "
                                               f"{100 * alone[:, -1].mean():.2f}%"}
        hits = np.cumsum(alone, axis=1) > 0
        self.tables["hit_rate"] = hits.mean(axis=0).tolist()
        self.out["hit-rate"] = {"interval": _iv(stats.mean_interval(hits[:, -1]))}
        # softmax temperature and rank offset, k = 10
        by_t = np.stack([self.correct("softmax", FIXED_K, VoteSettings(temperature=t))[:, -1] for t in TEMPERATURES],
                        axis=1).astype(float)
        at = TEMPERATURES.index(0.07)
        gap = stats.bootstrap(lambda m: float(m.mean(axis=0).max() - m[:, at].mean()), by_t, draws=1000)
        self.tables["temperature"] = {f"{t:g}": float(v) for t, v in zip(TEMPERATURES, by_t.mean(axis=0))}
        best_t = TEMPERATURES[int(np.argmax(by_t.mean(axis=0)))]
        self.out["temperature"] = {"interval": _iv(gap), "note": f"best T = {best_t:g}"}
        by_offset = np.stack([self.correct("rank", FIXED_K, VoteSettings(rank_offset=o))[:, -1] for o in OFFSETS],
                             axis=1).astype(float)
        spread = stats.bootstrap(lambda m: float(np.ptp(m.mean(axis=0))), by_offset, draws=1000)
        self.tables["offset"] = {f"{o:g}": float(v) for o, v in zip(OFFSETS, by_offset.mean(axis=0))}
        self.out["sweep-regime"] = {"interval": _iv(spread)}
        # calibration: the plurality share of the 10 nearest as the confidence of the plurality vote
        top = self.neighbor_classes[:, :FIXED_K]
        counts = np.stack([(top == c).sum(axis=1) for c in range(len(self.names))], axis=1)
        confidence = counts.max(axis=1) / FIXED_K
        right = curves["plurality"][:, FIXED_K - 1].astype(float)
        ece = stats.bootstrap(expected_calibration_error, confidence, right, draws=500)
        self.out["calibration"] = {"interval": _iv(ece)}

    def linear_probe(self) -> None:
        self.say("linear probe (logistic regression on the same embeddings)")
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=300, C=1.0)
        model.fit(self.x.memory_vectors, self.memory_classes)
        linear = model.predict(self.x.query_vectors) == self.truth
        knn = self.curves["rank"][:, FIXED_K - 1]
        self.out["linear-probe"] = {"interval": _iv(stats.paired_difference(linear, knn)),
                                    "note": f"linear {100 * linear.mean():.2f}%, kNN {100 * knn.mean():.2f}%; "
                                            f"McNemar p = {stats.mcnemar_p(linear, knn):.2g}"}

    def scaling(self) -> None:
        self.say("memory size (5 seeds)")
        per_class = np.bincount(self.memory_classes).min()
        sizes = [s for s in SIZES if s < per_class]
        rows = []  # (sizes + 1, queries): correctness averaged over seeds
        for size in sizes:
            acc = np.zeros(len(self.truth))
            for seed in self.seeds:
                keep = stratified_keep(self.x.memory_labels, size, seed)
                positions, distances = self.cache.restricted(keep, FIXED_K)
                acc += self.correct("rank", FIXED_K, positions=positions, distances=distances)[:, -1]
            rows.append(acc / len(self.seeds))
        rows.append(self.curves["rank"][:, FIXED_K - 1].astype(float))
        matrix = np.stack(rows, axis=1)
        exemplars = np.array([s * len(self.names) for s in sizes] + [len(self.memory_classes)], dtype=float)

        def advantage(m):
            error = np.clip(1 - m.mean(axis=0), 1e-6, 1)
            power, paper = scaling_misses(exemplars, error, exemplars[-1])
            return power - paper

        self.tables["scaling"] = {"exemplars": exemplars.tolist(), "accuracy": matrix.mean(axis=0).tolist()}
        power, paper = scaling_misses(exemplars, np.clip(1 - matrix.mean(axis=0), 1e-6, 1), exemplars[-1])
        self.out["scaling-form"] = {"interval": _iv(stats.bootstrap(advantage, matrix, draws=500)),
                                    "note": f"misses at {int(exemplars[-1]):,}: power law {power:.3f}, paper's form "
                                            f"{paper:.3f} (log10 error)"}

    def new_classes(self) -> None:
        x = self.x
        base = self.curves["rank"][:, FIXED_K - 1]
        if x.digits_vectors is not None and len(x.digits_vectors):
            self.say("new classes: digits")
            change = np.zeros(len(self.truth))
            recognised = []
            for seed in self.seeds:
                rng = np.random.default_rng(seed)
                added = np.zeros(len(x.digits_labels), dtype=bool)
                for label in np.unique(x.digits_labels):
                    rows = np.flatnonzero(x.digits_labels == label)
                    added[rng.choice(rows, len(rows) // 2, replace=False)] = True
                extra = x.digits_vectors[added]
                extra_names = np.unique(x.digits_labels)
                names = tuple(self.names) + tuple(extra_names)
                extra_classes = label_classes(x.digits_labels[added], names)
                all_classes = np.concatenate([self.memory_classes, extra_classes])
                # old-class queries: cached neighbours merged with the added digits
                d = 1.0 - x.query_vectors @ extra.T
                positions, distances = _merge(self.cache.positions, self.cache.distances, d, len(self.memory_classes),
                                              FIXED_K)
                after = correct_every_k(all_classes[positions], distances, self.truth, len(names), "rank")[:, -1]
                change += after.astype(float) - base
                # new-class queries: the other half of each digit class
                queries = x.digits_vectors[~added]
                truth = label_classes(x.digits_labels[~added], names)
                mp, md = exact_top_k(queries, x.memory_vectors, FIXED_K)
                positions, distances = _merge(mp, md, 1.0 - queries @ extra.T, len(self.memory_classes), FIXED_K)
                ok = correct_every_k(all_classes[positions], distances, truth, len(names), "rank")[:, -1]
                recognised.append(float(ok.mean()))
            self.out["new-classes-digits"] = {"interval": _iv(stats.mean_interval(change / len(self.seeds))),
                                              "note": f"{len(self.seeds)} seeds, per-query change averaged"}
            self.out["new-classes-recognised"] = {"interval": _iv(stats.seed_interval(recognised))}
        else:
            reason = "scikit-learn's digits were not encoded in this run"
            self.out["new-classes-digits"] = self.out["new-classes-recognised"] = {"not_comparable": reason}
        self.say("new classes: held-out Fashion-MNIST classes")
        held = np.isin(x.memory_labels, list(x.overlapping))
        old_queries = ~np.isin(x.query_labels, list(x.overlapping))
        positions, distances = self.cache.restricted(~held, FIXED_K)
        before = self.correct("rank", FIXED_K, positions=positions, distances=distances)[:, -1]
        change = (base.astype(float) - before)[old_queries]
        self.out["new-classes-overlapping"] = {"interval": _iv(stats.mean_interval(change)),
                                               "note": f"{', '.join(x.overlapping)} added; McNemar p = "
                                                       f"{stats.mcnemar_p(base[old_queries], before[old_queries]):.2g}"}

    def ood(self) -> None:
        self.say("OOD scores")
        x = self.x
        depth = min(CURVE_K, self.cache.depth)
        inside_mean = self.cache.distances[:, :depth].mean(axis=1)
        inside_first = self.cache.distances[:, 0]
        table = {}
        for claim, vectors in (("ood-digits", x.digits_vectors), ("ood-photos", x.photo_vectors)):
            if vectors is None or not len(vectors):
                self.out[claim] = {"not_comparable": "the images were not encoded in this run"}
                continue
            _, d = exact_top_k(vectors, x.memory_vectors, depth)
            mean_auc = stats.auroc_interval(inside_mean, d.mean(axis=1))
            first_auc = stats.auroc_interval(inside_first, d[:, 0])
            table[claim] = {"mean_100": mean_auc.to_dict(), "nearest": first_auc.to_dict(), "images": len(vectors)}
            self.out[claim] = {"interval": _iv(mean_auc),
                               "note": f"{len(vectors):,} images; nearest-only AUROC {first_auc.estimate:.3f}"}
        self.tables["ood"] = table

    def pruning(self) -> None:
        self.say("leave-one-out search of the memory (reliability)")
        x = self.x
        loo = build_cache(x.memory_vectors, x.memory_labels, k=100)
        ids = np.arange(len(self.memory_classes))
        base = self.curves["rank"][:, FIXED_K - 1]
        # hard: v over the top-100 (the paper's notebook); the threshold that prunes ~2% here
        v100 = reliability_counts(ids, self.memory_classes, loo.positions[:, :100])
        thresholds = np.unique(v100[v100 > 0])
        fraction = np.array([(v100 >= t).mean() for t in thresholds])
        threshold = int(thresholds[np.argmin(np.abs(fraction - PRUNED_FRACTION))]) if len(thresholds) else 1
        keep = v100 < threshold
        # the notebook's protocol: pruned neighbours are skipped within the retrieved list (K = 100)
        depth = min(CURVE_K, self.cache.depth)
        pruned = ~keep[self.cache.positions[:, :depth]]
        predictions = skip_pruned_predictions(self.neighbor_classes[:, :depth], pruned)
        hard = predictions[:, FIXED_K - 1] == self.truth
        # the port, line by line, on the same neighbours: it must agree everywhere it is run
        sample = np.random.default_rng(0).choice(len(self.truth), min(1000, len(self.truth)), replace=False)
        excluded = set(np.flatnonzero(~keep).tolist())
        differences = sum(
            notebook_predict(self.neighbor_classes[i, :depth].tolist(), self.cache.positions[i, :depth].tolist(),
                             excluded) != predictions[i].tolist() for i in sample)
        # the project's variant: the k nearest kept exemplars (pruned ones replaced by the next kept)
        positions, distances = self.cache.restricted(keep, FIXED_K)
        nearest_kept = self.correct("rank", FIXED_K, positions=positions, distances=distances)[:, -1]
        self.tables["hard_pruning"] = {"threshold": threshold, "fraction": float((~keep).mean()),
                                       "notebook_port_differences": int(differences), "port_checked": int(len(sample)),
                                       "nearest_kept": stats.paired_difference(nearest_kept, base).to_dict()}
        self.out["hard-pruning"] = {"interval": _iv(stats.paired_difference(hard, base)),
                                    "note": f"v >= {threshold} pruned: {100 * (~keep).mean():.2f}% of the memory; "
                                            f"McNemar p = {stats.mcnemar_p(hard, base):.2g}; notebook port: "
                                            f"{differences} differences on {len(sample):,} queries"}
        # soft: v over the top-10, weights x 1.75 / (1 + v)
        v10 = reliability_counts(ids, self.memory_classes, loo.positions[:, :10])
        factors = soft_pruning_factors(v10)[self.cache.positions[:, :FIXED_K]]
        weights = rule_weights("rank", self.cache.distances[:, :FIXED_K]) * factors
        soft = vote_all_k(self.neighbor_classes[:, :FIXED_K], weights, len(self.names))[:, -1] == self.truth
        self.out["soft-pruning"] = {"interval": _iv(stats.paired_difference(soft, base)),
                                    "note": f"{100 * (v10 > 0).mean():.1f}% of exemplars down-weighted; McNemar p = "
                                            f"{stats.mcnemar_p(soft, base):.2g}"}

    def label_noise(self) -> None:
        self.say("label noise (5 seeds)")
        depth = self.cache.depth
        clean = self.correct("rank", depth).mean(axis=0)
        clean_best = float(clean.max())
        losses, best_ks = [], []
        for seed in self.seeds:
            rng = np.random.default_rng(seed)
            noisy = self.memory_classes.copy()
            rows = rng.random(len(noisy)) < NOISE
            noisy[rows] = rng.integers(0, len(self.names), rows.sum())
            acc = self.correct("rank", depth, classes=noisy[self.cache.positions]).mean(axis=0)
            losses.append(clean_best - float(acc.max()))
            best_ks.append(int(np.argmax(acc)) + 1)
        censored = max(best_ks) >= depth
        self.tables["noise"] = {"clean_best": clean_best, "clean_best_k": int(np.argmax(clean)) + 1,
                                "best_ks": best_ks, "losses": losses, "k_searched": depth}
        self.out["label-noise"] = {"interval": _iv(stats.seed_interval(losses)), "censored": censored,
                                   "k_searched": depth, "note": f"best k per seed {best_ks} of {depth} searched"}

    def taxonomy(self) -> None:
        x = self.x
        if not x.taxonomy:
            self.out["taxonomy"] = {"not_comparable": "no taxonomy given"}
            return
        self.say("taxonomy (held-out classes, 5 seeds)")
        groups = {name: x.taxonomy.get(name) for name in self.names}
        members = {g: [n for n in self.names if groups[n] == g] for g in set(groups.values())}
        tested = [n for n in self.names if len(members[groups[n]]) > 1]  # singleton groups score 0 by construction
        memory_groups = np.asarray([groups[n] for n in self.names], dtype=object)[self.memory_classes]
        per_seed = []
        for seed in self.seeds:
            above = []
            for name in tested:
                keep = stratified_keep(x.memory_labels, 50, seed) & (x.memory_labels != name)
                rows = np.flatnonzero(x.query_labels == name)
                sub = self.cache.subset_queries(rows)
                positions, _ = sub.restricted(keep, 1)
                accuracy = (memory_groups[positions[:, 0]] == groups[name]).mean()
                chance = (memory_groups[keep] == groups[name]).mean()
                above.append(accuracy - chance)
            per_seed.append(float(np.mean(above)))
        self.tables["taxonomy"] = {"classes": tested, "per_seed": per_seed}
        self.out["taxonomy"] = {"interval": _iv(stats.seed_interval(per_seed)),
                                "note": f"{len(tested)} classes in groups of 2 or more"}

    def tradeoff(self) -> None:
        small, large = "efficientnet-lite0", "efficientnet-lite1"
        if small not in self.x.encoders or large not in self.x.encoders:
            self.out["compute-vs-memory"] = {"not_comparable": "Lite0/Lite1 subset embeddings not in this run"}
            return
        self.say("compute vs memory")
        results = {}
        for name, (mv, ml, qv, ql) in self.x.encoders.items():
            names = class_names(list(ml))
            mc, truth = label_classes(ml, names), label_classes(ql, names, missing=-2)
            cache = build_cache(mv, ml, qv, ql, k=FIXED_K)
            per_size = {}
            for size in (len(ml) // 2, len(ml)):
                acc = np.zeros(len(ql))
                for seed in self.seeds:
                    keep = stratified_keep(ml, size // len(names), seed) if size < len(ml) else np.ones(len(ml), bool)
                    p, d = cache.restricted(keep, FIXED_K)
                    acc += correct_every_k(mc[p], d, truth, len(names), "rank")[:, -1]
                per_size[size] = acc / len(self.seeds)
            results[name] = per_size
        half, full = sorted(results[small])
        self.tables["tradeoff"] = {n: {str(s): float(v.mean()) for s, v in r.items()} for n, r in results.items()}
        self.out["compute-vs-memory"] = {
            "gain": _iv(stats.paired_difference(results[large][half], results[small][half])),
            "catch_up": _iv(stats.paired_difference(results[small][full], results[large][half])),
            "note": f"memory {half:,} vs {full:,}; " + ", ".join(
                f"{n} {100 * r[half].mean():.2f}% / {100 * r[full].mean():.2f}%" for n, r in results.items())}

    def unlearning_exactness(self) -> None:
        """Delete 200 exemplars (seeded) from the exact-search memory: no answer may change for a query none of
        whose neighbours was deleted, and no deleted exemplar may be retrieved afterwards."""
        self.say("unlearning exactness (5 seeds)")
        before = vote_all_k(self.neighbor_classes[:, :FIXED_K], rule_weights("rank", self.cache.distances[:, :FIXED_K]),
                            len(self.names))[:, -1]
        changed_untouched = retrieved = untouched = touched_total = slots = 0
        # 200 of 60,000 as the paper's scale; a small (--limit) memory loses 1 in 25 so that some queries keep all
        # their neighbours and the retained-utility count has something to count
        count = max(1, min(DELETIONS, len(self.memory_classes) // 25))
        for seed in self.seeds:
            rng = np.random.default_rng(seed)
            deleted = rng.choice(len(self.memory_classes), count, replace=False)
            keep = np.ones(len(self.memory_classes), dtype=bool)
            keep[deleted] = False
            positions, distances = self.cache.restricted(keep, FIXED_K)
            after = vote_all_k(self.classes_of(positions), rule_weights("rank", distances), len(self.names))[:, -1]
            touched = np.isin(self.cache.positions[:, :FIXED_K], deleted).any(axis=1)
            changed_untouched += int(((before != after) & ~touched).sum())
            untouched += int((~touched).sum())
            touched_total += int(touched.sum())
            retrieved += int(np.isin(positions, deleted).sum())
            slots += int(positions.size)
        self.out["retained-utility"] = {"count": changed_untouched, "of": untouched,
                                        "note": f"{len(self.seeds)} seeds x {count} deletions; "
                                                f"{touched_total} query-seeds had a deleted neighbour"}
        self.out["forgetting"] = {"count": retrieved, "of": slots, "note": "neighbour slots after deletion"}

    def run(self) -> dict:
        for step in (self.accuracy, self.linear_probe, self.scaling, self.new_classes, self.ood, self.pruning,
                     self.label_noise, self.taxonomy, self.tradeoff, self.unlearning_exactness):
            step()
        return {"evidence": self.out, "tables": self.tables, "seeds": list(self.seeds),
                "queries": int(len(self.truth)), "memory": int(len(self.memory_classes))}
