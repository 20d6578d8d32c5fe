"""Re-ranking measured as the paper measures it: on one set of labelled queries, the kNN vote at its best k (and at a
fixed k beside it, since the best k is chosen on these same queries) next to the re-ranked accuracy of each prompt
configuration: the paper's prompt (50 neighbours with their labels), each of vmem's additions alone and together
(`prompt.PromptSwitches`), and the query-only ablation (no neighbour shown).

Every configuration asks about the same queries; one plan (calls, tokens, price) covers all of them and is confirmed
once. A configuration's answers count as right, wrong, or without a label, and the latter are broken down by why
(`base.STATUSES`: not a candidate, ambiguous, malformed or refused, error).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from ..analysis.evaluate import BEST_LABEL, accuracy_curves, predict_at_k
from ..errors import VmemError
from ..memory import VisualMemory
from ..voting import VoteSettings, resolve_settings
from .base import Reranker, RerankResult
from .pipeline import DEFAULT_SHOWN, BatchPlan, make_requests, plan_batch, rerank_all, with_cache
from .prompt import PAPER_PROMPT, VMEM_PROMPT, PromptSwitches

DEFAULT_FIXED_K = 10  # the fixed k reported beside best-over-k, as in docs/RESULTS.md
DEFAULT_K_MAX = 100  # best-over-k searches k = 1..100


@dataclass(frozen=True)
class RerankConfiguration:
    """One way of asking: how many neighbours the model sees, and which of vmem's additions the prompt carries."""

    name: str
    shown: int = DEFAULT_SHOWN
    switches: PromptSwitches = VMEM_PROMPT

    def __post_init__(self) -> None:
        if int(self.shown) < 0:
            raise VmemError(f"configuration {self.name!r}: neighbours shown must be 0 (the query alone) or more, got "
                            f"{self.shown}")

    @property
    def prompt_key(self) -> tuple:
        """What decides the question asked: with no neighbour shown, neither switch changes it."""
        if self.shown == 0:
            return (0,)
        return self.shown, self.switches.show_distances, self.switches.restrict_to_neighbor_labels

    def to_dict(self) -> dict:
        return {"name": self.name, "shown": self.shown, **self.switches.to_dict(),
                "candidates_listed": self.shown == 0 or self.switches.restrict_to_neighbor_labels}


def paper_configurations(shown: int = DEFAULT_SHOWN) -> tuple[RerankConfiguration, ...]:
    """The paper's prompt, each of vmem's additions alone, both, and the query-only ablation."""
    return (
        RerankConfiguration("paper's prompt (labels only)", shown, PAPER_PROMPT),
        RerankConfiguration("+ distances", shown, PromptSwitches(show_distances=True, restrict_to_neighbor_labels=False)),
        RerankConfiguration("+ answer restricted to the neighbours' labels", shown,
                            PromptSwitches(show_distances=False, restrict_to_neighbor_labels=True)),
        RerankConfiguration("vmem's prompt (both additions)", shown, VMEM_PROMPT),
        RerankConfiguration("query only (no neighbour shown)", 0, PAPER_PROMPT),
    )


def distinct(configurations: Sequence[RerankConfiguration]) -> list[RerankConfiguration]:
    """The configurations in order, each question asked once (the first name given to it is kept)."""
    seen: dict[tuple, RerankConfiguration] = {}
    for configuration in configurations:
        seen.setdefault(configuration.prompt_key, configuration)
    return list(seen.values())


@dataclass
class RerankEvaluation:
    """kNN and re-ranked predictions of one configuration on the queries."""

    model: str
    rule: str
    k: int  # neighbours shown; the kNN vote beside it uses the same ones (none when 0)
    truths: list[str]
    names: list[str]
    knn: list[Optional[str]]
    results: list[RerankResult]
    plan: BatchPlan
    configuration: RerankConfiguration = RerankConfiguration("as given")

    def _accuracy(self, predicted) -> float:
        return float(np.mean([p == t for p, t in zip(predicted, self.truths)])) if self.truths else 0.0

    @property
    def knn_accuracy(self) -> Optional[float]:
        """The vote over the shown neighbours; None in the query-only ablation, where no neighbour is shown."""
        return self._accuracy(self.knn) if self.k else None

    @property
    def reranked_accuracy(self) -> float:
        """Right answers over all queries: an answer without a label counts as wrong."""
        return self._accuracy([r.label for r in self.results])

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        return counts

    def without_label(self) -> dict[str, int]:
        """Answers that gave no label, by why: not a candidate, ambiguous, malformed (or refused), error."""
        counts: dict[str, int] = {}
        for result in self.results:
            if result.label is None:
                counts[result.status] = counts.get(result.status, 0) + 1
        return counts

    def to_dict(self) -> dict:
        knn = self.knn_accuracy
        return {
            "model": self.model, "voting": self.rule, "k": self.k, "queries": len(self.truths),
            "knn_accuracy": None if knn is None else round(knn, 6),
            "reranked_accuracy": round(self.reranked_accuracy, 6),
            "statuses": self.statuses(), "calls_made": sum(1 for r in self.results if not r.cached),
            "plan": self.plan.to_dict(),
            "configuration": self.configuration.to_dict(),
            "correct": sum(r.label == t for r, t in zip(self.results, self.truths)),
            "answered": sum(r.label is not None for r in self.results),
            "without_label": self.without_label(),
            "per_query": [{"image": n, "true": t, "knn": k, **r.to_dict()}
                          for n, t, k, r in zip(self.names, self.truths, self.knn, self.results)],
        }


@dataclass
class RerankStudy:
    """Every configuration's evaluation on the same queries, with the kNN vote at a fixed k and at its best k."""

    model: str
    rule: str
    queries: int
    knn_curve: np.ndarray  # kNN accuracy at k = 1..len(curve), under `rule`
    fixed_k: int
    evaluations: list[RerankEvaluation]
    plan: BatchPlan  # all configurations together

    def knn_fixed(self) -> dict:
        k = min(self.fixed_k, len(self.knn_curve))
        return {"k": k, "accuracy": float(self.knn_curve[k - 1]) if k else 0.0}

    def knn_best(self) -> dict:
        """The best k on these queries (the smallest on ties): the paper's baseline, optimistic by construction."""
        if not len(self.knn_curve):
            return {"k": 0, "accuracy": 0.0}
        k = int(np.argmax(self.knn_curve)) + 1
        return {"k": k, "accuracy": float(self.knn_curve[k - 1])}

    def to_dict(self) -> dict:
        return {"model": self.model, "voting": self.rule, "queries": self.queries,
                "knn": {"fixed_k": self.knn_fixed(), "best_over_k": self.knn_best(), "best_is": BEST_LABEL,
                        "k_max": len(self.knn_curve)},
                "configurations": [evaluation.to_dict() for evaluation in self.evaluations],
                "plan": self.plan.to_dict()}

    def rows(self) -> list[dict]:
        """One row per line of a results table: the kNN baselines first, then each configuration."""
        fixed, best = self.knn_fixed(), self.knn_best()
        rows = [{"what": f"kNN vote ({self.rule}, fixed k={fixed['k']})", "accuracy": fixed["accuracy"]},
                {"what": f"kNN vote ({self.rule}, best-over-k: k={best['k']}, chosen on these queries)",
                 "accuracy": best["accuracy"]}]
        for evaluation in self.evaluations:
            config = evaluation.configuration
            rows.append({"what": f"re-ranked: {config.name}", "accuracy": evaluation.reranked_accuracy,
                         "shown": config.shown, "distances": config.shown > 0 and config.switches.show_distances,
                         "restricted": config.shown > 0 and config.switches.restrict_to_neighbor_labels,
                         "answered": sum(r.label is not None for r in evaluation.results),
                         "without_label": evaluation.without_label(), "knn_same_neighbours": evaluation.knn_accuracy})
        return rows


def _offset(progress: Optional[Callable[[int, int], None]], before: int, total: int):
    if progress is None:
        return None
    return lambda done, _: progress(before + done, total)


def evaluate_configurations(
    memory: VisualMemory,
    reranker: Reranker,
    images: Sequence[Image.Image],
    sha256s: Sequence[str],
    names: Sequence[str],
    truths: Sequence[str],
    embeddings: np.ndarray,
    configurations: Sequence[RerankConfiguration] = paper_configurations(),
    settings: Optional[VoteSettings] = None,
    k_max: int = DEFAULT_K_MAX,
    fixed_k: int = DEFAULT_FIXED_K,
    allow_new: bool = False,
    confirm: Callable[[BatchPlan], bool] = lambda plan: True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Optional[RerankStudy]:
    """Ask the model about every query in each configuration, and score it beside the kNN vote.

    Args:
        images, sha256s, names, truths, embeddings: the queries, their hashes (the cache's key), names, true labels
            and features, one per query.
        configurations: asked in this order; a question asked twice (`distinct`) is asked once.
        settings: the vote's rule, pruning and parameters (k is set per use).
        k_max, fixed_k: the kNN baselines: best-over-k over k = 1..k_max, and the vote at fixed_k.
        confirm: shown the plan of all configurations (calls, tokens, price) before any call; False cancels (None).

    Raises:
        VmemError: no query, or inputs of different lengths.
        RerankError: the re-ranker cannot work (no key, key refused, unknown model): the batch stops there, and the
            answers received are cached.
    """
    n = len(images)
    if n == 0:
        raise VmemError("no query to evaluate the re-ranker on")
    if not (len(sha256s) == len(names) == len(truths) == len(embeddings) == n):
        raise VmemError(f"{n} query images but {len(sha256s)} hashes, {len(names)} names, {len(truths)} labels and "
                        f"{len(embeddings)} embeddings")
    if int(k_max) < 1 or int(fixed_k) < 1:
        raise VmemError(f"k_max and fixed_k must be at least 1, got {k_max} and {fixed_k}")
    configurations = distinct(configurations)
    if not configurations:
        raise VmemError("no re-ranking configuration given")
    settings = resolve_settings(settings)
    cached = with_cache(reranker, memory)
    requests = [make_requests(memory, images, sha256s, embeddings, c.shown, settings, allow_new, c.switches)
                for c in configurations]
    plans = [plan_batch(cached, batch) for batch in requests]
    plan = BatchPlan(n, sum(p.calls for p in plans), sum(p.cached for p in plans),
                     sum(p.input_tokens for p in plans), plans[0].price_per_million_tokens, plans[0].price_source,
                     configurations=len(configurations))
    if not confirm(plan):
        return None

    # one retrieval for every kNN figure: the curve to k_max and the vote over each configuration's shown neighbours
    depth = max(int(k_max), int(fixed_k), *(c.shown for c in configurations))
    ids, distances = memory.search.neighbors(np.asarray(embeddings, np.float32), replace(settings, k=depth))
    curve = accuracy_curves(memory, ids[:, :k_max], distances[:, :k_max], truths, [settings.rule], settings)
    evaluations = []
    asked = 0
    for configuration, batch, own_plan in zip(configurations, requests, plans):
        shown = min(configuration.shown, ids.shape[1])
        knn = predict_at_k(memory, ids, distances, replace(settings, k=shown)) if shown else [None] * n
        results = rerank_all(cached, batch, _offset(progress, asked, plan.requests))
        asked += len(batch)
        evaluations.append(RerankEvaluation(cached.name, settings.rule, configuration.shown, list(truths), list(names),
                                            knn, results, own_plan, configuration))
    return RerankStudy(cached.name, settings.rule, n, curve[settings.rule], int(fixed_k), evaluations, plan)

