"""From an evaluation error to its cause: the queries of a confusion-matrix cell, the neighbours that drove each of
their predictions, and what an edit to the memory changed (queries fixed, queries broken).

An `EvaluationRun` is one labelled query set classified at one setting, with each query's neighbours kept, so that a
page can list a cell's queries and their voters without searching again. Two runs over the same queries, before and
after an edit, are compared by `compare_runs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..classification import Classification, Neighbor
from ..errors import VmemError
from ..memory import VisualMemory
from ..neighbour_set import NeighbourSet
from ..voting import VoteSettings
from .attribution import winning_shares

NO_PREDICTION = "(none)"  # a query no exemplar voted for, as `evaluate.confusion_matrix` names its column
ANY_WRONG = "(any wrong)"  # the "predicted" of a whole class's errors (a class's bar, not one cell)


@dataclass(frozen=True)
class EvaluationRun:
    """Labelled queries classified at `settings`, as the memory stood at `change_counter`."""

    names: tuple[str, ...]
    true_labels: tuple[str, ...]
    results: tuple[Classification, ...]
    settings: VoteSettings
    change_counter: int

    @property
    def predicted(self) -> list[Optional[str]]:
        return [r.label for r in self.results]

    @property
    def correct(self) -> np.ndarray:
        """Bool per query: predicted its true label (a query that got no prediction is wrong)."""
        return np.array([r.label == t for r, t in zip(self.results, self.true_labels)], dtype=bool)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.results else 0.0


def evaluation_run(memory: VisualMemory, embeddings: np.ndarray, true_labels: Sequence[str], names: Sequence[str],
                   settings: VoteSettings) -> EvaluationRun:
    """Classify every labelled query at `settings` (one search), keeping each query's voting neighbours.

    Raises:
        VmemError: the embeddings, labels and names are not one per query.
    """
    if not len(embeddings) == len(true_labels) == len(names):
        raise VmemError(f"one label and one name per query: {len(embeddings)} embeddings, {len(true_labels)} "
                        f"labels, {len(names)} names")
    counter = memory.change_counter  # read first: a change while classifying makes the run look older, not newer
    results = memory.search.classify_embeddings(embeddings, settings, list(names)) if len(embeddings) else []
    return EvaluationRun(tuple(names), tuple(true_labels), tuple(results), settings, counter)


def evaluation_run_from(neighbours: NeighbourSet, true_labels: Sequence[str], names: Sequence[str],
                        settings: VoteSettings, change_counter: int) -> EvaluationRun:
    """`evaluation_run` from neighbours already searched (at least settings.k deep, e.g. the K = 100 the accuracy
    curves were scored from), as the memory stood at `change_counter` (read before that search): no search.

    Raises:
        VmemError: the neighbours, labels and names are not one per query.
    """
    if not len(neighbours) == len(true_labels) == len(names):
        raise VmemError(f"one label and one name per query: {len(neighbours)} searched, {len(true_labels)} "
                        f"labels, {len(names)} names")
    results = neighbours.classifications(settings, list(names)) if len(neighbours) else []
    return EvaluationRun(tuple(names), tuple(true_labels), tuple(results), settings, change_counter)


def cell_queries(run: EvaluationRun, true_label: str, predicted: str) -> list[int]:
    """Indices of the queries of one confusion-matrix cell: true label `true_label` predicted as `predicted` (a
    label, `NO_PREDICTION` for those nobody voted for, or `ANY_WRONG` for all of that class's errors).

    >>> from vmem_core.classification import Classification
    >>> run = EvaluationRun(("a.png", "b.png", "c.png"), ("cat", "cat", "dog"),
    ...                     tuple(Classification(p, {}, []) for p in ("dog", "cat", "dog")), VoteSettings(), 0)
    >>> cell_queries(run, "cat", "dog"), cell_queries(run, "cat", ANY_WRONG), cell_queries(run, "dog", "dog")
    ([0], [0], [2])
    """
    out = []
    for index, (truth, guess) in enumerate(zip(run.true_labels, run.predicted)):
        if truth != true_label:
            continue
        shown = NO_PREDICTION if guess is None else guess
        if shown == predicted or (predicted == ANY_WRONG and guess != truth):
            out.append(index)
    return out


@dataclass(frozen=True)
class Voter:
    """A neighbour that voted for a query, with its share of all the votes and of the winning class's score."""

    neighbor: Neighbor
    share_of_vote: float
    share_of_win: float  # 0 for a neighbour of another class than the prediction

    @property
    def drove(self) -> bool:
        """Voted for the prediction (the exemplars to look at when the prediction is wrong)."""
        return self.share_of_win > 0


def voters(result: Classification) -> list[Voter]:
    """A prediction's voting neighbours, those that drove it first (largest share of the win first), then the
    others nearest first."""
    total = sum(result.scores.values())
    rows = [Voter(n, n.weight / total if total else 0.0, win) for n, win in zip(result.neighbors,
                                                                                 winning_shares(result))]
    return sorted(rows, key=lambda v: (not v.drove, -v.share_of_win, v.neighbor.rank))


@dataclass(frozen=True)
class QueryChange:
    index: int
    name: str
    true_label: str
    before: Optional[str]
    after: Optional[str]


@dataclass(frozen=True)
class RunDiff:
    """What changed between two runs over the same queries."""

    fixed: list[QueryChange]  # wrong before, right after
    broken: list[QueryChange]  # right before, wrong after
    moved: list[QueryChange]  # wrong before and after, with another wrong prediction
    before: EvaluationRun
    after: EvaluationRun

    def summary(self) -> str:
        """e.g. "2 fixed, 1 broken (accuracy 71.0% -> 71.5%; change #41 -> #42)"."""
        return (f"{len(self.fixed)} fixed, {len(self.broken)} broken (accuracy {self.before.accuracy:.1%} -> "
                f"{self.after.accuracy:.1%}; change #{self.before.change_counter} -> #{self.after.change_counter})")


def changes_table(changes: Sequence[QueryChange]):
    """A list of changed queries as a DataFrame (query, true, before, now), its columns there even when empty."""
    import pandas as pd

    return pd.DataFrame([(c.name, c.true_label, c.before or NO_PREDICTION, c.after or NO_PREDICTION) for c in changes],
                        columns=["query", "true", "before", "now"])


def compare_runs(before: EvaluationRun, after: EvaluationRun) -> RunDiff:
    """Queries fixed (wrong before, right after), broken (right before, wrong after) and moved (wrong both times,
    another prediction), in query order.

    Raises:
        VmemError: the runs are not over the same queries (names and true labels, in order).
    """
    if (before.names, before.true_labels) != (after.names, after.true_labels):
        raise VmemError(f"the runs are over different queries ({len(before.names)} and {len(after.names)}): "
                        "compare runs of one query set")
    fixed, broken, moved = [], [], []
    for index, (name, truth, was, now) in enumerate(zip(before.names, before.true_labels, before.predicted,
                                                        after.predicted)):
        change = QueryChange(index, name, truth, was, now)
        if was != truth and now == truth:
            fixed.append(change)
        elif was == truth and now != truth:
            broken.append(change)
        elif was != now:
            moved.append(change)
    return RunDiff(fixed, broken, moved, before, after)


def selected_cell(points: Optional[Sequence[dict]]) -> Optional[tuple[str, str]]:
    """The (true label, predicted) cell a chart selection points at: the first selected point's customdata, which
    the confusion matrix's cells and the per-class bars carry (`plots.confusion_matrix_figure`,
    `plots.per_class_accuracy_figure`). None when nothing, or nothing that names a cell, is selected.

    >>> selected_cell([{"x": "dog", "y": "cat", "customdata": ["cat", "dog"]}])
    ('cat', 'dog')
    """
    for point in points or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) == 2 and all(isinstance(v, str) for v in data):
            return data[0], data[1]
    return None
