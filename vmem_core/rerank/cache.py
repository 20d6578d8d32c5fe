"""Answers kept on disk in the memory's folder, one small JSON file per question, so a rerun costs nothing.

The key is a hash of what decides the answer: the model, the prompt version and its switches, the query image's hash,
the shown neighbours' ids and labels (a relabel asks again), the candidates and whether new labels are allowed. Files hold ids,
labels and the model's text: never an image, a vector or an API key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable, Optional

from ..storage.atomic import write_json_atomic
from ..storage.layout import RERANK_CACHE_DIR as CACHE_DIR
from ..memory.erasure import forget_on_purge
from .base import Reranker, RerankRequest, RerankResult
from .prompt import PROMPT_VERSION

log = logging.getLogger(__name__)

# Answers worth keeping: the model said something. Failures (timeouts, rate limits, empty bodies) are asked again.
KEPT_STATUSES = ("candidate", "new", "not_a_candidate", "ambiguous")


def cache_key(model: str, request: RerankRequest) -> str:
    identity = {
        "prompt": PROMPT_VERSION,
        "model": model,
        "query": request.query_sha256,
        "neighbors": [[n.id, n.label] for n in request.neighbors],
        "candidates": list(request.candidates),
        "allow_new": request.allow_new,
    }
    # the paper's prompt and its ablations word the question differently; vmem's own prompt keeps the keys it had
    # before these switches existed, so answers cached under it stay valid
    if not (request.show_distances and request.list_candidates):
        identity["wording"] = {"distances": request.show_distances, "candidates_listed": request.list_candidates}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class RerankCache:
    """The cache of one memory (`<memory>/rerank-cache/`)."""

    def __init__(self, memory_path: Path) -> None:
        self.directory = Path(memory_path) / CACHE_DIR

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, model: str, request: RerankRequest) -> Optional[dict]:
        path = self._path(cache_key(model, request))
        try:
            entry = json.loads(path.read_text())
            return entry if isinstance(entry.get("result"), dict) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a damaged entry is asked again, and overwritten
            log.warning("ignoring unreadable cache entry %s: %s", path, exc)
            return None

    def put(self, model: str, request: RerankRequest, result: RerankResult) -> None:
        if result.status not in KEPT_STATUSES:
            return
        path = self._path(cache_key(model, request))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"model": model, "query_sha256": request.query_sha256,
                                 "neighbor_ids": [n.id for n in request.neighbors], "result": result.to_dict()})

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json")) if self.directory.exists() else 0

    def forget_exemplars(self, ids: Iterable[int]) -> int:
        """Remove answers that were given with any of these exemplars in view (after a purge); returns how many."""
        ids = {int(i) for i in ids}
        removed = 0
        for path in sorted(self.directory.glob("*/*.json")) if self.directory.exists() else []:
            try:
                shown = set(json.loads(path.read_text()).get("neighbor_ids", []))
            except (OSError, ValueError):
                shown = ids  # unreadable: cannot prove it is unrelated
            if shown & ids:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


class CachingReranker:
    """A re-ranker whose answers are looked up in, and written to, a memory's cache."""

    def __init__(self, reranker: Reranker, cache: RerankCache) -> None:
        self.reranker = reranker
        self.cache = cache
        self.name = reranker.name

    def is_cached(self, request: RerankRequest) -> bool:
        return self.cache.get(self.name, request) is not None

    def rerank(self, request: RerankRequest) -> RerankResult:
        entry = self.cache.get(self.name, request)
        if entry is not None:
            stored = entry["result"]
            interpret = getattr(self.reranker, "interpret", None)
            if interpret is not None:  # read the kept text again: synonyms may have changed since
                return interpret(stored.get("raw", ""), request, attempts=0, cached=True)
            return RerankResult(**{**stored, "cached": True, "attempts": 0})
        result = self.reranker.rerank(request)
        self.cache.put(self.name, request, result)
        return result


# a purge forgets the model's cached answers given with the purged exemplars in view (registered, so that unlearning
# imports no re-ranker)
forget_on_purge(lambda memory_path, ids: RerankCache(memory_path).forget_exemplars(ids))
