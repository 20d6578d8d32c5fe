"""A map of the memory: its live exemplars' embeddings projected to 2-D, queries placed on the same projection, and
"more like this" (an exemplar's nearest other exemplars).

The projection is PCA (numpy's SVD) by default: fast and the same on every machine. UMAP is a choice where `umap-learn`
is importable (never a run-time dependency): it separates clusters better, but its first map costs seconds of numba
compilation (about 18 s for 1,000 exemplars on two cores), too slow to be what a page opens on. It is computed once per memory change and cached through `memory.derived`.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import UnknownIdError, VmemError

log = logging.getLogger(__name__)

METHODS = ("pca", "umap")
UMAP_MIN_POINTS = 20  # below this UMAP's neighbourhood graph means little: PCA is used instead


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


@dataclass(frozen=True)
class Projection:
    """Exemplar ids (n,) and their 2-D points (n, 2), with what places new embeddings on the same plane."""

    method: str
    ids: np.ndarray
    points: np.ndarray
    mean: np.ndarray
    components: np.ndarray  # (2, dim): PCA's axes (unused for UMAP)
    reducer: Any = None  # a fitted umap.UMAP, for method "umap"

    def __len__(self) -> int:
        return len(self.ids)

    def place(self, embeddings: np.ndarray) -> np.ndarray:
        """(m, 2) points of embeddings on this projection (an exemplar's own embedding lands on its own point)."""
        vectors = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if len(vectors) == 0:
            return np.zeros((0, 2))
        if self.reducer is not None:
            return np.asarray(self.reducer.transform(vectors), dtype=np.float64)
        return (vectors - self.mean) @ self.components.T

    def points_of(self, ids: Sequence[int]) -> np.ndarray:
        """The points of the given exemplar ids (KeyError-free: raises UnknownIdError for ids not on the map)."""
        ids = np.asarray(ids, dtype=np.int64)
        where = np.searchsorted(self.ids, ids)
        where = np.minimum(where, max(len(self.ids) - 1, 0))
        if len(ids) and (len(self.ids) == 0 or (self.ids[where] != ids).any()):
            raise UnknownIdError(f"not on the map: {sorted(set(ids.tolist()) - set(self.ids.tolist()))[:20]}")
        return self.points[where]


# Above this many values (exemplars x dimensions) the axes come from a randomized SVD (Halko, Martinsson & Tropp
# 2011: a seeded sketch, power iterations, float32 products over the uncentred rows): ~0.3 s at 60,000 x 1280 where
# the full covariance took 4.2 s; below it, numpy's exact decomposition.
EXACT_PCA_BELOW = 4_000_000
SKETCH_OVERSAMPLE = 10
# three power iterations agree with the exact axes to 3e-9 on 20,000 of the synthetic mixture's vectors, whose second
# eigenvalue is within 3% of the first (1.6e-6 with two, 7e-14 with five); each one more reads the memory twice
SKETCH_POWER_ITERATIONS = 3


def pca_projection(ids: np.ndarray, vectors: np.ndarray) -> Projection:
    """Project onto the two principal axes, signs fixed so that the same data always draws the same way: numpy's
    SVD (the covariance's eigenvectors when exemplars are many), or for a large memory a seeded randomized SVD."""
    ids = np.asarray(ids, dtype=np.int64)
    large = np.size(vectors) > EXACT_PCA_BELOW
    vectors = np.asarray(vectors, dtype=np.float32 if large else np.float64)
    if len(ids) > 1 and np.any(ids[1:] < ids[:-1]):  # the memory's rows come sorted: no copy of them then
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order], vectors[order]
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    mean = vectors.mean(axis=0, dtype=np.float64) if len(vectors) else np.zeros(dim)
    components = np.zeros((2, dim))
    if len(vectors) >= 2:
        if large:
            axes = _sketched_axes(vectors, mean)
        elif len(vectors) > 2 * dim:  # many exemplars: the (dim, dim) covariance's top eigenvectors are the same axes
            centred = vectors - mean
            values, vectors_of = np.linalg.eigh(centred.T @ centred)
            axes = vectors_of[:, ::-1][:, :2].T
        else:
            _, _, vt = np.linalg.svd(vectors - mean, full_matrices=False)
            axes = vt[:2]
        signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
        components[: len(axes)] = axes * np.where(signs == 0, 1, signs)[:, None]
    points = (vectors @ components.T.astype(vectors.dtype) - mean @ components.T) if len(vectors) else np.zeros((0, 2))
    return Projection("pca", ids, np.asarray(points, dtype=np.float64), mean, components)


def _sketched_axes(vectors: np.ndarray, mean: np.ndarray, rank: int = 2) -> np.ndarray:
    """The top `rank` right singular vectors of (vectors - mean), by randomized subspace iteration; the centring is
    applied to the products, so no centred copy of the memory is made."""
    width = min(rank + SKETCH_OVERSAMPLE, vectors.shape[1])
    mean32 = mean.astype(np.float32)

    def times(m: np.ndarray) -> np.ndarray:  # (vectors - mean) @ m
        m = m.astype(np.float32)
        return vectors @ m - mean32 @ m

    def times_t(m: np.ndarray) -> np.ndarray:  # (vectors - mean).T @ m
        m = m.astype(np.float32)
        return vectors.T @ m - np.outer(mean32, m.sum(axis=0))

    sketch = times(np.random.default_rng(0).standard_normal((vectors.shape[1], width)))
    for _ in range(SKETCH_POWER_ITERATIONS):
        basis = _orthonormal(sketch)
        back = _orthonormal(times_t(basis))
        sketch = times(back)
    basis = _orthonormal(sketch)
    _, _, vt = np.linalg.svd(times_t(basis).astype(np.float64).T, full_matrices=False)
    return vt[:rank]


def _orthonormal(a: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of a tall, thin `a` (only the subspace matters here). Cholesky QR, twice
    (Yamamoto et al. 2015): two products with a (width x width) Gram matrix, where LAPACK's Householder QR of a
    60,000 x 12 sketch took 0.1-0.2 s a call on two busy cores, eleven calls a map. Falls back to that QR where the
    Gram matrix is too ill-conditioned to factor."""
    q = np.asarray(a, dtype=np.float64)
    try:
        for _ in range(2):
            upper = np.linalg.cholesky(q.T @ q).T
            q = np.linalg.solve(upper.T, q.T).T
    except np.linalg.LinAlgError:
        q, _ = np.linalg.qr(np.asarray(a, dtype=np.float64))
        return q
    if not np.all(np.isfinite(q)):
        q, _ = np.linalg.qr(np.asarray(a, dtype=np.float64))
    return q


def umap_projection(ids: np.ndarray, vectors: np.ndarray, seed: int = 0) -> Projection:
    import umap  # optional: only where umap-learn is installed

    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    ids, vectors = ids[order], np.asarray(vectors, dtype=np.float32)[order]
    # one thread: a seeded UMAP is deterministic only single-threaded (it says so, and forces it, with a warning)
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_jobs=1).fit(vectors)
    return Projection("umap", ids, np.asarray(reducer.embedding_, dtype=np.float64), vectors.mean(axis=0),
                      np.zeros((2, vectors.shape[1])), reducer)


def resolve_method(method: str, n: int) -> str:
    if method not in METHODS:
        raise VmemError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    if method == "umap" and not umap_available():
        raise VmemError("UMAP needs umap-learn (pip install umap-learn); PCA needs nothing")
    if method == "umap" and n < UMAP_MIN_POINTS:
        return "pca"
    return method


# A large memory's map keeps its axes through small changes: after an edit, exemplars that stay keep their points and
# new ones are placed on the same axes (milliseconds, where a refit of 60,000 x 1280 takes seconds and would move
# every point for one exemplar's sake). The axes are fitted again once the exemplars added or removed since their fit
# exceed this share of the memory.
REFIT_AFTER_CHANGE = 0.01
# (memory folder, encoder) -> {method: (projection, exemplars fitted on)}: by folder, not by handle, so that the
# readers a viewer gets (a new one per page run) and the editor's handle share one fit
_fitted: dict[tuple[str, str], dict] = {}


def memory_map(memory, method: str = "pca") -> Projection:
    """The live exemplars' 2-D projection, computed once per memory change (cached by `memory.derived`); for a large
    memory, updated on its axes after a small change (REFIT_AFTER_CHANGE). One computation at a time per memory
    and method: a page that asks while `map_in_background` is fitting waits for that fit instead of starting its
    own."""
    with _computing(memory, method):
        return _memory_map(memory, method)


def map_in_background(memory, method: str = "pca", after: Optional[threading.Thread] = None) -> threading.Thread:
    """Fit the map in a thread (after `after`, e.g. the neighbour table's build, has ended), so that a first visit
    to the Map finds it ready: a fit of 60,000 x 1280 takes seconds. Errors are logged; the page then computes (and
    reports) it. (At a lower OS priority the fit starved behind other processes on a busy machine, and a Map visited
    soon after opening waited longer: it runs at the process's own.)"""

    def fit() -> None:
        if after is not None:
            after.join()
        try:
            memory_map(memory, method)
        except Exception:  # noqa: BLE001 - the page computes it again and shows what fails
            log.exception("fitting the map of %s in the background failed", memory.path)

    thread = threading.Thread(target=fit, name="vmem-map", daemon=True)
    thread.start()
    return thread


_locks: dict[tuple[str, str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _computing(memory, method: str) -> threading.Lock:
    key = (str(Path(memory.path).resolve()), memory.config["encoder"]["identity"], method)
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _memory_map(memory, method: str) -> Projection:

    def compute() -> Projection:
        updated = _updated_on_the_same_axes(memory, method)
        if updated is not None:
            return updated
        ids, vectors = memory.exemplars.embeddings()
        chosen = resolve_method(method, len(ids))
        projection = umap_projection(ids, vectors) if chosen == "umap" else pca_projection(ids, vectors)
        if np.size(vectors) > EXACT_PCA_BELOW:
            _fits(memory)[method] = (projection, len(ids))
        return projection

    return memory.derived(("memory-map", method), compute)


def _fits(memory) -> dict:
    return _fitted.setdefault((str(Path(memory.path).resolve()), memory.config["encoder"]["identity"]), {})


def _updated_on_the_same_axes(memory, method: str) -> Optional[Projection]:
    """The last projection of a large memory with removed exemplars dropped and new ones placed, or None where there
    is none or the change since its fit is too large."""
    fitted = _fits(memory).get(method)
    if fitted is None:
        return None
    previous, fitted_count = fitted
    live = memory.table.ids
    stays = np.isin(previous.ids, live)
    new_ids = np.setdiff1d(live, previous.ids)
    if (len(new_ids) + int((~stays).sum())) > REFIT_AFTER_CHANGE * fitted_count:
        return None
    found, vectors = memory.exemplars.embeddings(new_ids)
    ids = np.concatenate([previous.ids[stays], found])
    points = np.concatenate([previous.points[stays], previous.place(vectors)])
    order = np.argsort(ids, kind="stable")
    projection = Projection(previous.method, ids[order], points[order], previous.mean, previous.components,
                            previous.reducer)
    _fits(memory)[method] = (projection, fitted_count)  # the axes' fit is what the next change is measured from
    return projection


def place_queries(memory, embeddings: np.ndarray, method: str = "pca") -> np.ndarray:
    """Query embeddings placed on the memory's map: (m, 2)."""
    return memory_map(memory, method).place(embeddings)


def deleted_points(memory, method: str = "pca") -> tuple[np.ndarray, np.ndarray]:
    """Deleted exemplars not yet purged (their embeddings still stored), placed on the live exemplars' map: (ids (m,),
    points (m, 2)); cached until the next change."""

    def compute() -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = memory.exemplars.stored_embeddings(memory.exemplars.tombstoned_ids())
        return np.asarray(ids, dtype=np.int64), memory_map(memory, method).place(vectors)

    return memory.derived(("memory-map-deleted", method), compute)


def map_labels(memory, projection: Projection) -> list[str]:
    """The current label of each exemplar on the map ("(deleted)" for one deleted since it was drawn)."""
    labels = list(memory.table.labels)
    return [labels[c] if c >= 0 else "(deleted)" for c in memory.table.class_indices(projection.ids)]


def more_like_this(memory, exemplar_id: int, k: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """An exemplar's k nearest other live exemplars, nearest first: (ids (k',), distances (k',))."""
    ids, vectors = memory.exemplars.embeddings([int(exemplar_id)])
    if not len(ids):
        raise UnknownIdError(f"no live exemplar with id {exemplar_id}")
    found, distances = memory.search(vectors[:1], int(k) + 1)
    found, distances = found[0], distances[0]
    keep = (found != int(exemplar_id)) & (found >= 0)
    found, distances = found[keep][:k], distances[keep][:k]
    order = np.argsort(distances, kind="stable")
    return found[order], distances[order]


def selected_ids(figure, points: Optional[Sequence[dict]]) -> list[int]:
    """Live exemplar ids of the points selected on a map figure (Streamlit's `event.selection.points`), in selection
    order without repeats; deleted exemplars, the query's marker and lines are skipped."""
    return _picked(figure, points, deleted=False)


def selected_deleted_ids(figure, points: Optional[Sequence[dict]]) -> list[int]:
    """Ids of the deleted (not yet purged) exemplars among the points selected on a map figure: they can be
    restored, while `selected_ids` are the live ones that can be edited."""
    return _picked(figure, points, deleted=True)


def _picked(figure, points: Optional[Sequence[dict]], deleted: bool) -> list[int]:
    from .plots import DELETED_TRACE  # imports plotly: only when a figure's selection is read

    chosen: list[int] = []
    for point in points or []:
        curve, index = point.get("curve_number"), point.get("point_index", point.get("point_number"))
        if curve is None or index is None or not 0 <= curve < len(figure.data):
            continue
        trace = figure.data[curve]
        if (trace.meta == DELETED_TRACE) != deleted:
            continue
        ids = trace.customdata
        if ids is None or index >= len(ids):
            continue
        value = ids[index]
        value = int(value[0] if isinstance(value, (list, tuple, np.ndarray)) else value)
        if value not in chosen:
            chosen.append(value)
    return chosen
