"""VisualMemory: the facade over an encoder, an index backend (hnswlib or Milvus) and a DuckDB store.

It keeps the lifecycle (create, open, close), the readers-writer lock, writes and search, and hands the rest to
small parts: the folder's files (vmem_core.storage.layout), the label table (vmem_core.label_table), stats
(vmem_core.storage.stats), the voting rules (vmem_core.voting), the purge journal and certificates
(vmem_core.unlearn).

Crash safety: every change is committed to DuckDB first, then applied to the index backend. The backend records the
last database change it holds durably; on open, vmem replays the rows changed since, or (hnswlib) rebuilds the index
from the database when its snapshot is missing or damaged.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .backends import Evidence, IndexBackend, migrate, new_backend_record, open_backend, store_rows
from .backends.hnsw_index import IndexParams
from .classification import Classification, classifications
from .devices import devices_in_use
from .encoders import DEFAULT_ENCODER, Encoder, load_encoder
from .errors import (
    BadVectorError,
    EncoderMismatchError,
    MemoryFormatError,
    UnknownIdError,
    VmemError,
)
from .ingest import decode_workers
from .ingest.datasets import LabelledImage, check_dataset_labels, scan_dataset
from .ingest.images import ImageInput, LoadedImage, load_image, make_thumbnail
from .ingest.names import check_label
from .ingest.pipeline import BUILD_CHUNK, BuildReport, run_build
from .label_table import LabelTable
from .storage.atomic import write_json_atomic
from .storage.check import refuse_links
from .storage.layout import CONFIG_NAME, DATABASE_NAME, FORMAT_NAME, FORMAT_VERSION, PURGE_JOURNAL, read_config
from .storage.locks import ReadWriteLock
from .storage.owner_lock import OwnerLock
from .storage.stats import memory_stats
from .storage.store import NewExemplars, Store
from .voting import (
    DEFAULT_RELIABILITY_TOP_N,
    VoteSettings,
    prepare_votes,
    reliability_counts,
    resolve_settings,
    vote_all_k,
)

log = logging.getLogger(__name__)

# Below this distance two exemplars count as near-duplicates. With efficientnet-lite0 the same photo saved again as
# JPEG lands at ~0.04, while distinct Fashion-MNIST exemplars are rarely closer than 0.05 (4 of the 1,000 samples).
NEAR_DUPLICATE_DISTANCE = 0.05

Progress = Callable[[int, int], None]


def _check_embeddings(embeddings: np.ndarray, dim: int) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise BadVectorError(f"embeddings have shape {np.shape(embeddings)}; this memory accepts (n, {dim})")
    if not np.all(np.isfinite(array)):
        raise BadVectorError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms < 1e-12):
        raise BadVectorError(f"embedding row(s) {np.flatnonzero(norms[:, 0] < 1e-12)[:10].tolist()} are zero vectors")
    return array / norms


def check_encoder_fits(path: Union[str, Path], config: dict, encoder: Union[str, Encoder, None]) -> Optional[Encoder]:
    """`encoder` (a name or a loaded encoder; None: any) if it is the one that built the memory with `config`: the
    same weights (by fingerprint) and dimension, whatever its name says (a checkpoint by another path is the same
    encoder). Returns the loaded encoder, or None where there is nothing to load yet (no encoder, or the same name).

    Raises:
        EncoderMismatchError: another encoder.
    """
    recorded = config["encoder"]
    if encoder is None or (isinstance(encoder, str) and encoder == recorded["name"]):
        return None  # same name: loaded lazily
    if isinstance(encoder, str):
        encoder = load_encoder(encoder)
    if encoder.identity != recorded["identity"] or int(encoder.dim) != int(recorded["dim"]):
        raise EncoderMismatchError(
            f"memory {path} was built with encoder {recorded['name']!r} ({recorded['dim']}-d); "
            f"it cannot be used with {encoder.name!r} ({encoder.dim}-d) because their features are not "
            "comparable. Open it without an encoder, or build a new memory with this one"
        )
    return encoder


class VisualMemory:
    """An editable visual memory. Thread-safe: many concurrent readers (classify, search) or one writer."""

    def __init__(self, path: Path, config: dict, encoder: Optional[Encoder] = None,
                 index_uri: Optional[str] = None, read_only: bool = False, create: bool = False) -> None:
        self.path = Path(path)
        self.config = config
        self.dim = int(config["encoder"]["dim"])
        self.index_params = IndexParams(**config.get("index", {}))
        self.read_only = read_only
        self._encoder = encoder
        self._lock = ReadWriteLock()
        # taken before DuckDB opens and kept until close: the one lock that no rewrite of the database can move
        refuse_links(self.path)  # before any file in it is opened: a link would carry writes outside the memory
        self._owner = OwnerLock.acquire(self.path, read_only=read_only)
        try:
            self._store = Store(self.path / DATABASE_NAME, self.dim, config["encoder"]["identity"], create=create,
                                read_only=read_only)
        except BaseException:
            self._owner.release()
            raise
        self._owner.announce()
        if config["version"] < FORMAT_VERSION and not read_only:  # the store has just migrated the layout
            self.config = config = {**config, "version": FORMAT_VERSION}
            write_json_atomic(self.path / CONFIG_NAME, config)
        self._derived: dict[object, tuple[int, object]] = {}
        self._index_uri = index_uri
        try:
            self._refresh_labels()
            self._index: IndexBackend = self._open_index()
            if (self.path / PURGE_JOURNAL).exists() and not read_only:  # a reader leaves it to the next writer
                from .unlearn import finish_interrupted_purge

                finish_interrupted_purge(self)
        except BaseException:
            try:
                if getattr(self, "_index", None) is not None:
                    self._index.close()
                self._store.close()
            finally:
                self._owner.release()
            raise

    # --- lifecycle ------------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Union[str, Path],
        encoder: Union[str, Encoder] = DEFAULT_ENCODER,
        index_params: IndexParams = IndexParams(),
        backend: str = "hnswlib",
        index_uri: Optional[str] = None,
    ) -> "VisualMemory":
        """Create an empty memory at `path` (a new or empty directory) for `encoder`.

        `backend` is "hnswlib" (embedded, the default) or "milvus" (embedded milvus-lite inside the memory folder,
        or the Milvus server at `index_uri`, e.g. http://host:19530)."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise MemoryFormatError(f"{path}: already exists and is not an empty directory; open it instead")
        encoder = load_encoder(encoder) if isinstance(encoder, str) else encoder
        config = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "encoder": {"name": encoder.name, "identity": encoder.identity, "dim": int(encoder.dim)},
            "index": asdict(index_params),
        }
        if backend != "hnswlib" or index_uri:
            config["backend"] = new_backend_record(backend, index_uri)
        path.mkdir(parents=True, exist_ok=True)
        try:
            write_json_atomic(path / CONFIG_NAME, config)
            memory = cls(path, config, encoder, create=True)
            memory._store.log_event("create", {"encoder": config["encoder"], "format_version": FORMAT_VERSION})
            return memory
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    @classmethod
    def open(
        cls, path: Union[str, Path], encoder: Union[str, Encoder, None] = None, index_uri: Optional[str] = None,
        read_only: bool = False,
    ) -> "VisualMemory":
        """Open an existing memory; `encoder`, if given, must be the one that built it. `index_uri` serves a Milvus
        memory from that address instead of the one recorded (e.g. the same cluster behind another name).
        `read_only`: for reading alone; closing it persists nothing (the next writer brings the index up to date).

        Raises:
            MemoryFormatError: not a memory, or a newer format.
            EncoderMismatchError: `encoder` differs from the memory's.
            MemoryLockedError: another process holds the memory.
        """
        path = Path(path)
        config = read_config(path)
        encoder = check_encoder_fits(path, config, encoder)
        return cls(path, config, encoder, index_uri=index_uri, read_only=read_only)

    @classmethod
    def open_or_create(cls, path: Union[str, Path], encoder: Union[str, Encoder, None] = None,
                       backend: str = "hnswlib", index_uri: Optional[str] = None,
                       index_params: Optional[IndexParams] = None) -> "VisualMemory":
        """Open the memory at `path`, or create it (with `backend` and `index_params`) when there is none."""
        path = Path(path)
        if (path / CONFIG_NAME).exists():
            return cls.open(path, encoder, index_uri=index_uri)
        return cls.create(path, encoder or DEFAULT_ENCODER, index_params=index_params or IndexParams(),
                          backend=backend, index_uri=index_uri)

    def close(self) -> None:
        """Persist the index if the database is ahead of it (unless read-only), then release the index, the
        database and the owner lock, in that order."""
        with self._lock.write():
            try:
                if not self.read_only:
                    self.flush()
            finally:
                try:
                    self._index.close()
                finally:
                    try:
                        self._store.close()
                    finally:
                        self._owner.release()

    def __enter__(self) -> "VisualMemory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def encoder(self) -> Encoder:
        """The memory's encoder, loaded on first use (stats, delete and search by vector never load it)."""
        if self._encoder is None:
            self._encoder = load_encoder(self.config["encoder"]["name"])
            if self._encoder.identity != self.config["encoder"]["identity"]:
                raise EncoderMismatchError(
                    f"encoder {self._encoder.name!r} now has identity {self._encoder.identity}, but memory "
                    f"{self.path} was built with {self.config['encoder']['identity']} (different weights installed?)"
                )
        return self._encoder

    # --- index maintenance ----------------------------------------------------------------------------------------
    def _open_index(self) -> IndexBackend:
        return open_backend(self.path, self.config, self._store, self.index_params, self._ids_with_labels,
                            index_uri=self._index_uri)

    def _ids_with_labels(self, labels: Sequence[str]) -> np.ndarray:
        table, labels = self._table, set(labels)
        wanted = [i for i, label in enumerate(table.labels) if label in labels]
        return table.ids[np.isin(table.classes, wanted)]

    @property
    def index_backend(self) -> IndexBackend:
        """The backend that searches this memory's vectors (vmem_core.backends)."""
        return self._index

    def _keep_owner_lock(self) -> None:
        """After rewriting files in the folder: if someone removed or replaced the lock file meanwhile, lock the one
        there now, so that no second process can take the memory by locking it (MemoryLockedError if one did)."""
        if not self._owner.still_guards():
            log.warning("%s: the lock file was removed or replaced while this process held the memory; locking it "
                        "again", self.path)
            previous, self._owner = self._owner, OwnerLock.acquire(self.path)
            previous.release()

    def _reopen_index(self) -> None:
        """After a failed index write: drop the backend's state in this process and bring it back from the store."""
        try:
            self._index.close()
        finally:
            self._index = self._open_index()

    def move_index(self, backend: str, index_uri: Optional[str] = None) -> dict:
        """Move the index to another backend ("hnswlib", or "milvus": embedded, or on the server at `index_uri`),
        rebuilt from the database; the old one is removed. Returns {"from": ..., "to": ...} backend descriptions."""
        with self._lock.write():
            before = self._index.describe()
            self._index, self.config = migrate(self.path, self.config, self._store, self.index_params,
                                               self._ids_with_labels, self._index, backend, index_uri)
            self._index_uri = None
            after = self._index.describe()
            self._store.log_event("migrate", {"from": before, "to": after})
            self._index.persist(self._store.seq())
            self._keep_owner_lock()
        return {"from": before, "to": after}

    def set_search_ef(self, ef: int) -> dict:
        """Search with HNSW beam `ef` from now on, and keep it in vmem.json (the graph itself, M and ef_construction,
        is fixed when built). Returns {"from": old ef, "to": ef}."""
        if isinstance(ef, bool) or not isinstance(ef, int) or ef < 1:
            raise VmemError(f"search beam ef {ef!r}: must be a positive integer (k neighbours use max(ef, k))")
        with self._lock.write():
            before = self.index_params.ef_search
            params = replace(self.index_params, ef_search=ef)
            config = {**self.config, "index": asdict(params)}
            write_json_atomic(self.path / CONFIG_NAME, config)
            self.config, self.index_params = config, params
            self._index.set_search_ef(ef)
            self._store.log_event("tune", {"ef_search": {"from": before, "to": ef}})
        return {"from": before, "to": ef}

    def flush(self) -> None:
        """Persist the index if the database has changed since it last did (an hnswlib snapshot, a Milvus flush)."""
        with self._lock.write():
            self._index.persist(self._store.seq())

    # --- labels, who acts, and values cached until the next change -------------------------------------------------
    def _refresh_labels(self, table: Optional[LabelTable] = None) -> None:
        """Publish a new label table: `table` when the caller built it incrementally, else re-read the database."""
        self._table = table if table is not None else LabelTable.from_rows(*self._store.live_labels())
        self._derived.clear()

    @property
    def actor(self) -> str:
        """Who the audit log names for this handle's changes (default: user@host via library)."""
        return self._store.actor

    @actor.setter
    def actor(self, value: str) -> None:
        self._store.actor = str(value)

    def acting_as(self, actor: str):
        """A context naming `actor` in the audit log for this thread's changes (e.g. a CLI command the app runs)."""
        return self._store.acting_as(actor)

    @property
    def table(self) -> LabelTable:
        """The current labels of live exemplars; take it once for several steps that must agree."""
        return self._table

    @property
    def labels(self) -> list[str]:
        return list(self._table.labels)

    @property
    def change_counter(self) -> int:
        """The number of the last committed change (add, delete, relabel, ...): it rises with every change, so two
        equal readings mean nothing changed in between."""
        return self._store.seq()

    def derived(self, key: object, compute: Callable[[], object]) -> object:
        """A value computed from the memory's contents, cached until the next change (reliability, OOD threshold)."""
        seq = self._store.seq()
        cached = self._derived.get(key)
        if cached is not None and cached[0] == seq:
            return cached[1]
        value = compute()
        self._derived[key] = (seq, value)
        return value

    def class_indices(self, ids) -> np.ndarray:
        """Class index (into self.labels) of each id; -1 for ids that are not live."""
        return self._table.class_indices(ids)

    def label_of(self, exemplar_id: int) -> str:
        table = self._table
        cls = int(table.class_indices([exemplar_id])[0])
        if cls < 0:
            raise UnknownIdError(f"no live exemplar with id {exemplar_id}")
        return table.labels[cls]

    def __len__(self) -> int:
        return len(self._table.ids)

    # --- images -----------------------------------------------------------------------------------------------------
    def load_images(self, images: Sequence[ImageInput], names: Optional[Sequence[str]] = None) -> list[LoadedImage]:
        """Decode and validate every image before anything is written (raises BadImageError on the first bad one)."""
        names = list(names) if names is not None else [None] * len(images)
        return [load_image(image, name) for image, name in zip(images, names)]

    def encode(self, images: Sequence[ImageInput], progress: Optional[Progress] = None) -> np.ndarray:
        loaded = self.load_images(images)
        return self.encoder.encode([item.image for item in loaded], progress=progress)

    # --- writes -----------------------------------------------------------------------------------------------------
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
        embeddings = self.encoder.encode([item.image for item in loaded], progress=progress)
        return self._insert(loaded, labels, list(sources), embeddings)

    def _decode_in_processes(self, images: Sequence[ImageInput], requested: Optional[bool]) -> bool:
        """Whether `add` decodes in worker processes (vmem_core.ingest.decode_workers): files only, an encoder with
        a pixel step, and as a build chooses (many files for an encoder on a GPU) unless `requested` says."""
        if requested is False or not all(isinstance(i, (str, Path)) for i in images):
            return False
        if getattr(self.encoder, "pixel_step", lambda: None)() is None:
            return False
        on_gpu = bool(getattr(getattr(self.encoder, "device", None), "is_cuda", False))
        return bool(requested) or (on_gpu and len(images) >= decode_workers.PROCESS_POOL_MIN_IMAGES)

    def _add_files_decoded_in_processes(
        self, paths: Sequence[ImageInput], labels: Sequence[str], sources: Sequence[str], progress: Optional[Progress]
    ) -> list[int]:
        items = [LabelledImage(Path(p), label, source) for p, label, source in zip(paths, labels, sources)]
        decoded = decode_workers.decode_in_processes(items, self.encoder.pixel_step())
        bad = next((d.error for d in decoded if d.error is not None), None)
        if bad is not None:
            raise bad  # all or none, as in-process: the first bad image in the caller's order, nothing written
        embeddings = self.encoder.encode_pixels(np.stack([d.pixels for d in decoded]), progress=progress)
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
        vectors = _check_embeddings(embeddings, self.dim)
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
            ids, _ = self._store.insert(rows)  # the database commits first: it is the source of truth
            try:
                self._index.add(ids, vectors, labels)
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
            self._index.mark_deleted(ids)
            self._refresh_labels(self._table.without(ids))

    def restore(self, ids: Sequence[int]) -> None:
        """Undo `delete` for exemplars that are still tombstoned."""
        ids = [int(i) for i in ids]
        with self._lock.write():
            self._store.set_deleted(ids, False)
            # a row deleted before this process's index saw it (e.g. replayed after a crash) may be absent: add it
            self._index.sync(np.asarray(ids, dtype=np.int64), np.zeros(0, np.int64), store_rows(self._store))
            self._refresh_labels(self._table.merged(*self._store.labels_of(ids)))

    def relabel(self, ids: Sequence[int], label: str) -> None:
        """Give exemplars a new label (recorded in `label_changes`); takes effect in the next query."""
        label = check_label(label)
        with self._lock.write():
            self._store.relabel(ids, label)
            self._index.relabel(ids, label)
            self._refresh_labels()

    # --- physical removal (vmem_core.unlearn journals and certifies it) ----------------------------------------------
    def check_purgeable(self, ids: Sequence[int]) -> list[int]:
        """The ids, sorted and unique, if every one has a row (live or tombstoned); else UnknownIdError."""
        ids = sorted({int(i) for i in ids})
        if not ids:
            raise VmemError("nothing to purge: give exemplar ids, or tombstone some first (`vmem delete`)")
        known = set(self._store.all_ids().tolist())
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise UnknownIdError(f"unknown or already purged exemplar id(s): {', '.join(map(str, unknown[:20]))}")
        return ids

    def thumbnail_places(self, ids: Sequence[int]) -> list:
        """Where each exemplar's thumbnail lies in the vault, read before its row goes."""
        return self._store.thumbnail_places(ids)

    def erase_rows(
        self, ids: Sequence[int], purge_id: str, details: dict, thumbnail_places: Sequence
    ) -> list[Evidence]:
        """Remove exemplars' bytes from the index and the database files, idempotently. Unjournalled and
        uncertified: call `vmem_core.unlearn.purge`, which is both. Returns what the index backend did and verified.

        Order matters: the index goes first, while the vault still holds the vectors it must find there."""
        with self._lock.write():
            evidence = self._index.purge(ids, self._store.vault.read_vectors(ids), self._store.seq())
            self._store.purge(ids, purge_id, details, [tuple(p) for p in thumbnail_places])
            self._refresh_labels()
            self._keep_owner_lock()
        return evidence

    def record_certificate(self, purge_id: str, digest: str) -> None:
        """Log the digest of a purge's certificate, so that `vmem purge verify` can tell it unaltered."""
        self._store.log_event("certify", {"purge_id": purge_id, "certificate_sha256": digest})

    # --- rows as stored, and the audit log --------------------------------------------------------------------------
    def thumbnails_kept_elsewhere(self, thumbnails: Sequence[bytes], excluding: Sequence[int]) -> set[bytes]:
        return self._store.thumbnails_kept_elsewhere(thumbnails, excluding)

    def all_ids(self) -> np.ndarray:
        """Every exemplar with a row, live or tombstoned."""
        return self._store.all_ids()

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
        if not len(found_ids) or not len(self):
            return {}
        neighbor_ids, distances = self.search(vectors, 10)
        excluded = set(int(i) for i in ids)
        out = {}
        for item, row_ids, row_d in zip(found_ids, neighbor_ids, distances):
            close = [(int(n), float(d)) for n, d in zip(row_ids, row_d) if d <= max_distance and int(n) not in excluded]
            if close:
                out[int(item)] = close
        return out

    def exclusive(self):
        """A context in which no other thread changes or searches the memory (this thread may do both)."""
        return self._lock.write()

    def audit_log(self):
        """Every change ever made, as hash-chained entries (`verify_audit` checks them)."""
        return self._store.audit_entries()

    def audit_head(self):
        """(seq, hash) of the last audit entry written."""
        return self._store.audit_head()

    def verify_audit(self):
        """Check the audit log's chain, that it ends at its recorded head, and that replaying it gives the database's
        rows (vmem_core.storage.audit.Verification)."""
        return self._store.verify_audit()

    # --- bulk build (vmem_core.ingest.pipeline) ----------------------------------------------------------------------
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
        run_build(self, todo, report, total, progress, strict, workers, chunk_size,
                  decode_processes=decode_processes)
        self.flush()
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

    # --- reads ------------------------------------------------------------------------------------------------------
    def search(
        self, embeddings: np.ndarray, k: int, allowed_ids: Optional[np.ndarray] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live exemplars of each embedding: (ids (n, k'), distances (n, k')), k' = min(k, candidates).

        `allowed_ids` restricts the search to those exemplars, `labels` to exemplars with one of those labels.
        """
        queries = _check_embeddings(embeddings, self.dim)
        if isinstance(labels, str):
            labels = [labels]
        with self._lock.read():
            return self._index.search(queries, k, allowed_ids=allowed_ids, labels=labels)

    def kept_ids(self, settings: Optional[VoteSettings] = None) -> np.ndarray:
        """Live exemplars that hard pruning keeps under `settings`: reliability v (over top_n) < threshold."""
        settings = resolve_settings(settings)
        threshold, top_n = settings.threshold, settings.top_n

        def compute() -> np.ndarray:
            v = self.reliability(top_n)
            return np.asarray(sorted(i for i, count in v.items() if count < threshold), dtype=np.int64)

        return self.derived(("kept", threshold, top_n), compute)

    def neighbors(
        self, embeddings: np.ndarray, settings: Optional[VoteSettings] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The settings.k neighbours that vote: with hard pruning, the k nearest among the kept exemplars (ranks
        renumbered over them), so every k has k voters wherever enough exemplars are kept."""
        settings = resolve_settings(settings)
        if settings.pruning == "hard":
            return self.search(embeddings, settings.k, allowed_ids=self.kept_ids(settings))
        return self.search(embeddings, settings.k)

    def memory_neighbors(
        self, k: int, ids: Optional[Sequence[int]] = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Leave-one-out neighbours of memory items: each item's k nearest other live exemplars.

        Returns:
            (item ids (n,), neighbour ids (n, k'), distances (n, k')), k' = min(k, live exemplars - 1).
        """
        if ids is None:
            # every live item: computed once per change and per depth, shared by reliability, curation and OOD
            seq = self._store.seq()  # read before computing: a write meanwhile makes this result stale, not current
            cached = self._derived.get(("loo", "deepest"))
            if cached is not None and cached[0] == seq and cached[1][1].shape[1] >= min(
                int(k), max(len(self) - 1, 0)
            ):
                items, found, distances = cached[1]
                return items, found[:, :k], distances[:, :k]
            result = self._memory_neighbors(int(k), None)
            self._derived[("loo", "deepest")] = (seq, result)
            return result
        return self._memory_neighbors(int(k), np.asarray(ids, dtype=np.int64))

    def _memory_neighbors(
        self, k: int, ids: Optional[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._lock.read():
            table = self._table
            item_ids = table.ids.copy() if ids is None else ids
            unknown = item_ids[table.class_indices(item_ids) < 0]
            if len(unknown):
                raise UnknownIdError(f"no live exemplar with id(s) {', '.join(map(str, unknown[:20]))}")
            k = min(k, max(len(table.ids) - 1, 0))
            if len(item_ids) == 0 or k == 0:
                return item_ids, np.zeros((len(item_ids), 0), np.int64), np.zeros((len(item_ids), 0), np.float32)
            stored_ids, vectors = self.embeddings(item_ids)  # the database reads faster than hnswlib's get_items
            order = np.searchsorted(stored_ids, item_ids)
            found, distances = self._index.search(vectors[order], k + 1)
        is_self = found == item_ids[:, None]
        # Drop the item itself; if the approximate search missed it, drop the farthest instead.
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), found.shape[1] - 1)
        keep = np.ones_like(found, dtype=bool)
        keep[np.arange(len(found)), drop] = False
        return (
            item_ids,
            found[keep].reshape(len(found), -1)[:, :k],
            distances[keep].reshape(len(found), -1)[:, :k],
        )

    def reliability(self, top_n: int = DEFAULT_RELIABILITY_TOP_N) -> dict[int, int]:
        """v(m): how often exemplar m is among the top-N leave-one-out neighbours of a differently-labelled item.

        Cached until the memory changes.
        """
        return self.derived(("reliability", top_n), lambda: self._compute_reliability(top_n))

    def _compute_reliability(self, top_n: int) -> dict[int, int]:
        if top_n < 1:
            raise VmemError(f"top_n must be at least 1, got {top_n}")
        table = self._table
        item_ids, neighbor_ids, _ = self.memory_neighbors(top_n)
        counts = reliability_counts(item_ids, table.class_indices(item_ids), neighbor_ids)
        return {int(i): int(c) for i, c in zip(item_ids, counts)}

    def neighbor_reliability(self, neighbor_ids: np.ndarray, top_n: int = DEFAULT_RELIABILITY_TOP_N) -> np.ndarray:
        """v of each neighbour id (same shape; 0 for ids with no count, e.g. -1 padding)."""
        v = self.reliability(top_n)
        return np.vectorize(lambda i: v.get(int(i), 0), otypes=[np.int64])(np.asarray(neighbor_ids))

    def vote(
        self,
        neighbor_ids: np.ndarray,
        distances: np.ndarray,
        settings: Optional[VoteSettings] = None,
        table: Optional[LabelTable] = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Votes over found neighbours: (class indices into table.labels, weights, positions kept, predictions for
        every k). Neighbours for hard pruning should come from `neighbors` with the same settings; the hard mask
        applied here then drops nothing."""
        settings = resolve_settings(settings)
        table = table or self._table
        neighbor_ids = np.atleast_2d(neighbor_ids)
        reliability = None if settings.pruning == "none" else self.neighbor_reliability(neighbor_ids, settings.top_n)
        classes, weights, positions = prepare_votes(table.class_indices(neighbor_ids), distances, settings, reliability)
        return classes, weights, positions, vote_all_k(classes, weights, len(table.labels))

    def classify_embeddings(
        self,
        embeddings: np.ndarray,
        settings: Optional[VoteSettings] = None,
        names: Optional[Sequence[Optional[str]]] = None,
        **changes,
    ) -> list[Classification]:
        """Classify precomputed query embeddings by the weighted vote of their k nearest exemplars.

        Args:
            embeddings: (n, dim) query features.
            settings: how to vote (k, rule, pruning, threshold, top_n, rule parameters); default VoteSettings().
            names: recorded as each result's `image`.
            changes: single settings by keyword, e.g. `k=5, rule="softmax"` (applied over `settings`).

        Raises:
            BadSettingError: a setting out of range.
        """
        settings = resolve_settings(settings, **changes)
        queries = _check_embeddings(embeddings, self.dim)
        table = self._table
        labels = table.labels
        neighbor_ids, distances = self.neighbors(queries, settings)
        classes, weights, positions, predictions = self.vote(neighbor_ids, distances, settings, table)
        k_used = min(settings.k, classes.shape[1])
        classes, weights, positions = classes[:, :k_used], weights[:, :k_used], positions[:, :k_used]
        predicted = predictions[:, k_used - 1] if k_used else np.full(len(queries), -1)
        return classifications(labels, neighbor_ids, distances, classes, weights, positions, predicted, names)

    def classify(
        self, images: Sequence[ImageInput], settings: Optional[VoteSettings] = None, **changes
    ) -> list[Classification]:
        """Classify images (paths, bytes or PIL images). See `classify_embeddings` for the settings."""
        settings = resolve_settings(settings, **changes)
        images = list(images)
        names = [str(i) if isinstance(i, (str, Path)) else None for i in images]
        return self.classify_embeddings(self.encode(images), settings, names)

    def embeddings(self, ids: Optional[Sequence[int]] = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, embeddings) of the given live ids, or of every live exemplar, read from the database."""
        if ids is None:
            return self._store.embeddings()
        return self._store.embeddings(
            "deleted_at IS NULL AND id IN (SELECT UNNEST(?::BIGINT[]))", [[int(i) for i in ids]]
        )

    def exemplars(self, ids: Sequence[int]):
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
        rows = self._store.rows(ids)
        return {
            int(i): bytes(t) if isinstance(t, (bytes, bytearray, memoryview)) else None
            for i, t in zip(rows["id"], rows["thumbnail"])
        }

    def stats(self) -> dict:
        """What the memory holds and what it costs on disk and in RAM (`vmem stats --json`)."""
        with self._lock.read():
            stats = memory_stats(self.path, self.config, self.index_params, self._store, self._index, self._table)
        stats["devices"] = devices_in_use(self._encoder, stats["index_backend"])
        return stats

    def devices(self) -> dict:
        """Where this memory encodes and searches (`vmem_core.devices.devices_in_use`), without stats' disk sums."""
        with self._lock.read():
            return devices_in_use(self._encoder, self._index.describe())
