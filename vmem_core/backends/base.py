"""What every index backend shares: the `IndexBackend` protocol, the purge evidence, the vmem.json record, and
replaying the store's changes into an index. The engines (hnsw, milvus, exact) import this module; the package's
`__init__` picks one of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence

import numpy as np

from ..errors import VmemError

if TYPE_CHECKING:
    from ..storage.store import Store

log = logging.getLogger(__name__)

# (ids) -> (ids found, their vectors, their labels), all ordered by id: rows read back from the source of truth
RowFetcher = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, list]]
# (labels) -> ids of the live exemplars carrying any of them, sorted
LabelLookup = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Evidence:
    """What a backend did and verified during a purge (becomes a check in the unlearning certificate)."""

    name: str
    passed: bool
    detail: str


class IndexBackend(Protocol):
    """The operations a memory needs from its index. Not locked: the memory serialises writers against readers.

    Ids are the store's exemplar ids; vectors are L2-normalised float32; distance = 1 - cosine similarity.
    """

    name: str
    dim: int

    @property
    def applied_seq(self) -> int:
        """The last store change the backend holds durably (-1: none), as recorded by `persist`."""

    @property
    def live_count(self) -> int:
        """How many items searches can return."""

    def live_ids(self) -> np.ndarray:
        """Every searchable id (reads the whole index: for checks and migration, not for queries)."""

    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[str]) -> None:
        """Insert (or overwrite) items."""

    def relabel(self, ids: Sequence[int], label: str) -> None:
        """Record a new label for items (used by label-filtered search)."""

    def mark_deleted(self, ids: Sequence[int]) -> None:
        """Tombstone: hide items from searches at once (ids the backend does not hold are ignored)."""

    def sync(self, live: np.ndarray, deleted: np.ndarray, fetch: RowFetcher) -> None:
        """Bring rows up to date with the store: `live` searchable with their current vectors and labels (rows
        the backend does not hold are read with `fetch`), `deleted` hidden. Idempotent: replays after a crash."""

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: Optional[np.ndarray] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live items of each query: (ids int64 (n, k'), distances float32 (n, k')), nearest first,
        k' = min(k, candidates). `allowed_ids` and `labels` (either or both) restrict the candidates."""

    def purge(self, ids: Sequence[int], originals: np.ndarray, seq: int) -> list[Evidence]:
        """Remove items physically (not just hide them), `originals` being their vectors as stored; `seq` is the
        store's current change. Idempotent. Returns what was done and verified."""

    def persist(self, seq: int) -> None:
        """Make everything applied so far durable and record `seq` as applied."""

    def resident_bytes(self) -> int:
        """RAM this process holds for the index (0 where a server holds it)."""

    def describe(self) -> dict:
        """What `vmem stats` shows about the backend (name, location, parameters)."""

    def set_search_ef(self, ef: int) -> None:
        """Search with beam `ef` from now on (M and ef_construction are the built graph's and stay)."""

    def close(self) -> None:
        """Release connections (does not persist: call `persist` first)."""


SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


class MilvusIndexError(VmemError):
    pass


def check_uri(uri: Optional[str]) -> Optional[str]:
    """A server URI as given, or None for the embedded milvus-lite; a clear error for anything else."""
    if uri is None or uri == "":
        return None
    if not uri.startswith(SERVER_SCHEMES):
        raise MilvusIndexError(
            f"index URI {uri!r} is not a Milvus server address; accepted: {', '.join(SERVER_SCHEMES)}... (e.g. "
            "http://host:19530), or none for Milvus embedded in the memory folder")
    return uri


def store_rows(store: "Store") -> RowFetcher:
    """Read rows (vectors and labels) back from the store, for `IndexBackend.sync` and rebuilds."""

    def fetch(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        found, vectors = store.embeddings("id IN (SELECT UNNEST(?::BIGINT[]))", [[int(i) for i in ids]])
        labelled, labels = store.labels_of(found)
        if not np.array_equal(labelled, found):  # both ordered by id: a row purged in between would break pairing
            raise VmemError("rows changed while the index was being brought up to date; reopen the memory")
        return found, vectors, labels

    return fetch


def catch_up(backend: IndexBackend, store: "Store") -> None:
    """Replay the store's changes made after the backend's last persisted one (a crash, or another process)."""
    seq = store.seq()
    if backend.applied_seq >= seq:
        return
    live, deleted = store.changed_since(backend.applied_seq)
    backend.sync(live, deleted, store_rows(store))
    if backend.applied_seq >= 0:
        log.info("index replayed %d change(s) made after its last snapshot", seq - backend.applied_seq)
