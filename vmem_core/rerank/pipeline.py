"""Re-ranking with a memory: pick the neighbours to show, plan and price a batch, and compare with the kNN vote."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import BadImageError, DatasetError, VmemError
from ..ingest.datasets import LabelledImage
from ..ingest.images import load_image
from ..memory import VisualMemory
from ..voting import VoteSettings, resolve_settings
from .base import Reranker, RerankError, RerankRequest, RerankResult, ShownNeighbor
from .cache import CachingReranker, RerankCache
from .prompt import query_png

DEFAULT_SHOWN = 50  # the paper shows the model the 50 nearest neighbours


def with_cache(reranker: Reranker, memory: VisualMemory) -> CachingReranker:
    """The re-ranker with answers cached in the memory's folder."""
    if isinstance(reranker, CachingReranker):
        return reranker
    return CachingReranker(reranker, RerankCache(memory.path))


def make_requests(
    memory: VisualMemory,
    images: Sequence[Image.Image],
    sha256s: Sequence[str],
    embeddings: np.ndarray,
    shown: int = DEFAULT_SHOWN,
    settings: Optional[VoteSettings] = None,
    allow_new: bool = False,
) -> list[RerankRequest]:
    """One request per query: its `shown` nearest exemplars (the ones that may vote under the settings' pruning)
    with their thumbnails and labels; the candidates are the distinct labels among them, nearest first."""
    if int(shown) < 1:
        raise VmemError(f"the re-ranker must be shown at least 1 neighbour, got {shown}")
    if len(images) == 0:
        return []
    table = memory.table
    ids, distances = memory.neighbors(np.asarray(embeddings, np.float32),
                                      replace(resolve_settings(settings), k=int(shown)))
    thumbnails = memory.thumbnails(sorted({int(i) for i in ids.ravel() if i >= 0}))
    requests = []
    for row, (image, sha) in enumerate(zip(images, sha256s)):
        classes = table.class_indices(ids[row])
        neighbors = tuple(
            ShownNeighbor(int(i), table.labels[c], float(d), thumbnails.get(int(i)))
            for i, d, c in zip(ids[row], distances[row], classes) if i >= 0 and c >= 0
        )
        candidates = tuple(dict.fromkeys(n.label for n in neighbors))
        requests.append(RerankRequest(query_png(image), sha, neighbors, candidates, allow_new))
    return requests


@dataclass
class BatchPlan:
    """What a batch will cost before it starts: calls to make (cached answers are free) and their input tokens."""

    queries: int
    calls: int
    cached: int
    input_tokens: int
    price_per_million_tokens: float
    price_source: str

    @property
    def dollars(self) -> float:
        return self.input_tokens / 1e6 * self.price_per_million_tokens

    def to_dict(self) -> dict:
        return {"queries": self.queries, "calls": self.calls, "cached": self.cached,
                "input_tokens": self.input_tokens, "price_per_million_tokens": self.price_per_million_tokens,
                "price_source": self.price_source, "estimated_usd": round(self.dollars, 4)}

    def describe(self, model: str) -> str:
        return (f"{model}: {self.calls} call(s) for {self.queries} queries ({self.cached} answered from the cache, "
                f"free); about {self.input_tokens:,} input tokens, about ${self.dollars:.2f} at "
                f"${self.price_per_million_tokens:g} per million input tokens ({self.price_source}); output tokens "
                "(and a thinking model's reasoning) come on top")


def plan_batch(reranker: CachingReranker, requests: Sequence[RerankRequest]) -> BatchPlan:
    cost = getattr(reranker.reranker, "cost", None)
    pending = [r for r in requests if not reranker.is_cached(r)]
    tokens = sum(cost.tokens(r) for r in pending) if cost is not None else 0
    return BatchPlan(len(requests), len(pending), len(requests) - len(pending), tokens,
                     cost.price_per_million_tokens if cost is not None else 0.0,
                     cost.price_source if cost is not None else "unknown")


def rerank_all(
    reranker: CachingReranker,
    requests: Sequence[RerankRequest],
    progress: Optional[Callable[[int, int], None]] = None,
) -> list[RerankResult]:
    """Ask about each request in turn; a RerankError (no key, key refused, unknown model, server unreachable) stops
    the batch, and the answers received so far stay cached, so a rerun goes on from there."""
    results = []
    for done, request in enumerate(requests, start=1):
        try:
            results.append(reranker.rerank(request))
        except RerankError as exc:
            if done == 1:
                raise
            raise RerankError(f"{exc} (stopped at query {done} of {len(requests)}; the answers received before it "
                              "are cached: a rerun asks only for the rest)") from None
        if progress:
            progress(done, len(requests))
    return results


def sample_items(items: Sequence[LabelledImage], limit: Optional[int], seed: int = 0) -> list[LabelledImage]:
    """At most `limit` items, drawn at random (seeded) but kept in their order, so a limit spans every class of a
    folder sorted by label."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise VmemError(f"--limit must be at least 1, got {limit}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), int(limit), replace=False))
    return [items[i] for i in chosen]


@dataclass
class RerankEvaluation:
    """kNN and re-ranked predictions on the same queries."""

    model: str
    rule: str
    k: int  # the kNN vote uses the same neighbours the model was shown
    truths: list[str]
    names: list[str]
    knn: list[Optional[str]]
    results: list[RerankResult]
    plan: BatchPlan

    def _accuracy(self, predicted) -> float:
        return float(np.mean([p == t for p, t in zip(predicted, self.truths)])) if self.truths else 0.0

    @property
    def knn_accuracy(self) -> float:
        return self._accuracy(self.knn)

    @property
    def reranked_accuracy(self) -> float:
        return self._accuracy([r.label for r in self.results])

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        return counts

    def to_dict(self) -> dict:
        return {
            "model": self.model, "voting": self.rule, "k": self.k, "queries": len(self.truths),
            "knn_accuracy": round(self.knn_accuracy, 6), "reranked_accuracy": round(self.reranked_accuracy, 6),
            "statuses": self.statuses(), "calls_made": sum(1 for r in self.results if not r.cached),
            "plan": self.plan.to_dict(),
            "per_query": [{"image": n, "true": t, "knn": k, **r.to_dict()}
                          for n, t, k, r in zip(self.names, self.truths, self.knn, self.results)],
        }


def load_labelled(items: Sequence[LabelledImage]):
    """Decoded query images, their hashes, labels, names, and the unreadable ones (reported, not fatal)."""
    loaded, labels, rejected = [], [], []
    for item in items:
        try:
            loaded.append(load_image(item.path, item.source))
            labels.append(item.label)
        except BadImageError as exc:
            rejected.append((str(item.path), str(exc)))
    if not loaded:
        raise DatasetError(f"none of the {len(items)} query images could be read"
                           + (f"; first: {rejected[0][1]}" if rejected else ""))
    return loaded, labels, rejected


def evaluate_rerank(
    memory: VisualMemory,
    reranker: Reranker,
    loaded: Sequence,
    truths: Sequence[str],
    embeddings: np.ndarray,
    shown: int = DEFAULT_SHOWN,
    settings: Optional[VoteSettings] = None,
    allow_new: bool = False,
    confirm: Callable[[BatchPlan], bool] = lambda plan: True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Optional[RerankEvaluation]:
    """kNN vote (at k = shown, the same neighbours the model sees) and re-ranked label for each labelled query.

    Args:
        loaded: decoded queries (images.LoadedImage, see `load_labelled`), with `truths` their labels and
            `embeddings` their features.
        confirm: shown the plan (calls, tokens, price) before any call; returning False cancels (result None).

    Raises:
        RerankError: the re-ranker cannot work (no key, key refused, unknown model): the batch stops there.
    """
    from ..analysis.evaluate import predict_at_k

    settings = replace(resolve_settings(settings), k=int(shown))
    cached = with_cache(reranker, memory)
    requests = make_requests(memory, [i.image for i in loaded], [i.sha256 for i in loaded], embeddings, shown,
                             settings, allow_new)
    plan = plan_batch(cached, requests)
    if not confirm(plan):
        return None
    ids, distances = memory.neighbors(np.asarray(embeddings, np.float32), settings)
    k = ids.shape[1]
    knn = predict_at_k(memory, ids, distances, replace(settings, k=k)) if k else [None] * len(truths)
    results = rerank_all(cached, requests, progress)
    return RerankEvaluation(cached.name, settings.rule, k, list(truths), [i.source for i in loaded], knn, results,
                            plan)
