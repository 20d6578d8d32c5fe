"""Exact search on a torch device: every candidate scored against every query, nothing approximate.

`exact_top_k` is the project's one exact k-nearest-neighbour search: the experiments' neighbour cache, the unlearning
certificate's reference search, hnswlib's fallback for small candidate sets and the `exact` index backend all call it.
Ties are broken by position, so its order is a function of the data alone (the same on every device, up to the
float32 rounding of the products).

On the CPU it scores in float32. On CUDA it scores a float16 copy of the vectors (half the bytes to stream, which is
what a one-query search is bound by) and re-scores the best `k + RESCORE_MARGIN` candidates of each query in float32,
so the order matches the CPU's unless more than that many candidates lie within float16's rounding (~1e-3) of the
k-th.

`ExactBackend` (`--backend exact`) holds the live vectors on the device, loaded from the store when the memory opens:
it has no index file of its own, so there is nothing on disk to patch when a vector is purged. Tombstones and
label filters are masks over its rows; a purge overwrites the rows with zeros.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from ..devices import Device, resolve_device
from .base import Evidence, LabelLookup, RowFetcher

if TYPE_CHECKING:
    from ..storage.store import Store

log = logging.getLogger(__name__)

RESCORE_MARGIN = 64  # extra float16 candidates re-scored in float32 on CUDA
# scores held at once (queries x rows): bounds a block's temporary memory, 256 MiB of float32 on the CPU and
# 2 GiB of float16 on a GPU, while keeping a 1,024-query block of a 1M memory in one pass on the GPU
SCORE_BUDGET = {"cpu": 2**26, "cuda": 2**30}
GROWTH = 1.5  # capacity grows geometrically, so adding one exemplar at a time is not quadratic


def nearest_first(similarities: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row sorted by similarity, highest first, equal similarities by position: the order every exact search
    in vmem returns.

    >>> s, p = nearest_first(torch.tensor([[0.5, 0.9, 0.5]]), torch.tensor([[7, 3, 2]]))
    >>> s.tolist(), p.tolist()
    ([[0.8999999761581421, 0.5, 0.5]], [[3, 2, 7]])
    """
    by_position = positions.argsort(dim=1)
    similarities, positions = similarities.gather(1, by_position), positions.gather(1, by_position)
    by_similarity = torch.sort(similarities, dim=1, descending=True, stable=True).indices
    return similarities.gather(1, by_similarity), positions.gather(1, by_similarity)


def best_rows(scores: torch.Tensor, depth: int) -> torch.Tensor:
    """The columns of the `depth` highest scores in each row (in no order); among equal scores at the cut, the
    lowest columns, so that which tied items make the cut does not depend on the top-k kernel.

    >>> best_rows(torch.tensor([[1.0, 3.0, 2.0, 2.0, 2.0]]), 3).sort().values.tolist()
    [[1, 2, 3]]
    """
    if depth >= scores.shape[1]:
        return torch.arange(scores.shape[1], device=scores.device).expand(len(scores), -1)
    # one more than asked for: where it equals the last one taken, a tie straddles the cut (duplicate vectors)
    top_scores, top = torch.topk(scores, depth + 1, dim=1)
    cut = top_scores[:, depth - 1 : depth]
    top = top[:, :depth].clone()
    rows = torch.nonzero(top_scores[:, depth] == cut[:, 0]).squeeze(1)
    if len(rows):  # rare: only these rows pay a full pass, taking the tied columns in column order
        above = scores[rows] > cut[rows]
        at_cut = scores[rows] == cut[rows]
        wanted = at_cut & (at_cut.cumsum(dim=1) <= depth - above.sum(dim=1, keepdim=True))
        top[rows] = torch.nonzero(above | wanted)[:, 1].reshape(len(rows), depth)
    return top


class DeviceMatrix:
    """Rows of unit vectors on a device, searched exactly. The float32 rows are the reference; on CUDA a float16
    copy is scored first and the best candidates re-scored in float32."""

    def __init__(self, vectors, device: Device, copy: bool = True) -> None:
        """`vectors`: float32 rows, a numpy array or a torch tensor (a tensor already on the device is used as is)."""
        self.device = device
        if isinstance(vectors, torch.Tensor):
            self.full = vectors.to(device.torch(), torch.float32)
            self.half = self.full.half() if device.is_cuda else None
            return
        array = np.array(vectors, dtype=np.float32, copy=copy or None).reshape(len(vectors), -1)
        if not array.flags.writeable:  # torch shares the buffer and wants to be able to write it
            array = array.copy()
        host = torch.from_numpy(array)
        self.full = host.to(device.torch()) if device.is_cuda else host
        self.half = self.full.half() if device.is_cuda else None

    @property
    def dim(self) -> int:
        return int(self.full.shape[1])

    def top_k(
        self, queries: np.ndarray, depth: int, rows: Optional[int] = None, mask: Optional[torch.Tensor] = None,
        candidates: Optional[int] = None, exclude: Optional[np.ndarray] = None, progress=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions int64 (n, depth), similarities float32 (n, depth)), nearest first, over the first `rows`
        rows (default all) where `mask` (bool, on the device) allows, `candidates` being how many it allows.
        `exclude[i]` is a row query i must not find (-1: none). The caller makes depth <= candidates."""
        rows = len(self.full) if rows is None else rows
        n = len(queries)
        positions = np.zeros((n, depth), np.int64)
        similarities = np.zeros((n, depth), np.float32)
        if n == 0 or depth == 0:
            return positions, similarities
        full, half, subset = self.full[:rows], None if self.half is None else self.half[:rows], None
        if mask is not None and (candidates if candidates is not None else int(mask.sum())) * 4 < rows:
            # few candidates: score only their rows (a label or an id filter) instead of masking them all
            subset = torch.nonzero(mask[:rows]).squeeze(1)
            full, half, mask = full[subset], None if half is None else half[subset], None
        block = max(1, SCORE_BUDGET["cuda" if self.device.is_cuda else "cpu"] // max(len(full), 1))
        for start in range(0, n, block):
            stop = min(start + block, n)
            query = torch.from_numpy(np.ascontiguousarray(queries[start:stop], np.float32)).to(full.device)
            skip = None if exclude is None else np.asarray(exclude[start:stop])
            found_similarity, found = self._block(query, full, half, mask, depth, skip)
            if subset is not None:
                found = subset[found]
            similarities[start:stop] = found_similarity.cpu().numpy()
            positions[start:stop] = found.cpu().numpy()
            if progress:
                progress(stop, n)
        return positions, similarities

    @staticmethod
    def _block(query, full, half, mask, depth, skip) -> tuple[torch.Tensor, torch.Tensor]:
        scores = (query.half() if half is not None else query) @ (half if half is not None else full).T
        if mask is not None:
            scores.masked_fill_(~mask, float("-inf"))
        if skip is not None:
            hit = np.flatnonzero(skip >= 0)
            scores[torch.from_numpy(hit).to(scores.device), torch.from_numpy(skip[hit]).to(scores.device)] = float(
                "-inf")
        if half is None:
            top = best_rows(scores, depth)
            return nearest_first(scores.gather(1, top), top)
        top = best_rows(scores, min(depth + RESCORE_MARGIN, scores.shape[1]))
        exact = torch.bmm(full[top], query.unsqueeze(2)).squeeze(2)  # float32, as the CPU scores them
        excluded = torch.isinf(scores.gather(1, top))  # masked rows fill the candidates when fewer than `wide`
        exact.masked_fill_(excluded, float("-inf"))
        exact, top = nearest_first(exact, top)
        return exact[:, :depth], top[:, :depth]


def exact_top_k(
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    exclude: Optional[np.ndarray] = None,
    progress=None,
    device: Optional[str] = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar rows of `vectors` for each query, nearest first: (positions (n, k'), distances (n, k')),
    k' = min(k, usable rows); distance = 1 - cosine.

    Args:
        exclude: for each query, one position of `vectors` to skip (-1 for none): leave-one-out.
        progress: called as progress(done, total) after each block of queries.
        device: where to search (a spec for `vmem_core.devices.resolve_device`; None: the process default).

    >>> exact_top_k(np.eye(3, dtype=np.float32)[:1], np.eye(3, dtype=np.float32), 2)[0].tolist()
    [[0, 1]]
    """
    queries = np.asarray(queries, dtype=np.float32)
    depth = max(min(int(k), len(vectors) - (1 if exclude is not None else 0)), 0)
    matrix = DeviceMatrix(vectors, resolve_device(device), copy=False)
    positions, similarities = matrix.top_k(queries, depth, exclude=exclude, progress=progress)
    return positions, 1.0 - similarities


class ExactBackend:
    """The `exact` index backend: the memory's live vectors on a device (see the module's docstring)."""

    name = "exact"

    def __init__(self, dim: int, label_lookup: LabelLookup, device: Optional[str] = None) -> None:
        self.dim = dim
        self.device = resolve_device(device)
        self._label_lookup = label_lookup
        self._ids = np.zeros(0, np.int64)  # row -> id, ascending
        self._matrix = DeviceMatrix(np.zeros((1024, dim), np.float32), self.device)
        self._alive = torch.zeros(1024, dtype=torch.bool, device=self.device.torch())
        self._live = 0
        self._applied_seq = -1

    @classmethod
    def open(cls, dim: int, store: "Store", label_lookup: LabelLookup, device: Optional[str] = None) -> "ExactBackend":
        """The store's live rows loaded onto the device: up to date with the store's current change."""
        backend = cls(dim, label_lookup, device)
        seq = store.seq()
        ids, vectors = store.embeddings()
        backend.add(ids, vectors)
        backend._applied_seq = seq
        return backend

    # --- contents -------------------------------------------------------------------------------------------------
    @property
    def applied_seq(self) -> int:
        return self._applied_seq

    @property
    def live_count(self) -> int:
        return self._live

    def live_ids(self) -> np.ndarray:
        return self._ids[self._alive[: len(self._ids)].cpu().numpy()]

    def _rows_of(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(rows, held): the row of each id, and whether the backend holds it at all."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = np.searchsorted(self._ids, ids)
        held = rows < len(self._ids)
        held[held] = self._ids[rows[held]] == ids[held]
        return rows, held

    def _set_alive(self, rows: np.ndarray, alive: bool) -> None:
        if not len(rows):
            return
        index = torch.from_numpy(np.unique(rows)).to(self._alive.device)
        self._live += int((~self._alive[index]).sum() if alive else self._alive[index].sum()) * (1 if alive else -1)
        self._alive[index] = alive

    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[str] = ()) -> None:
        """Insert or overwrite rows (labels are the memory's: `label_lookup` reads them when a search filters)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        rows, held = self._rows_of(ids)
        if held.any():
            self._write_rows(rows[held], vectors[held])
            self._set_alive(rows[held], True)
        new_ids, new_vectors = ids[~held], vectors[~held]
        if not len(new_ids):
            return
        if len(self._ids) and new_ids.min() <= self._ids[-1] or not np.all(np.diff(new_ids) > 0):
            self._merge(new_ids, new_vectors)  # ids out of order: re-sort every row (rare: replays, migrations)
            return
        start = len(self._ids)
        self._reserve(start + len(new_ids))
        self._ids = np.concatenate([self._ids, new_ids])
        self._write_rows(np.arange(start, len(self._ids)), new_vectors)
        self._set_alive(np.arange(start, len(self._ids)), True)

    def _merge(self, new_ids: np.ndarray, new_vectors: np.ndarray) -> None:
        held = len(self._ids)
        alive = self._alive[:held].cpu().numpy()
        ids = np.concatenate([self._ids, new_ids])
        order = np.argsort(ids, kind="stable")
        vectors = np.concatenate([self._matrix.full[:held].float().cpu().numpy(), new_vectors])[order]
        alive = np.concatenate([alive, np.ones(len(new_ids), bool)])[order]
        capacity = max(1024, int(len(ids) * GROWTH))
        padded = np.zeros((capacity, self.dim), np.float32)
        padded[: len(ids)] = vectors
        self._matrix = DeviceMatrix(padded, self.device)
        self._alive = torch.zeros(capacity, dtype=torch.bool, device=self.device.torch())
        self._alive[: len(ids)] = torch.from_numpy(alive).to(self._alive.device)
        self._ids = ids[order]
        self._live = int(alive.sum())

    def _reserve(self, rows: int) -> None:
        capacity = len(self._matrix.full)
        if rows <= capacity:
            return
        capacity = max(rows, int(capacity * GROWTH))
        held = len(self._ids)
        padded = np.zeros((capacity, self.dim), np.float32)
        padded[:held] = self._matrix.full[:held].cpu().numpy()
        self._matrix = DeviceMatrix(padded, self.device)
        alive = torch.zeros(capacity, dtype=torch.bool, device=self._alive.device)
        alive[:held] = self._alive[:held]
        self._alive = alive

    def _write_rows(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        index = torch.from_numpy(np.asarray(rows, np.int64)).to(self._matrix.full.device)
        values = torch.from_numpy(np.ascontiguousarray(vectors, np.float32)).to(self._matrix.full.device)
        self._matrix.full[index] = values
        if self._matrix.half is not None:
            self._matrix.half[index] = values.half()

    def relabel(self, ids: Sequence[int], label: str) -> None:
        pass  # labels are looked up in the memory's label table when a search filters by label

    def mark_deleted(self, ids: Sequence[int]) -> None:
        rows, held = self._rows_of(ids)
        self._set_alive(rows[held], False)

    def sync(self, live: np.ndarray, deleted: np.ndarray, fetch: RowFetcher) -> None:
        live = np.asarray(live, dtype=np.int64)
        rows, held = self._rows_of(live)
        self._set_alive(rows[held], True)
        if not held.all():
            ids, vectors, _ = fetch(live[~held])
            self.add(ids, vectors)
        self.mark_deleted(deleted)

    def held_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The rows this process holds for these ids, live or tombstoned (after a purge: the zeros written over
        them), as float32: what a purge must have overwritten."""
        rows, held = self._rows_of(ids)
        found = self._matrix.full[torch.from_numpy(rows[held]).to(self._matrix.full.device)].cpu().numpy()
        return dict(zip(self._ids[rows[held]].tolist(), found))

    # --- search ---------------------------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: Optional[np.ndarray] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have {queries.shape[1]} dimensions, the index {self.dim}")
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        mask, candidates = self._candidates(allowed_ids, labels)
        k = max(min(int(k), candidates), 0)
        held = len(self._ids)
        positions, similarities = self._matrix.top_k(queries, k, rows=held, mask=mask, candidates=candidates)
        return self._ids[positions], np.maximum(1.0 - similarities, 0)  # 1 - <q, x> rounds below 0 for twins

    def _candidates(self, allowed_ids, labels) -> tuple[Optional[torch.Tensor], int]:
        """(the rows a search may return as a device mask, or None for all rows; how many it allows)."""
        held = len(self._ids)
        if allowed_ids is None and labels is None:
            return (None if self._live == held else self._alive[:held]), self._live
        if labels is not None:
            with_labels = self._label_lookup(labels)
            allowed_ids = with_labels if allowed_ids is None else np.intersect1d(with_labels, allowed_ids)
        rows, known = self._rows_of(allowed_ids)
        wanted = torch.zeros(held, dtype=torch.bool)
        wanted[torch.from_numpy(rows[known])] = True
        mask = wanted.to(self._alive.device) & self._alive[:held]
        return mask, int(mask.sum())

    # --- durability -----------------------------------------------------------------------------------------------
    def persist(self, seq: int) -> None:
        self._applied_seq = seq  # nothing to write: the next open loads the store's rows again

    def purge(self, ids: Sequence[int], originals: np.ndarray, seq: int) -> list[Evidence]:
        """Overwrite the rows with zeros (and hide them), then check that no row still holds an original."""
        rows, held = self._rows_of(ids)
        self._set_alive(rows[held], False)
        self._write_rows(rows[held], np.zeros((int(held.sum()), self.dim), np.float32))
        remaining = self.held_vectors(ids)
        still = [i for i, original in zip(ids, np.asarray(originals, np.float32))
                 if int(i) in remaining and np.array_equal(remaining[int(i)], original)]
        return [Evidence("index (exact)", not still,
                         f"{int(held.sum())} row(s) overwritten with zeros on {self.device.name} and hidden; "
                         f"{len(still)} still hold their original vector; this backend writes no index file")]

    def resident_bytes(self) -> int:
        host = self._ids.nbytes
        if not self.device.is_cuda:
            host += self._matrix.full.nbytes + self._alive.nbytes
        return int(host)

    def device_bytes(self) -> int:
        """Accelerator memory the vectors take (0 on the CPU, where `resident_bytes` counts them)."""
        if not self.device.is_cuda:
            return 0
        return int(self._matrix.full.nbytes + self._matrix.half.nbytes + self._alive.nbytes)

    def describe(self) -> dict:
        precision = "float16, top candidates re-scored in float32" if self.device.is_cuda else "float32"
        return {"name": self.name, "location": f"{self.device.name} memory, loaded from the database on open",
                "live": self.live_count, "device": self.device.name, "device_name": self.device.description,
                "precision": precision, "device_bytes": self.device_bytes()}

    def set_search_ef(self, ef: int) -> None:
        pass  # exact search has no beam: it always finds the true neighbours

    def close(self) -> None:
        pass


# --- the registry's hooks (vmem_core.backends.registry) -------------------------------------------------------------
def open_index(path, record: dict, dim: int, params, store: "Store", label_lookup: LabelLookup,
               index_uri: Optional[str] = None) -> ExactBackend:
    return ExactBackend.open(dim, store, label_lookup)


def build_index(path, record: dict, old: dict, dim: int, params, store: "Store",
                label_lookup: LabelLookup) -> ExactBackend:
    return ExactBackend.open(dim, store, label_lookup)
