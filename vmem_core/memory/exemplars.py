"""`memory.exemplars`: the labelled images a memory holds. Add (one by one, or a whole collection with `build`),
delete (a tombstone, undone by `restore`), relabel; read them back (`rows`, `browse`, `count`, `thumbnails`,
`embeddings`, `label_changes`).

Every change commits to the database first, then to the index backend (vmem_core.memory.core explains why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..backends import store_rows
from ..errors import VmemError
from ..ingest import decode_workers
from ..ingest.datasets import LabelledImage, check_dataset_labels, scan_dataset
from ..ingest.images import ImageInput, LoadedImage, load_image, make_thumbnail
from ..ingest.names import check_label
from ..ingest.pipeline import BUILD_CHUNK, BuildReport, run_build
from ..storage.store import NewExemplars
from .part import Part, check_embeddings

# Below this distance two exemplars count as near-duplicates. With efficientnet-lite0 the same photo saved again as
# JPEG lands at ~0.04, while distinct Fashion-MNIST exemplars are rarely closer than 0.05 (4 of the 1,000 samples).
NEAR_DUPLICATE_DISTANCE = 0.05

# Up to this many exemplars, `near_duplicates_of` compares them with every live vector in the vault rather than open
# an index this process has not opened: one pass over the vectors file (~0.07 s at 60,000 x 1280, exact) instead of
# loading and verifying a snapshot (seconds), which is what kept `vmem delete` from returning in a second.
SCAN_INSTEAD_OF_INDEX = 64

Progress = Callable[[int, int], None]


def nearest_stored(vault, live_ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n, k'), 1 - cosine (n, k')) of each unit query's k nearest vectors among `live_ids`, nearest first,
    by exact comparison with every record of `vault` (`k'` = min(k, live count))."""
    live_ids = np.asarray(live_ids, dtype=np.int64)
    queries = np.asarray(queries, dtype=np.float32)
    k = min(int(k), len(live_ids))
    best_ids = np.zeros((len(queries), 0), np.int64)
    best_d = np.zeros((len(queries), 0), np.float32)
    if k <= 0:
        return best_ids, best_d
    live = np.zeros(int(live_ids.max()) + 1, dtype=bool)
    live[live_ids] = True
    for first, block in vault.scan_vectors():
        block_ids = np.arange(first, first + len(block))
        keep = block_ids < len(live)
        keep[keep] = live[block_ids[keep]]
        if not keep.any():
            continue
        # every record, then masked (cheaper than copying the live ones); the block on the left: numpy multiplies a
        # read-only mapping from the right several times slower
        distances = np.ascontiguousarray((1.0 - block @ queries.T).T, dtype=np.float32)
        distances[:, ~keep] = np.inf
        ids = np.concatenate([best_ids, np.broadcast_to(block_ids, distances.shape)], axis=1)
        distances = np.concatenate([best_d, distances], axis=1)
        if distances.shape[1] > k:
            top = np.argpartition(distances, k - 1, axis=1)[:, :k]
            ids, distances = np.take_along_axis(ids, top, axis=1), np.take_along_axis(distances, top, axis=1)
        best_ids, best_d = ids, distances
    order = np.argsort(best_d, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1), np.maximum(np.take_along_axis(best_d, order, axis=1), 0)


class ExemplarReads(Part):
    """What anyone may read of one open memory's exemplars (a reader's `exemplars`)."""

    __slots__ = ()
    _read_half = True

    def load_images(self, images: Sequence[ImageInput], names: Optional[Sequence[str]] = None) -> list[LoadedImage]:
        """Decode and validate every image before anything is written (raises BadImageError on the first bad one)."""
        names = list(names) if names is not None else [None] * len(images)
        return [load_image(image, name) for image, name in zip(images, names)]

    def encode(self, images: Sequence[ImageInput], progress: Optional[Progress] = None) -> np.ndarray:
        loaded = self.load_images(images)
        return self._memory.encoder.encode([item.image for item in loaded], progress=progress)

    def tombstoned_ids(self) -> list[int]:
        return sorted(int(i) for i in self._store.deleted_ids())

    def stored_embeddings(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, embeddings) of rows that exist, live or tombstoned."""
        return self._store.embeddings("id IN (SELECT UNNEST(?::BIGINT[]))", [[int(i) for i in ids]])

    def near_duplicates_of(
        self, ids: Sequence[int], max_distance: float = NEAR_DUPLICATE_DISTANCE
    ) -> dict[int, list[tuple[int, float]]]:
        """For each given exemplar (live or tombstoned), the live exemplars within `max_distance` of it: after a
        deletion they keep nearly the same influence."""
        found_ids, vectors = self.stored_embeddings(ids)
        if not len(found_ids) or not len(self._memory):
            return {}
        with self._index_if_open() as index:
            opened = index is not None
        if opened or len(found_ids) > SCAN_INSTEAD_OF_INDEX:
            neighbor_ids, distances = self._memory.search(vectors, 10)
        else:
            with self._lock.read():
                neighbor_ids, distances = nearest_stored(self._store.vault, self._table.ids, vectors, 10)
        excluded = set(int(i) for i in ids)
        out = {}
        for item, row_ids, row_d in zip(found_ids, neighbor_ids, distances):
            close = [(int(n), float(d)) for n, d in zip(row_ids, row_d) if d <= max_distance and int(n) not in excluded]
            if close:
                out[int(item)] = close
        return out

    def embeddings(self, ids: Optional[Sequence[int]] = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, embeddings) of the given live ids, or of every live exemplar, read from the database."""
        if ids is None:
            return self._store.embeddings()
        return self._store.embeddings(
            "deleted_at IS NULL AND id IN (SELECT UNNEST(?::BIGINT[]))", [[int(i) for i in ids]]
        )

    def rows(self, ids: Sequence[int]):
        """Metadata rows (label, source, sha256, thumbnail, added_at, ...) of the given ids as a DataFrame."""
        return self._store.rows(ids)

    def browse(self, **filters):
        """A page of exemplar metadata; filters: label, source, added_from, added_to, include_deleted, limit, offset."""
        return self._store.browse(**filters)

    def label_changes(self, limit: int = 100):
        """Recent relabellings as a DataFrame (exemplar_id, old_label, new_label, changed_at), newest first."""
        return self._store.label_changes(limit)

    def count(self, **filters) -> int:
        """How many exemplars match the same filters as `browse` (without limit and offset)."""
        return self._store.count_matching(**filters)

    def thumbnails(self, ids: Sequence[int]) -> dict[int, Optional[bytes]]:
        """{id: thumbnail PNG, or None where none was stored} of the given ids that exist, live or deleted."""
        return self._store.thumbnails(ids)


class Exemplars(ExemplarReads):
    """The exemplars of one open memory (`memory.exemplars`): the reads, and every change."""

    __slots__ = ()
    _read_half = False

    def exclusive(self):
        """A context in which no other thread changes or searches the memory (this thread may do both)."""
        return self._lock.write()

    def add(
        self,
        images: Sequence[ImageInput],
        labels: Union[str, Sequence[str]],
        sources: Optional[Sequence[str]] = None,
        progress: Optional[Progress] = None,
        decode_processes: Optional[bool] = None,
    ) -> list[int]:
        """Add labelled images, all or none: any bad image or label rejects the whole call before any write.

        Args:
            images: paths, raw bytes or PIL images.
            labels: one label for all, or one per image.
            sources: names to record (default: the path, or "upload").
            decode_processes: decode files in worker processes (None: for many files and an encoder on a GPU, as
                a build does; see vmem_core.ingest.decode_workers).

        Returns:
            The new exemplar ids.
        """
        images = list(images)
        labels = [labels] * len(images) if isinstance(labels, str) else list(labels)
        if len(labels) != len(images):
            raise VmemError(f"{len(images)} images but {len(labels)} labels; give one label or one per image")
        labels = [check_label(label) for label in labels]  # before the encoder spends any time
        if sources is None:
            sources = [str(i) if isinstance(i, (str, Path)) else "upload" for i in images]
        if self._decode_in_processes(images, decode_processes):
            return self._add_files_decoded_in_processes(images, labels, [str(s) for s in sources], progress)
        loaded = self.load_images(images, [str(s) for s in sources])
        embeddings = self._memory.encoder.encode([item.image for item in loaded], progress=progress)
        return self._insert(loaded, labels, list(sources), embeddings)

    def _decode_in_processes(self, images: Sequence[ImageInput], requested: Optional[bool]) -> bool:
        """Whether `add` decodes in worker processes (vmem_core.ingest.decode_workers): files only, an encoder with
        a pixel step, and as a build chooses (many files for an encoder on a GPU) unless `requested` says."""
        if requested is False or not all(isinstance(i, (str, Path)) for i in images):
            return False
        if getattr(self._memory.encoder, "pixel_step", lambda: None)() is None:
            return False
        on_gpu = bool(getattr(getattr(self._memory.encoder, "device", None), "is_cuda", False))
        return bool(requested) or (on_gpu and len(images) >= decode_workers.PROCESS_POOL_MIN_IMAGES)

    def _add_files_decoded_in_processes(
        self, paths: Sequence[ImageInput], labels: Sequence[str], sources: Sequence[str], progress: Optional[Progress]
    ) -> list[int]:
        items = [LabelledImage(Path(p), label, source) for p, label, source in zip(paths, labels, sources)]
        decoded = decode_workers.decode_in_processes(items, self._memory.encoder.pixel_step())
        bad = next((d.error for d in decoded if d.error is not None), None)
        if bad is not None:
            raise bad  # all or none, as in-process: the first bad image in the caller's order, nothing written
        embeddings = self._memory.encoder.encode_pixels(np.stack([d.pixels for d in decoded]), progress=progress)
        return self.add_embeddings(embeddings, labels, sources, [d.sha256 for d in decoded],
                                   [d.thumbnail for d in decoded])

    def _insert(
        self, loaded: Sequence[LoadedImage], labels: Sequence[str], sources: Sequence[str], embeddings: np.ndarray
    ) -> list[int]:
        thumbnails = [make_thumbnail(item.image) for item in loaded]
        return self.add_embeddings(embeddings, labels, sources, [item.sha256 for item in loaded], thumbnails)

    def add_embeddings(
        self,
        embeddings: np.ndarray,
        labels: Sequence[str],
        sources: Optional[Sequence[str]] = None,
        sha256: Optional[Sequence[str]] = None,
        thumbnails: Optional[Sequence[Optional[bytes]]] = None,
    ) -> list[int]:
        """Add precomputed embeddings (normalised here); all or none."""
        vectors = check_embeddings(embeddings, self._memory.dim)
        n = len(vectors)
        labels = [check_label(label) for label in labels]
        if len(labels) != n:
            raise VmemError(f"{n} embeddings but {len(labels)} labels")
        rows = NewExemplars(
            labels=labels,
            sources=list(sources) if sources is not None else ["embedding"] * n,
            sha256=list(sha256) if sha256 is not None else [""] * n,
            thumbnails=list(thumbnails) if thumbnails is not None else [None] * n,
            embeddings=vectors,
        )
        if n == 0:
            return []
        with self._lock.write():
            index = self._index  # opened before the rows commit, or its catch-up would add them a second time
            ids, _ = self._store.insert(rows)  # the database commits first: it is the source of truth
            try:
                index.add(ids, vectors, labels)
            except BaseException:
                self._reopen_index()
                raise
            self._refresh_labels(self._table.merged(ids, labels))
        return ids.tolist()

    def delete(self, ids: Sequence[int]) -> None:
        """Tombstone exemplars: excluded from every query at once, restorable until purged."""
        ids = [int(i) for i in ids]
        with self._lock.write():
            self._store.set_deleted(ids, True)
            with self._index_if_open() as index:  # an index opened later replays the tombstone from the database
                if index is not None:
                    index.mark_deleted(ids)
            self._refresh_labels(self._table.without(ids))

    def restore(self, ids: Sequence[int]) -> None:
        """Undo `delete` for exemplars that are still tombstoned."""
        ids = [int(i) for i in ids]
        with self._lock.write():
            self._store.set_deleted(ids, False)
            with self._index_if_open() as index:
                # a row deleted before this process's index saw it (e.g. replayed after a crash) may be absent: add it
                if index is not None:
                    index.sync(np.asarray(ids, dtype=np.int64), np.zeros(0, np.int64), store_rows(self._store))
            self._refresh_labels(self._table.merged(*self._store.labels_of(ids)))

    def relabel(self, ids: Sequence[int], label: str) -> None:
        """Give exemplars a new label (recorded in `label_changes`); takes effect in the next query."""
        label = check_label(label)
        with self._lock.write():
            self._store.relabel(ids, label)
            with self._index_if_open() as index:
                if index is not None:
                    index.relabel(ids, label)
            self._refresh_labels()

    def build(
        self,
        data: Union[str, Path, Sequence[LabelledImage]],
        progress: Optional[Progress] = None,
        strict: bool = False,
        workers: Optional[int] = None,
        chunk_size: int = BUILD_CHUNK,
        decode_processes: Optional[bool] = None,
    ) -> BuildReport:
        """Add a labelled collection (ImageFolder directory, CSV, or scanned items), decoding, encoding and inserting
        in overlapped chunks (vmem_core.ingest.pipeline).

        Images already in the memory under the same source name are skipped, so an interrupted build resumes.
        Undecodable images are reported in the result and skipped (or, with strict=True, stop the build).
        `workers` decoding workers (default: one per core), in processes for a large build on a GPU or where
        `decode_processes` says so (vmem_core.ingest.decode_workers).
        """
        total, todo, report = self.plan_build(data)
        if progress:
            progress(report.skipped_existing, total)
        run_build(self._memory, todo, report, total, progress, strict, workers, chunk_size,
                  decode_processes=decode_processes)
        # once, here, so that no page or command opens on a whole-memory pass later
        self._memory.reliability.table()
        self._memory.index.flush()
        return report

    def plan_build(
        self, data: Union[str, Path, Sequence[LabelledImage]]
    ) -> tuple[int, list[LabelledImage], BuildReport]:
        """What a build of `data` still has to add: (images in the collection, those whose source is not in the
        memory yet, a report counting the ones skipped), the same for every build engine so that any of them resumes
        any other's build."""
        items = scan_dataset(Path(data)) if isinstance(data, (str, Path)) else list(data)
        known = self._store.sources()
        todo = [item for item in items if item.source not in known]
        # a bad folder name or CSV label is refused before any image is encoded, not after the chunks before it
        check_dataset_labels(todo)
        return len(items), todo, BuildReport(skipped_existing=len(items) - len(todo))
