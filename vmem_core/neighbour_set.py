"""A neighbour set: the neighbours of a batch of queries, searched once, that answer every question a page asks.

One index search at the largest depth K a page needs gives, without searching again:

- the votes and the prediction at any k <= K, under any rule (`predictions`, `classifications`);
- attribution, "the prediction without this exemplar", exact where K >= k + 1 (`attribution`);
- which queries lean on a set of exemplars (`voted_by`) and which would change their prediction without them
  (`changes_without`), from the same neighbours with the same pruning as the prediction.

Pruning is part of the question. Hard pruning is answered by the search itself: `VisualMemory.neighbour_set`
searches among the exemplars it keeps, so every k has k voters where enough are kept, and ranks are renumbered over
them (vmem's hard pruning since the start; a set searched that way cannot answer an unpruned question: the pruned
exemplars were never found). Soft pruning needs each neighbour's reliability v, which the set carries. An unpruned
set answers none and soft exactly, and hard by skipping the pruned neighbours it holds (fewer than k voters where
some of the first k are pruned: search again with hard pruning for the renumbered vote).

Reliability v is held fixed throughout: removing an exemplar from memory also changes other exemplars' v (they
were its leave-one-out neighbours), which no set of query neighbours can see.

Pure: numpy and the voting rules; it imports no memory (`VisualMemory.neighbour_set` builds one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from .classification import Classification, classifications
from .voting import VoteSettings, compact_kept, prepare_votes, resolve_settings, soft_or_unpruned, vote_all_k


def counterfactual_predictions(
    classes: np.ndarray,
    distances: np.ndarray,
    settings: VoteSettings,
    num_classes: int,
    reliability: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The prediction at k, and the prediction at k with each of the first k neighbours removed, exactly.

    Removing a neighbour lets the (k+1)-th one in and renumbers the ranks behind it, so the inputs hold k + 1
    neighbours per row (fewer where the memory is smaller: then removal just leaves k - 1 voters).

    Args:
        classes: int (n, k+1) class indices, nearest first (-1 for missing).
        distances: float (n, k+1).
        settings: k (voters per prediction), the rule and its parameters; hard pruning has already chosen the
            neighbours, soft pruning applies where `reliability` is given.
        num_classes: C.
        reliability: v per neighbour, (n, k+1), for soft pruning; None for none.

    Returns:
        (predicted (n,), without (n, k)): without[:, j] is the prediction with neighbour j left out (-1: no voter).

    >>> counterfactual_predictions(np.array([[0, 1, 1]]), np.zeros((1, 3)), VoteSettings(k=2), 2)[1].tolist()
    [[1, 0]]
    """
    classes = np.asarray(classes, dtype=np.int64)
    distances = np.asarray(distances, dtype=np.float64)
    voting = soft_or_unpruned(settings, reliability)
    k = settings.k
    depth = classes.shape[1]
    used = min(k, depth)

    def predict(columns: np.ndarray, voters: int) -> np.ndarray:
        votes, weights, _ = prepare_votes(classes[:, columns], distances[:, columns], voting,
                                          None if reliability is None else reliability[:, columns])
        if voters == 0 or votes.shape[1] == 0:
            return np.full(len(classes), -1, dtype=np.int64)
        return vote_all_k(votes[:, :voters], weights[:, :voters], num_classes)[:, -1]

    predicted = predict(np.arange(used), used)
    without = np.empty((len(classes), used), dtype=np.int64)
    for j in range(used):
        columns = np.delete(np.arange(min(k + 1, depth)), j)
        without[:, j] = predict(columns, min(used, len(columns)))
    return predicted, without


@dataclass(frozen=True)
class Attribution:
    """Each query's first k voters, the prediction at k, and the prediction without each voter (v held fixed).

    `ids`, `classes`, `distances` and `reliability` are the voting neighbours (hard-pruned ones already skipped),
    k + 1 columns where the set was deep enough; `predicted` (n,) and `without` (n, k') are class indices (-1: no
    voter); `votes` and `weights` (n, k') are the votes at k (`voting.prepare_votes`)."""

    ids: np.ndarray
    classes: np.ndarray
    distances: np.ndarray
    reliability: Optional[np.ndarray]
    predicted: np.ndarray
    without: np.ndarray
    votes: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class NeighbourSet:
    """The neighbours of n queries found by one search, nearest first, with what voting them needs.

    Attributes:
        ids: int64 (n, K) exemplar ids; -1 where fewer were found.
        distances: (n, K) cosine distances.
        labels: class index -> label, from the label table the search was made under.
        classes: int64 (n, K) class index of each neighbour (-1: missing).
        searched: the settings the search answered: its pruning, threshold and top_n (and the default rule and k a
            question without settings gets).
        reliability: int64 (n, K) v of each neighbour over searched.top_n, where searched.pruning needs it; else None.

    >>> s = NeighbourSet(np.array([[5, 6, 7]]), np.zeros((1, 3)), ("a", "b"), np.array([[0, 1, 1]]),
    ...                  VoteSettings(k=2, rule="plurality"))
    >>> s.predictions().tolist(), s.predictions(k=3).tolist(), s.changes_without([5]), s.voted_by([7])
    ([0], [1], [0], [])
    """

    ids: np.ndarray
    distances: np.ndarray
    labels: tuple[str, ...]
    classes: np.ndarray
    searched: VoteSettings
    reliability: Optional[np.ndarray] = None

    @property
    def depth(self) -> int:
        """K: neighbours held per query."""
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    # --- which questions this set can answer ---------------------------------------------------------------------
    def _settings(self, settings: Optional[VoteSettings], **changes) -> VoteSettings:
        """`settings` (default: those searched for) checked against what the search can answer.

        Raises:
            ValueError: a pruning this set cannot answer (see the module docstring).
        """
        settings = settings if settings is not None else self.searched
        if changes or not isinstance(settings, VoteSettings):  # a VoteSettings was resolved once, by the caller
            settings = resolve_settings(settings, **changes)
        searched = self.searched
        if searched.pruning == "hard" and (settings.pruning != "hard" or settings.threshold != searched.threshold
                                           or settings.top_n != searched.top_n):
            raise ValueError(f"these neighbours were searched among the exemplars hard pruning keeps (threshold "
                             f"{searched.threshold:g}, top_n {searched.top_n}); pruning {settings.pruning!r} with "
                             f"threshold {settings.threshold:g}, top_n {settings.top_n} needs another search")
        if settings.pruning != "none" and (self.reliability is None or settings.top_n != searched.top_n):
            raise ValueError(f"pruning {settings.pruning!r} over top_n {settings.top_n} needs the neighbours' "
                             f"reliability over that top_n; this set carries "
                             f"{'none' if self.reliability is None else f'top_n {searched.top_n}'}")
        return settings

    def _voting(self, settings: VoteSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """(ids, classes, distances, v) of the neighbours that may vote under `settings`: for hard pruning of an
        unpruned set, the kept ones moved to the front (ranks renumbered over them); otherwise all of them."""
        ids, classes, distances, v = self.ids, self.classes, self.distances, self.reliability
        if settings.pruning == "hard" and self.searched.pruning != "hard":
            keep = (classes >= 0) & (v < settings.threshold)
            ids, classes = compact_kept(keep, ids, classes)
            (v,) = compact_kept(keep, v, fill=0)  # 0, not -1: soft pruning's 1.75 / (1 + v) must stay finite
            (distances,) = compact_kept(keep, distances, fill=np.inf)
        return ids, classes, distances, v

    # --- votes ------------------------------------------------------------------------------------------------------
    def votes(self, settings: Optional[VoteSettings] = None, **changes):
        """Votes over all K neighbours: (class indices, weights, positions in the searched row, predictions for
        every k = 1..K) as `voting.prepare_votes` and `voting.vote_all_k` give them; k is not used."""
        settings = self._settings(settings, **changes)
        reliability = None if settings.pruning == "none" else self.reliability
        classes, weights, positions = prepare_votes(self.classes, self.distances, settings, reliability)
        return classes, weights, positions, vote_all_k(classes, weights, len(self.labels))

    def predictions(self, settings: Optional[VoteSettings] = None, **changes) -> np.ndarray:
        """The predicted class index per query at settings.k (clamped to the depth), -1 where none voted."""
        settings = self._settings(settings, **changes)
        *_, predictions = self.votes(settings)
        if predictions.shape[1] == 0:
            return np.full(len(self), -1, dtype=np.int64)
        return predictions[:, min(settings.k, predictions.shape[1]) - 1]

    def classifications(self, settings: Optional[VoteSettings] = None,
                        names: Optional[Sequence[Optional[str]]] = None, **changes) -> list[Classification]:
        """One Classification per query at settings.k: the prediction, class scores and the neighbours that voted
        (what `VisualMemory.classify_embeddings` returns)."""
        settings = self._settings(settings, **changes)
        classes, weights, positions, predictions = self.votes(settings)
        k_used = min(settings.k, classes.shape[1])
        classes, weights, positions = classes[:, :k_used], weights[:, :k_used], positions[:, :k_used]
        predicted = predictions[:, k_used - 1] if k_used else np.full(len(self), -1)
        # the searched rows, cut at the k voters' positions: ids and distances the same as a search at k would give
        return classifications(self.labels, self.ids, self.distances, classes, weights, positions, predicted, names)

    # --- attribution and dependence ---------------------------------------------------------------------------------
    def attribution(self, settings: Optional[VoteSettings] = None, **changes) -> Attribution:
        """Each query's voters and the exact prediction without each of them: needs K >= k + 1 (fewer voters where
        the memory, or what hard pruning keeps, is smaller)."""
        settings = self._settings(settings, **changes)
        ids, classes, distances, v = self._voting(settings)
        depth = min(settings.k + 1, ids.shape[1])
        ids, classes, distances = ids[:, :depth], classes[:, :depth], distances[:, :depth]
        reliability = v[:, :depth] if settings.pruning == "soft" else None
        predicted, without = counterfactual_predictions(classes, distances, settings, len(self.labels), reliability)
        used = without.shape[1]
        votes, weights, _ = prepare_votes(classes[:, :used], distances[:, :used],
                                          soft_or_unpruned(settings, reliability),
                                          None if reliability is None else reliability[:, :used])
        return Attribution(ids, classes, distances, reliability, predicted, without, votes, weights)

    def voted_by(self, exemplar_ids: Sequence[int], settings: Optional[VoteSettings] = None, **changes) -> list[int]:
        """Indices of the queries that have any of `exemplar_ids` among their settings.k voters (pruned neighbours
        do not vote, so they count for none)."""
        settings = self._settings(settings, **changes)
        if not len(exemplar_ids) or not len(self):
            return []
        ids, classes, _, _ = self._voting(settings)
        voters = ids[:, :settings.k]
        hits = np.isin(voters, np.asarray(list(exemplar_ids), dtype=np.int64)) & (classes[:, :settings.k] >= 0)
        return np.flatnonzero(hits.any(axis=1)).tolist()

    def changes_without(self, exemplar_ids: Sequence[int], settings: Optional[VoteSettings] = None,
                        **changes) -> list[int]:
        """Indices of the queries whose prediction at settings.k changes once `exemplar_ids` are gone (reliability v
        held fixed): the next neighbours move up into their places. Exact where the set holds k + (the removed
        voters of a row) neighbours, e.g. K = 2k for any removal; the memory's own smaller size is no error."""
        settings = self._settings(settings, **changes)
        if not len(exemplar_ids) or not len(self):
            return []
        ids, classes, distances, v = self._voting(settings)
        gone = np.isin(ids, np.asarray(list(exemplar_ids), dtype=np.int64))
        if not gone[:, :settings.k].any():
            return []
        voting = soft_or_unpruned(settings, v if settings.pruning == "soft" else None)
        before = self._predict_at(classes, distances, v, voting, settings.k)
        kept = ~gone
        after = self._predict_at(*compact_kept(kept, classes, fill=-1),
                                 *compact_kept(kept, distances, fill=np.inf),
                                 None if v is None else compact_kept(kept, v, fill=0)[0], voting, settings.k)
        return np.flatnonzero(before != after).tolist()

    def _predict_at(self, classes, distances, v, voting: VoteSettings, k: int) -> np.ndarray:
        classes, distances = classes[:, :k], distances[:, :k]
        reliability = None if voting.pruning == "none" or v is None else v[:, :k]
        votes, weights, _ = prepare_votes(classes, distances, voting, reliability)
        if votes.shape[1] == 0:
            return np.full(len(classes), -1, dtype=np.int64)
        return vote_all_k(votes, weights, len(self.labels))[:, -1]

    def rows(self, indices) -> "NeighbourSet":
        """The same neighbours for some of the queries (e.g. the first, the page's own query, and the rest)."""
        index = indices if isinstance(indices, slice) else np.asarray(indices, dtype=np.int64)
        return replace(self, ids=self.ids[index], distances=self.distances[index], classes=self.classes[index],
                       reliability=None if self.reliability is None else self.reliability[index])
