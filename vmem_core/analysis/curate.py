"""Curation suggestions: exemplars that look mislabelled or harmful, and near-duplicates. Nothing is changed here."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from ..memory import NEAR_DUPLICATE_DISTANCE, VisualMemory
from ..voting import (DEFAULT_HARD_THRESHOLD, DEFAULT_RELIABILITY_TOP_N, EXPLAIN_SETTINGS, VoteSettings,
                      id_positions, rule_weights)

DEFAULT_SUGGESTIONS = 50  # a list a curator can work through in one sitting; more on demand
# the rows the Curate page draws at a time: each is a thumbnail and three buttons, and 50 of them took ~0.4 s of a
# rerun to draw, which every edit pays again (the ranking behind them is still DEFAULT_SUGGESTIONS deep)
SUGGESTIONS_PER_PAGE = 20
CHECK_NOISE = 0.05  # the share of labels flipped when the ranking's precision is measured on a memory itself


@dataclass(frozen=True)
class Suggestion:
    id: int
    label: str
    suggested_label: Optional[str]  # what its own neighbours vote for (leave-one-out)
    reliability: int  # v: times it sits among the neighbours of differently-labelled items
    reason: str
    score: float = 0.0  # label_issue_scores: higher = more likely mislabelled


def label_issue_scores(classes: np.ndarray, neighbors: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """How likely each item's label is wrong, from the leave-one-out neighbour graph alone: v / max(v) plus the
    weighted share of its own neighbours that disagree with it (by default rank voting's weights 1/(rank + 2); the
    Curate page passes the session's rule's), in [0, 2].

    v counts how often an item sits among the neighbours of differently-labelled items (the paper's reliability);
    the disagreement looks the other way, at the item's own neighbours. Together they found flipped labels in
    Fashion-MNIST with precision@100 0.97 at 5% and 10% noise, against 0.88-0.95 for v alone and 0.77-0.93 for the
    disagreement alone (../shared/RESEARCH.md, "Finding flipped labels"; `python bench/curate.py`).

    Args:
        classes: (n,) class index of each item.
        neighbors: (n, k) positions (into `classes`) of each item's nearest other items, nearest first; -1 = none.
        weights: (n, k) each neighbour's vote weight (`voting.rule_weights`); default 1/(rank + 2).

    >>> classes = np.array([0, 0, 0, 1])  # item 3 sits among 0s with label 1
    >>> neighbors = np.array([[1, 3], [0, 3], [0, 1], [0, 1]])
    >>> label_issue_scores(classes, neighbors).round(2).tolist()  # 0 and 1 have it as their second neighbour
    [0.9, 0.9, 0.0, 2.0]
    """
    classes = np.asarray(classes)
    neighbors = np.atleast_2d(np.asarray(neighbors, dtype=np.int64))
    n, k = neighbors.shape if neighbors.size else (len(classes), 0)
    if k == 0:
        return np.zeros(n)
    present = neighbors >= 0
    disagree = present & (classes[np.where(present, neighbors, 0)] != classes[:, None])
    v = np.bincount(neighbors[disagree], minlength=n).astype(float)
    if weights is None:
        weights = np.broadcast_to(1.0 / (np.arange(k) + 2.0), neighbors.shape)
    weights = np.asarray(weights, dtype=np.float64) * present
    disagreement = (weights * disagree).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-12)
    return v / max(v.max(), 1.0) + disagreement


def neighbor_graph(
    memory: VisualMemory, top_n: int = DEFAULT_RELIABILITY_TOP_N
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item ids (n,), class indices (n,), neighbour positions (n, top_n)): the leave-one-out graph that
    `label_issue_scores` reads, positions indexing the first two arrays (-1 = none)."""
    item_ids, graph_ids, _ = memory.search.memory_neighbors(top_n)
    return item_ids, memory.table.class_indices(item_ids), _neighbor_positions(item_ids, graph_ids)


def flip_labels(classes: np.ndarray, num_classes: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(classes with `noise` of them moved to another class uniformly at random, positions of those flipped)."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(classes), int(len(classes) * noise), replace=False)
    noisy = np.array(classes, copy=True)
    noisy[flipped] = (noisy[flipped] + rng.integers(1, num_classes, len(flipped))) % num_classes
    return noisy, flipped


def _neighbor_positions(item_ids: np.ndarray, neighbor_ids: np.ndarray) -> np.ndarray:
    """Neighbour ids as positions into the sorted `item_ids`; -1 where a neighbour is not among them."""
    return id_positions(item_ids, neighbor_ids)


def curation_settings(settings: VoteSettings) -> VoteSettings:
    """The part of the session's voting settings that curation uses: the rule (with its rank offset and
    temperature), k and top_n; never pruning.

    Pruning is left out on purpose: it judges exemplars by their reliability v, and v is what curation is asking
    about. Hard pruning would drop from every vote exactly the high-v exemplars a curator must see, and with them the
    evidence (their votes) against their neighbours' labels; soft pruning would discount it. Either way the
    suggestions would depend on the suspicion they are meant to test.

    >>> curation_settings(VoteSettings(k=7, rule="softmax", pruning="hard", threshold=3))
    VoteSettings(k=7, rule='softmax', pruning='none', threshold=2.0, top_n=10, rank_offset=2.0, temperature=0.07)
    """
    return replace(settings, pruning="none", threshold=DEFAULT_HARD_THRESHOLD)


def suspicious_exemplars(
    memory: VisualMemory, settings: VoteSettings = EXPLAIN_SETTINGS, limit: int = DEFAULT_SUGGESTIONS
) -> list[Suggestion]:
    """Exemplars that look mislabelled, most likely first, each with the label its settings.k nearest exemplars vote
    for where that differs; only those with some evidence (a score above 0) and at most `limit` of them.

    The score is `label_issue_scores` over settings.top_n leave-one-out neighbours, their disagreement weighted by
    settings.rule; the suggested label is the leave-one-out vote of settings.k neighbours under settings.rule. The
    sidebar's pruning is not applied (`curation_settings` says why)."""
    if len(memory) < 2:
        return []
    used = curation_settings(settings)
    ranked = memory.derived(("suspicious", used), lambda: _suspicious(memory, used))
    return ranked.suggestions(max(int(limit), 0))


@dataclass(frozen=True)
class _Ranked:
    """Every exemplar with some evidence, most likely mislabelled first, as arrays: a memory of 60,000 may have
    tens of thousands, and a page shows fifty, so Suggestions are made only for the ones asked for."""

    ids: np.ndarray
    own: np.ndarray  # class index
    voted: np.ndarray  # the leave-one-out vote's class index, -1 for none
    v: np.ndarray
    scores: np.ndarray
    labels: tuple
    settings: VoteSettings

    def suggestions(self, limit: int) -> list[Suggestion]:
        k, top_n, out = self.settings.k, self.settings.top_n, []
        for item, own_class, vote, reliability, score in zip(self.ids[:limit].tolist(), self.own[:limit].tolist(),
                                                             self.voted[:limit].tolist(), self.v[:limit].tolist(),
                                                             self.scores[:limit].tolist()):
            disagrees = vote >= 0 and vote != own_class
            suggested = self.labels[vote] if disagrees else None
            reason = []
            if disagrees:
                reason.append(f"its {k} nearest exemplars vote '{suggested}' ({self.settings.rule} voting)")
            if reliability:
                reason.append(f"among the top-{top_n} neighbours of {reliability} differently-labelled item(s)")
            out.append(Suggestion(item, self.labels[own_class], suggested, reliability,
                                  "; ".join(reason) or f"some of its top-{top_n} neighbours have other labels",
                                  score))
        return out


def _weighted_graph(memory: VisualMemory, settings: VoteSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                             np.ndarray]:
    """(item ids, class indices, neighbour positions, rule weights) of the leave-one-out graph over settings.top_n
    neighbours: what the suggestions and the check of their ranking both score, made once per change."""

    def compute() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        item_ids, classes, positions = neighbor_graph(memory, settings.top_n)
        _, _, distances = memory.search.memory_neighbors(settings.top_n)
        return item_ids, classes, positions, rule_weights(settings.rule, distances, settings=settings)

    return memory.derived(("curation graph", settings), compute)


def _suspicious(memory: VisualMemory, settings: VoteSettings) -> _Ranked:
    k, top_n = settings.k, settings.top_n
    table = memory.table
    item_ids, own, positions, weights = _weighted_graph(memory, settings)
    scores = label_issue_scores(own, positions, weights)
    _, neighbor_ids, distances = memory.search.memory_neighbors(k)
    *_, predictions = memory.search.vote(neighbor_ids, distances, settings, table=table)
    voted = predictions[:, -1] if predictions.shape[1] else np.full(len(item_ids), -1)
    keep = (scores > 0) & (own >= 0)  # no evidence, or deleted since the neighbours were found
    order = np.flatnonzero(keep)
    order = order[np.lexsort((item_ids[order], -scores[order]))]  # highest score first, ties by id
    return _Ranked(item_ids[order], own[order], np.asarray(voted)[order],
                   memory.reliability.of_neighbors(item_ids[order], top_n),
                   np.asarray(scores, dtype=np.float64)[order], tuple(table.labels), settings)


@dataclass(frozen=True)
class RankingCheck:
    """How well the suggestions' ranking finds labels flipped at random in this very memory."""

    noise: float  # share of labels flipped
    flipped: int
    top: int  # the cut-off checked: the first `top` suggestions
    precision: float  # share of flipped ones among the first `top`
    recall: float  # share of the flipped ones found in the first `top`

    def explain(self) -> str:
        return (f"with {self.noise:.0%} of this memory's labels flipped at random ({self.flipped} exemplars), "
                f"{self.precision:.0%} of the first {self.top} suggestions were flipped ones (precision), and they "
                f"held {self.recall:.0%} of all the flipped ones (recall)")


def check_ranking(memory: VisualMemory, top: int = DEFAULT_SUGGESTIONS, noise: float = CHECK_NOISE,
                  settings: VoteSettings = EXPLAIN_SETTINGS, seed: int = 0) -> Optional[RankingCheck]:
    """Flip `noise` of the labels at random (in a copy: the memory is not changed), rank by `label_issue_scores`
    over the same neighbour graph (settings.top_n neighbours, weighted by settings.rule, as `suspicious_exemplars`
    ranks), and measure the first `top`. Treats today's labels as right, so it measures the ranking, not the memory.
    None with fewer than two labels or too few exemplars to flip one."""
    if not 0 < noise < 1:
        raise ValueError(f"noise is the share of labels flipped, strictly between 0 and 1; got {noise!r}")
    table = memory.table
    if len(table.labels) < 2 or int(len(memory) * noise) < 1:
        return None
    used = curation_settings(settings)
    return memory.derived(("ranking check", top, noise, used, seed),
                          lambda: _check_ranking(memory, top, noise, used, seed))


def _check_ranking(memory: VisualMemory, top: int, noise: float, settings: VoteSettings, seed: int) -> RankingCheck:
    _, classes, graph, weights = _weighted_graph(memory, settings)
    noisy, flipped = flip_labels(classes, len(memory.table.labels), noise, seed)
    top = min(top, len(classes))
    first = np.argsort(-label_issue_scores(noisy, graph, weights), kind="stable")[:top]
    hits = int(np.isin(first, flipped).sum())
    return RankingCheck(noise, len(flipped), top, hits / top, hits / len(flipped))


@dataclass(frozen=True)
class DuplicatePair:
    id: int
    other_id: int
    distance: float
    label: str
    other_label: str

    @property
    def same_label(self) -> bool:
        return self.label == self.other_label


def near_duplicates(
    memory: VisualMemory, max_distance: float = NEAR_DUPLICATE_DISTANCE, limit: int = 100
) -> list[DuplicatePair]:
    """Pairs of live exemplars closer than `max_distance` (each pair once, closest first)."""
    if len(memory) < 2:
        return []
    found = memory.derived(("duplicates", max_distance), lambda: _near_duplicates(memory, max_distance))
    return found[:limit]


def _near_duplicates(memory: VisualMemory, max_distance: float) -> list[DuplicatePair]:
    item_ids, neighbor_ids, distances = memory.search.memory_neighbors(5)
    close = (distances <= max_distance) & (neighbor_ids >= 0)
    rows, columns = np.nonzero(close)
    first, second = item_ids[rows], neighbor_ids[rows, columns]
    low, high = np.minimum(first, second), np.maximum(first, second)
    d = distances[rows, columns].astype(np.float64)
    # each pair once, at its smaller distance (it may be found from both ends); closest first, ties by ids
    order = np.lexsort((d, high, low))
    low, high, d = low[order], high[order], d[order]
    once = np.r_[True, (low[1:] != low[:-1]) | (high[1:] != high[:-1])] if len(low) else np.zeros(0, bool)
    low, high, d = low[once], high[once], d[once]
    order = np.argsort(d, kind="stable")
    low, high, d = low[order], high[order], d[order]
    table = memory.table
    class_low, class_high = table.class_indices(low), table.class_indices(high)  # all pairs at once
    live = (class_low >= 0) & (class_high >= 0)  # both still live
    labels = table.labels
    return [DuplicatePair(a, b, distance, labels[ca], labels[cb]) for a, b, distance, ca, cb in
            zip(low[live].tolist(), high[live].tolist(), d[live].tolist(), class_low[live].tolist(),
                class_high[live].tolist())]
