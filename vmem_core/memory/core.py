"""VisualMemory: the open memory. It keeps the lifecycle (create, open, close), what every part shares (the owner lock,
the readers-writer lock, the DuckDB store, the index backend, the encoder, the change counter) and hands out the
nouns a reader looks for:

- `memory.exemplars` (vmem_core.memory.exemplars): add, build, delete, restore, relabel; rows, browse, thumbnails;
- `memory.search` (vmem_core.memory.search): nearest exemplars, votes, classification;
- `memory.reliability` (vmem_core.memory.reliability): v(m), hard pruning's kept exemplars;
- `memory.index` (vmem_core.memory.index): the index backend and its upkeep;
- `memory.audit` (vmem_core.memory.audit): the hash-chained log of changes;
- `memory.reader()` (vmem_core.memory.reader): what a viewer gets, reads alone.

Unlearning (vmem_core.unlearn) owns purges and their journal; it registers what finishes an interrupted one here and
erases through vmem_core.memory.erasure.

Crash safety: every change is committed to DuckDB first, then applied to the index backend if this process has
opened it (it opens on first use). The backend records the last database change it holds durably; when it opens,
vmem replays the rows changed since, or (hnswlib) rebuilds the index from the database when its snapshot is missing or
damaged.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np

from ..backends import DEFAULT_BACKEND, IndexBackend, new_backend_record, open_backend
from ..backends.hnsw_index import IndexParams
from ..classification import Classification
from ..devices import devices_in_use
from ..encoders import DEFAULT_ENCODER, Encoder, load_encoder
from ..errors import EncoderMismatchError, MemoryFormatError
from ..ingest.images import ImageInput
from ..label_table import LabelTable
from ..storage.atomic import write_json_atomic
from ..storage.check import refuse_links
from ..storage.layout import (
    CONFIG_NAME, DATABASE_NAME, FORMAT_NAME, FORMAT_VERSION, NEIGHBOUR_TABLE, PURGE_JOURNAL, read_config,
)
from ..storage.neighbour_table import NeighbourTableKeeper
from ..storage.locks import ReadWriteLock
from ..storage.owner_lock import OwnerLock
from ..storage.store import Store
from ..voting import VoteSettings, resolve_settings
from .audit import Audit
from .exemplars import Exemplars
from .index import Index
from .reader import MemoryReader, OpenReader
from .reliability import NEIGHBOUR_TABLE_DEPTH, Reliability
from .query_rows import QueryRowsCache
from .search import Search
from .stats import memory_stats

log = logging.getLogger(__name__)

# What finishes a purge that a crash interrupted: vmem_core.unlearn owns purges and their journal and registers it
# here (unlearn sits above the memory, so the memory cannot import it). Importing vmem_core registers it.
_purge_finishers: list[Callable[["VisualMemory"], object]] = []


def on_interrupted_purge(finish: Callable[["VisualMemory"], object]) -> None:
    """Register `finish(memory)`, run by every open that finds a purge journal, before the memory is handed out."""
    if finish not in _purge_finishers:
        _purge_finishers.append(finish)


def finish_interrupted_purge(memory: "VisualMemory") -> None:
    if not _purge_finishers:  # fail closed: never hand out a memory whose purge is half done
        raise MemoryFormatError(f"{memory.path}: a purge was interrupted here, and nothing is loaded to finish it "
                                "(import vmem_core.unlearn)")
    for finish in _purge_finishers:
        finish(memory)


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
        self._index_params = IndexParams(**config.get("index", {}))
        self._read_only = read_only
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
        self._query_rows = QueryRowsCache()  # query sets searched again and again (Evaluate's split), kept current
        self._neighbours = NeighbourTableKeeper(self.path / NEIGHBOUR_TABLE, NEIGHBOUR_TABLE_DEPTH)
        self._index_uri = index_uri
        # The index is opened on first use: loading and verifying an hnswlib snapshot costs seconds at 60,000 x 1280,
        # and a delete, restore or relabel needs only the database (the next opener replays it, `catch_up`). An
        # --index-uri is checked at once: a wrong one must fail the open, not a later search.
        self._index_backend: Optional[IndexBackend] = None
        self._index_opening = threading.RLock()
        self._closed = False
        try:
            self._refresh_labels()
            if index_uri:
                self._index_backend = self._open_index()
            if (self.path / PURGE_JOURNAL).exists() and not read_only:  # a reader leaves it to the next writer
                finish_interrupted_purge(self)
        except BaseException:
            try:
                if self._index_backend is not None:
                    self._index_backend.close()
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
        backend: str = DEFAULT_BACKEND,
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
        if backend != DEFAULT_BACKEND or index_uri:
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
                       backend: str = DEFAULT_BACKEND, index_uri: Optional[str] = None,
                       index_params: Optional[IndexParams] = None) -> "VisualMemory":
        """Open the memory at `path`, or create it (with `backend` and `index_params`) when there is none."""
        path = Path(path)
        if (path / CONFIG_NAME).exists():
            return cls.open(path, encoder, index_uri=index_uri)
        return cls.create(path, encoder or DEFAULT_ENCODER, index_params=index_params or IndexParams(),
                          backend=backend, index_uri=index_uri)

    @classmethod
    def open_reader(cls, path: Union[str, Path], encoder: Union[str, Encoder, None] = None,
                    index_uri: Optional[str] = None) -> OpenReader:
        """Open an existing memory read-only and return only a reader of it (no write method, no writable handle);
        closing the reader closes the memory. Raises as `open`."""
        return OpenReader(cls.open(path, encoder, index_uri=index_uri, read_only=True))

    def reader(self) -> MemoryReader:
        """What a viewer gets: reads, searches and classifies this memory and can change nothing
        (vmem_core.memory.reader)."""
        return MemoryReader(self)

    def close(self) -> None:
        """Persist the index if the database is ahead of it (unless read-only), then release the index, the
        database and the owner lock, in that order."""
        with self._lock.write():
            self._closed = True  # background work (index.warm_up) stops at its next step
            try:
                if not self._read_only:
                    self.index.flush()
            finally:
                try:
                    with self._index_if_open() as backend:  # an open in progress (warm_up) is waited for
                        if backend is not None:  # never opened: nothing to release
                            backend.close()
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
    @property
    def _index(self) -> IndexBackend:
        """The index backend, opened (and brought up to date with the database) on first use."""
        backend = self._index_backend
        if backend is None:
            with self._index_opening:
                if self._index_backend is None:
                    self._index_backend = self._open_index()
                backend = self._index_backend
        return backend

    @_index.setter
    def _index(self, backend: IndexBackend) -> None:
        with self._index_opening:
            self._index_backend = backend

    @contextmanager
    def _index_if_open(self) -> Iterator[Optional[IndexBackend]]:
        """The index backend if this process has opened it, else None, held so that no open starts meanwhile: a
        change committed to the database before this reaches an index opened after it through `catch_up`, and one
        opened before it through the caller."""
        with self._index_opening:
            yield self._index_backend

    def _open_index(self) -> IndexBackend:
        return open_backend(self.path, self.config, self._store, self._index_params, self._ids_with_labels,
                            index_uri=self._index_uri)

    def _ids_with_labels(self, labels: Sequence[str]) -> np.ndarray:
        table, labels = self._table, set(labels)
        wanted = [i for i, label in enumerate(table.labels) if label in labels]
        return table.ids[np.isin(table.classes, wanted)]

    def _keep_owner_lock(self) -> None:
        """After rewriting files in the folder: if someone removed or replaced the lock file meanwhile, lock the one
        there now, so that no second process can take the memory by locking it (MemoryLockedError if one did)."""
        if not self._owner.still_guards():
            log.warning("%s: the lock file was removed or replaced while this process held the memory; locking it "
                        "again", self.path)
            previous, self._owner = self._owner, OwnerLock.acquire(self.path)
            previous.release()

    def _reopen_index(self) -> None:
        """After a failed index write: drop the backend's state in this process; it is brought back from the store
        on next use."""
        with self._index_opening:
            backend, self._index_backend = self._index_backend, None
            if backend is not None:
                backend.close()

    # --- labels, who acts, and values cached until the next change -------------------------------------------------
    def _refresh_labels(self, table: Optional[LabelTable] = None) -> None:
        """Publish a new label table: `table` when the caller built it incrementally, else re-read the database."""
        self._table = table if table is not None else LabelTable.from_rows(*self._store.live_labels())
        self._derived.clear()

    @property
    def table(self) -> LabelTable:
        """The current labels of live exemplars; take it once for several steps that must agree."""
        return self._table

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

    def __len__(self) -> int:
        return len(self._table.ids)

    # --- the nouns: what a memory holds, and what one asks of it ------------------------------------------------
    @property
    def exemplars(self) -> Exemplars:
        """The labelled images: add, build, delete, restore, relabel; rows, browse, count, thumbnails, embeddings."""
        return Exemplars(self)

    @property
    def search(self) -> Search:
        """`memory.search(embeddings, k, allowed_ids=None, labels=None)`; `.neighbors`, `.vote`,
        `.classify_embeddings`, `.memory_neighbors` (vmem_core.memory.search)."""
        return Search(self)

    @property
    def reliability(self) -> Reliability:
        """`memory.reliability(top_n)`: v of every live exemplar; `.kept_ids`, `.of_neighbors`."""
        return Reliability(self)

    @property
    def index(self) -> Index:
        """The index backend: `describe`, `params`, `devices`, `move`, `set_search_ef`, `flush`."""
        return Index(self)

    @property
    def audit(self) -> Audit:
        """The audit log: `log()`, `head()`, `verify()`, and who it names for changes (`actor`, `acting_as`)."""
        return Audit(self._store)

    # --- bulk build (vmem_core.ingest.pipeline) ----------------------------------------------------------------------

    def classify(
        self, images: Sequence[ImageInput], settings: Optional[VoteSettings] = None, **changes
    ) -> list[Classification]:
        """Classify images (paths, bytes or PIL images). See `search.classify_embeddings` for the settings."""
        settings = resolve_settings(settings, **changes)
        images = list(images)
        names = [str(i) if isinstance(i, (str, Path)) else None for i in images]
        return self.search.classify_embeddings(self.exemplars.encode(images), settings, names)

    def stats(self) -> dict:
        """What the memory holds and what it costs on disk and in RAM (`vmem stats --json`)."""
        with self._lock.read():
            stats = memory_stats(self.path, self.config, self._index_params, self._store, self._index, self._table)
        stats["devices"] = devices_in_use(self._encoder, stats["index_backend"])
        return stats

