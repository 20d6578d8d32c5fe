"""Curation suggestions: exemplars that look mislabelled or harmful, and near-duplicates. Nothing is changed here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..memory import NEAR_DUPLICATE_DISTANCE, VisualMemory
from ..voting import EXPLAIN_SETTINGS, VoteSettings


@dataclass(frozen=True)
class Suggestion:
    id: int
    label: str
    suggested_label: Optional[str]  # what its own neighbours vote for (leave-one-out)
    reliability: int  # v: times it sits among the neighbours of differently-labelled items
    reason: str


def suspicious_exemplars(
    memory: VisualMemory, settings: VoteSettings = EXPLAIN_SETTINGS, limit: int = 50
) -> list[Suggestion]:
    """Exemplars whose settings.k leave-one-out neighbours vote for another label, or that often sit among other
    classes' top_n neighbours, most harmful (highest v) first. The leave-one-out vote is the default rule without
    pruning, whatever settings.rule and settings.pruning say, so the suggestions stay put while a curator tries rules
    and pruning in the sidebar."""
    if len(memory) < 2:
        return []
    k, top_n = settings.k, settings.top_n
    found = memory.derived(("suspicious", k, top_n), lambda: _suspicious(memory, k, top_n))
    return found[:limit]


def _suspicious(memory: VisualMemory, k: int, top_n: int) -> list[Suggestion]:
    table = memory.table
    v = memory.reliability(top_n)
    item_ids, neighbor_ids, distances = memory.memory_neighbors(k)
    *_, predictions = memory.vote(neighbor_ids, distances, VoteSettings(k=k, top_n=top_n), table=table)
    own = table.class_indices(item_ids)
    voted = predictions[:, -1] if predictions.shape[1] else np.full(len(item_ids), -1)
    out = []
    for item, own_class, vote in zip(item_ids, own, voted):
        score = v.get(int(item), 0)
        disagrees = vote >= 0 and vote != own_class
        if not disagrees and score == 0:
            continue
        if own_class < 0:
            continue  # deleted since the neighbours were found
        suggested = table.labels[vote] if disagrees else None
        reason = []
        if disagrees:
            reason.append(f"its {k} nearest exemplars vote '{suggested}'")
        if score:
            reason.append(f"among the top-{top_n} neighbours of {score} differently-labelled item(s)")
        out.append(Suggestion(int(item), table.labels[own_class], suggested, score, "; ".join(reason)))
    out.sort(key=lambda s: (-s.reliability, s.suggested_label is None, s.id))
    return out


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
    item_ids, neighbor_ids, distances = memory.memory_neighbors(5)
    pairs = {}
    for item, row_ids, row_d in zip(item_ids, neighbor_ids, distances):
        for other, d in zip(row_ids, row_d):
            if d <= max_distance and other >= 0:
                key = (min(int(item), int(other)), max(int(item), int(other)))
                pairs[key] = min(float(d), pairs.get(key, np.inf))
    table = memory.table
    out = []
    for (a, b), d in sorted(pairs.items(), key=lambda kv: kv[1]):
        class_a, class_b = table.class_indices([a, b])
        if class_a >= 0 and class_b >= 0:  # both still live
            out.append(DuplicatePair(a, b, d, table.labels[class_a], table.labels[class_b]))
    return out
