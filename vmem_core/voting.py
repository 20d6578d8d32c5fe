"""Voting rules of the visual memory, as pure functions over neighbour arrays, and `VoteSettings`: how to vote.

Neighbours are sorted nearest first; rank i = 0, 1, 2, ... ; distance d = 1 - cosine.

- plurality: weight 1
- distance:  exp(-d)
- softmax:   exp((1 - d) / T), T = 0.07 (`VoteSettings.temperature`)
- rank:      1 / (i + 2)  (RankVoting, the default; 2 is `VoteSettings.rank_offset`)

A class's score is the sum of its neighbours' weights. Ties go to the class that reached the tied score first, which
with positive weights is the class whose last contributing neighbour is nearest: the leader only changes when another
class strictly exceeds its score.

Pruning by reliability v (how often an exemplar sits among the neighbours of differently-labelled memory items):
hard pruning drops neighbours with v >= threshold before ranks are assigned; soft pruning multiplies a weight by
1.75 / (1 + v) where v > 0.

Every surface (the library, the CLI, the app, the experiments) passes one `VoteSettings`; the defaults below are the
only ones. A new rule is one entry in `_RULES`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .errors import BadSettingError

RANK_OFFSET = 2.0  # RankVoting 1 / (i + 2), the paper's
SOFTMAX_TEMPERATURE = 0.07
SOFT_PRUNING_NUMERATOR = 1.75
PRUNING_MODES = ("none", "hard", "soft")
DEFAULT_PRUNING = "none"
# Hard pruning skips exemplars with v >= this. At 1 every exemplar ever seen among another class's neighbours goes
# (two thirds of the Fashion-MNIST sample); 2 keeps the ones that strayed once.
DEFAULT_HARD_THRESHOLD = 2.0
# v counts appearances among each memory item's N nearest leave-one-out neighbours.
DEFAULT_RELIABILITY_TOP_N = 10
DEFAULT_K = 50  # neighbours that vote in `classify` (library and `vmem classify`)
# Where each voting neighbour is shown and explained (the app's sidebar, `vmem attribute`, `vmem demo`, curation):
# ten can be read one by one, and attribution re-votes once per neighbour.
EXPLAIN_K = 10


@dataclass(frozen=True)
class Rule:
    """A voting rule: the weight of each neighbour, and its formula for people (filled from the settings)."""

    weights: Callable[[np.ndarray, np.ndarray, "VoteSettings"], np.ndarray]  # (distances, ranks, settings)
    formula: str


_RULES = {  # the order is the order of every report and JSON object that lists the rules
    "rank": Rule(lambda d, ranks, s: 1.0 / (ranks + s.rank_offset), "1/(rank+{rank_offset:g})"),
    "plurality": Rule(lambda d, ranks, s: np.ones_like(d), "1 each"),
    "distance": Rule(lambda d, ranks, s: np.exp(-d), "exp(-d)"),
    "softmax": Rule(lambda d, ranks, s: np.exp((1.0 - d) / s.temperature), "exp((1-d)/{temperature:g})"),
}
RULES = tuple(_RULES)
DEFAULT_RULE = "rank"

_ALIASES = {"rankvoting": "rank", "rank_voting": "rank", "uniform": "plurality", "majority": "plurality"}


def check_rule(rule: str) -> str:
    """Return the canonical rule name, or raise BadSettingError (a ValueError) naming the accepted ones.

    >>> check_rule("Softmax")
    'softmax'
    """
    name = _ALIASES.get(str(rule).lower(), str(rule).lower())
    if name not in RULES:
        raise BadSettingError(f"unknown voting rule {rule!r}; accepted: {', '.join(RULES)}")
    return name


def _check_number(name: str, value, accepted: str, whole: bool, ok: Callable[[float], bool]):
    kind = numbers.Integral if whole else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not ok(value):
        raise BadSettingError(f"{name} {value!r} is not accepted; {name} must be {accepted}")
    return int(value) if whole else float(value)


@dataclass(frozen=True)
class VoteSettings:
    """How to vote: one value, checked once, passed whole to every function that votes.

    Attributes:
        k: neighbours that vote (clamped to the live exemplars where a memory holds fewer).
        rule: rank (default), plurality, distance or softmax (see the module docstring; aliases such as
            "RankVoting" are read as their rule).
        pruning: none, hard (skip exemplars with reliability v >= threshold) or soft (weight x 1.75 / (1 + v)).
        threshold: the hard-pruning threshold, at least 1 (v is a whole count).
        top_n: reliability v counts appearances among this many leave-one-out neighbours.
        rank_offset: RankVoting's weight is 1 / (rank + rank_offset).
        temperature: softmax voting's weight is exp((1 - d) / temperature).

    Raises:
        BadSettingError: a value out of range, naming it and what is accepted.

    >>> VoteSettings(k=5, rule="RankVoting").rule
    'rank'
    >>> VoteSettings(k=0)
    Traceback (most recent call last):
    ...
    vmem_core.errors.BadSettingError: k 0 is not accepted; k must be a whole number of at least 1
    """

    k: int = DEFAULT_K
    rule: str = DEFAULT_RULE
    pruning: str = DEFAULT_PRUNING
    threshold: float = DEFAULT_HARD_THRESHOLD
    top_n: int = DEFAULT_RELIABILITY_TOP_N
    rank_offset: float = RANK_OFFSET
    temperature: float = SOFTMAX_TEMPERATURE

    def __post_init__(self) -> None:
        checked = {
            "k": _check_number("k", self.k, "a whole number of at least 1", True, lambda v: v >= 1),
            "rule": check_rule(self.rule),
            "threshold": _check_number("threshold", self.threshold, "a number of at least 1 (v is a whole count)",
                                       False, lambda v: v >= 1),
            "top_n": _check_number("top_n", self.top_n, "a whole number of at least 1", True, lambda v: v >= 1),
            "rank_offset": _check_number("rank_offset", self.rank_offset, "a finite number above 0", False,
                                         lambda v: 0 < v < math.inf),
            "temperature": _check_number("temperature", self.temperature, "a finite number above 0", False,
                                         lambda v: 0 < v < math.inf),
        }
        if self.pruning not in PRUNING_MODES:
            raise BadSettingError(f"unknown pruning {self.pruning!r}; accepted: {', '.join(PRUNING_MODES)}")
        for name, value in checked.items():  # canonical types and names, so equal settings compare and hash equal
            object.__setattr__(self, name, value)

    def formula(self, rule: Optional[str] = None) -> str:
        """The weight of a neighbour under `rule` (default: this rule) with these parameters.

        >>> VoteSettings().formula("softmax")
        'exp((1-d)/0.07)'
        """
        return _RULES[check_rule(rule or self.rule)].formula.format(rank_offset=self.rank_offset,
                                                                    temperature=self.temperature)


SETTING_NAMES = tuple(f.name for f in fields(VoteSettings))
EXPLAIN_SETTINGS = VoteSettings(k=EXPLAIN_K)


def resolve_settings(settings: Optional[VoteSettings] = None, **changes) -> VoteSettings:
    """`settings` (default: `VoteSettings()`) with `changes` applied: the keyword form the public API keeps, e.g.
    `memory.classify(images, k=5)`. `voting` is read as `rule`, its former name.

    >>> resolve_settings(VoteSettings(k=3), voting="softmax")
    VoteSettings(k=3, rule='softmax', pruning='none', threshold=2.0, top_n=10, rank_offset=2.0, temperature=0.07)
    """
    if settings is not None and not isinstance(settings, VoteSettings):
        raise BadSettingError(f"settings must be a VoteSettings, got {type(settings).__name__} {settings!r}; "
                              "give k, rule, pruning, ... as keywords or in VoteSettings(...)")
    if "voting" in changes:
        if "rule" in changes:
            raise BadSettingError("give the rule once: rule=... (voting=... is its former name)")
        changes["rule"] = changes.pop("voting")
    unknown = sorted(set(changes) - set(SETTING_NAMES))
    if unknown:
        raise BadSettingError(f"unknown voting setting(s) {', '.join(unknown)}; accepted: {', '.join(SETTING_NAMES)}")
    base = settings if settings is not None else VoteSettings()
    return replace(base, **changes) if changes else base


def soft_or_unpruned(settings: VoteSettings, reliability: Optional[np.ndarray]) -> VoteSettings:
    """The settings for voting over neighbours a search has already found: hard pruning happened there (the pruned
    exemplars were never found), so what is left is soft pruning where `reliability` is given, else none."""
    return replace(settings, pruning="none" if reliability is None else "soft")


def rule_weights(
    rule: str, distances: np.ndarray, ranks: Optional[np.ndarray] = None, settings: Optional[VoteSettings] = None
) -> np.ndarray:
    """Weights of neighbours under `rule`.

    Args:
        rule: one of RULES.
        distances: array (..., K) of cosine distances, nearest first.
        ranks: ranks of the same shape; defaults to 0..K-1 along the last axis.
        settings: the rule parameters (rank_offset, temperature); default: VoteSettings().

    >>> rule_weights("rank", np.array([0.1, 0.2, 0.3])).round(3).tolist()
    [0.5, 0.333, 0.25]
    """
    rule = check_rule(rule)
    distances = np.asarray(distances, dtype=np.float64)
    if ranks is None:
        ranks = np.broadcast_to(np.arange(distances.shape[-1]), distances.shape)
    return _RULES[rule].weights(distances, np.asarray(ranks, dtype=np.float64), settings or VoteSettings())


def label_classes(labels: Sequence[str], names: Sequence[str], missing: int = -1) -> np.ndarray:
    """The class index of each label: its position in `names` (the sorted class names), `missing` where it has none.

    Queries with a label the memory lacks get a `missing` that no prediction equals (e.g. -2: always wrong).

    >>> label_classes(["b", "x", "a"], ("a", "b"), missing=-2).tolist()
    [1, -2, 0]
    """
    position = {name: i for i, name in enumerate(names)}
    return np.asarray([position.get(label, missing) for label in labels], dtype=np.int64).reshape(len(labels))


def class_names(labels: Sequence[str]) -> tuple[str, ...]:
    """Class index -> label: the distinct labels, sorted.

    >>> class_names(["b", "a", "b"])
    ('a', 'b')
    """
    return tuple(sorted(set(labels)))


def reliability_counts(item_ids: np.ndarray, item_classes: np.ndarray, neighbor_ids: np.ndarray) -> np.ndarray:
    """v per memory item: how often it is among the leave-one-out neighbours of a differently-labelled item.

    Args:
        item_ids: (m,) the memory items (ids, or positions in arrays); they are the queries too.
        item_classes: (m,) class index of each item.
        neighbor_ids: (m, N) each item's N nearest other items; entries that are not items (e.g. -1) count for none.

    >>> neighbors = np.array([[11, 12], [10, 12], [10, -1]])
    >>> reliability_counts(np.array([10, 11, 12]), np.array([0, 0, 1]), neighbors).tolist()
    [1, 0, 2]
    """
    ids = np.asarray(item_ids, dtype=np.int64)
    classes = np.asarray(item_classes, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    neighbors = np.asarray(neighbor_ids, dtype=np.int64).reshape(len(ids), -1)
    position = id_positions(ids, neighbors)
    found = position >= 0
    position = np.where(found, position, 0)
    differs = found & (classes[position] != classes[:, None])
    return np.bincount(position[differs], minlength=len(ids)).astype(np.int64)


def id_positions(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value (any shape) in `ids` (unique), -1 where absent. Where the ids are dense enough, one
    array over 0..max id answers every value by a gather: a whole neighbour table (60,000 x 50 values) in a tenth of
    the time of a binary search each.

    >>> id_positions(np.array([7, 3, 5]), np.array([[5, 4], [7, -1]])).tolist()
    [[2, -1], [0, -1]]
    """
    ids = np.asarray(ids, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    if len(ids) == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    low, top = int(ids.min()), int(ids.max())
    if low >= 0 and top <= 16 * (len(ids) + values.size) + 2**20:
        table = np.full(top + 2, -1, dtype=np.int64)  # the last slot stands for every value outside [0, top]
        table[ids] = np.arange(len(ids))
        return table[np.where((values < 0) | (values > top), top + 1, values)]
    order = np.argsort(ids, kind="stable")
    at = np.clip(np.searchsorted(ids[order], values), 0, len(ids) - 1)
    return np.where(ids[order][at] == values, order[at], -1)


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
    classes = max(num_classes, 1)
    if n * depth * classes > ALL_PREFIXES_AT_ONCE:
        return _leaders_step_by_step(labels, weights, classes)
    return _leaders(labels, weights, classes)


# Up to this many (rows x K x classes) values, every prefix is voted at once (a query's classification: no Python
# loop over k, ~0.1 ms). Beyond it (curation's vote of every exemplar), one step per k over all rows costs less than
# the (rows, K, classes) arrays, and its loop is spread over thousands of rows.
ALL_PREFIXES_AT_ONCE = 200_000


def _leaders_step_by_step(labels: np.ndarray, weights: np.ndarray, classes: int) -> np.ndarray:
    n, depth = labels.shape
    scores = np.zeros((n, classes), dtype=np.float64)
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


def _leaders(labels: np.ndarray, weights: np.ndarray, classes: int) -> np.ndarray:
    """The leader after every prefix, for all prefixes at once. Adding neighbours one by one, a class takes the lead
    when its score strictly exceeds the leader's (an equal score arrived later: the earlier class keeps the tie). So
    the leader is, among the classes that have voted, one with the highest score, and among those the one that
    reached its score first: its last score increase (or first vote, for a zero weight) is the earliest."""
    n, depth = labels.shape
    if n == 0 or depth == 0:
        return np.zeros((n, depth), dtype=np.int64)
    voted = labels[:, :, None] == np.arange(classes)  # (n, K, C); a missing neighbour (-1) votes for none
    votes = voted * weights[:, :, None]
    scores = np.cumsum(votes, axis=1)  # sequential sums: the same floats as adding one neighbour at a time
    ever = np.logical_or.accumulate(voted, axis=1)
    # a class's score reaches a new value when it gains weight, or on its first vote (a zero weight)
    reached = voted & (votes > 0)
    reached[:, 0] |= voted[:, 0]
    reached[:, 1:] |= voted[:, 1:] & ~ever[:, :-1]
    steps = np.arange(depth)[None, :, None]
    reached_at = np.maximum.accumulate(np.where(reached, steps, -1), axis=1)
    standing = np.where(ever, scores, -np.inf)
    best = standing.max(axis=2, keepdims=True)
    tied = ever & (standing == best)
    leader = np.where(tied, reached_at, depth + 1).argmin(axis=2)
    return np.where(ever.any(axis=2), leader, -1).astype(np.int64)


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
    settings: Union[VoteSettings, str],
    reliability: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply pruning and compute weights.

    Args:
        neighbor_labels: int (n, K) class indices, -1 for missing.
        distances: float (n, K), nearest first.
        settings: the rule, its parameters, the pruning and its threshold (k is not used: every column votes); a
            rule name alone means that rule with the default parameters and no pruning.
        reliability: v of each neighbour, shape (n, K); required unless pruning is "none".

    Returns:
        (labels, weights, kept_positions): labels and weights after pruning, compacted nearest first, and for each
        output slot the index of the original neighbour it came from (-1 where empty).

    >>> prepare_votes(np.array([[0, 1]]), np.zeros((1, 2)), "rank")[1].tolist()
    [[0.5, 0.3333333333333333]]
    """
    if isinstance(settings, str):
        settings = VoteSettings(rule=settings)
    labels = np.asarray(neighbor_labels, dtype=np.int64)
    distances = np.asarray(distances, dtype=np.float64)
    positions = np.broadcast_to(np.arange(labels.shape[-1]), labels.shape)
    if settings.pruning != "none" and reliability is None:
        raise ValueError(f"pruning {settings.pruning!r} needs the neighbours' reliability")
    if settings.pruning == "hard":
        keep = (labels >= 0) & (np.asarray(reliability) < settings.threshold)
        labels, distances, positions = compact_kept(keep, labels, distances, positions)
    weights = rule_weights(settings.rule, distances, settings=settings)
    if settings.pruning == "soft":
        weights = weights * soft_pruning_factors(reliability)
    weights = np.where(labels >= 0, weights, 0.0)
    return labels, weights, np.where(labels >= 0, positions, -1)
