"""Re-ranking with a memory: pick the neighbours to show, plan and price a batch, ask (measuring it against the kNN
vote is `evaluation.py`)."""

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
from .prompt import VMEM_PROMPT, PromptSwitches, query_png

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
    switches: PromptSwitches = VMEM_PROMPT,
) -> list[RerankRequest]:
    """One request per query: its `shown` nearest exemplars (the ones that may vote under the settings' pruning)
    with their thumbnails and labels, and the labels its answer is read against.

    The candidates are the distinct labels among the shown neighbours, nearest first, when the answer is restricted
    to them (`switches.restrict_to_neighbor_labels`); otherwise, and when `shown` is 0 (the query-only ablation: no
    neighbour is searched or sent), every class of the memory. See `prompt.PromptSwitches` for what is listed.

    Raises:
        VmemError: `shown` is negative.
    """
    if int(shown) < 0:
        raise VmemError(f"the number of neighbours shown to the re-ranker must be 0 (the query alone) or more, got "
                        f"{shown}")
    if len(images) == 0:
        return []
    table = memory.table
    every_class = tuple(table.labels)
    if int(shown) == 0:
        return [RerankRequest(query_png(image), sha, (), every_class, allow_new, switches.show_distances, True)
                for image, sha in zip(images, sha256s)]
    ids, distances = memory.search.neighbors(np.asarray(embeddings, np.float32),
                                      replace(resolve_settings(settings), k=int(shown)))
    thumbnails = memory.exemplars.thumbnails(sorted({int(i) for i in ids.ravel() if i >= 0}))
    restricted = switches.restrict_to_neighbor_labels
    requests = []
    for row, (image, sha) in enumerate(zip(images, sha256s)):
        classes = table.class_indices(ids[row])
        neighbors = tuple(
            ShownNeighbor(int(i), table.labels[c], float(d), thumbnails.get(int(i)))
            for i, d, c in zip(ids[row], distances[row], classes) if i >= 0 and c >= 0
        )
        candidates = tuple(dict.fromkeys(n.label for n in neighbors)) if restricted else every_class
        requests.append(RerankRequest(query_png(image), sha, neighbors, candidates, allow_new,
                                      switches.show_distances, restricted))
    return requests


@dataclass
class BatchPlan:
    """What a batch will cost before it starts: calls to make (cached answers are free) and their input tokens.

    `queries` are the distinct query images; each is asked once per configuration, so `requests` (calls plus cached
    answers) is queries x configurations."""

    queries: int
    calls: int
    cached: int
    input_tokens: int
    price_per_million_tokens: float
    price_source: str
    configurations: int = 1

    @property
    def requests(self) -> int:
        return self.queries * self.configurations

    @property
    def dollars(self) -> float:
        return self.input_tokens / 1e6 * self.price_per_million_tokens

    def to_dict(self) -> dict:
        return {"queries": self.queries, "configurations": self.configurations, "calls": self.calls,
                "cached": self.cached,
                "input_tokens": self.input_tokens, "price_per_million_tokens": self.price_per_million_tokens,
                "price_source": self.price_source, "estimated_usd": round(self.dollars, 4)}

    def describe(self, model: str) -> str:
        asked = (f"for {self.queries} queries" if self.configurations == 1
                 else f"{self.queries} queries x {self.configurations} configurations")
        return (f"{model}: {self.calls} call(s){':' if self.configurations > 1 else ''} {asked} "
                f"({self.cached} answered from the cache, "
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
