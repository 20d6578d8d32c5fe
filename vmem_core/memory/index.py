"""`memory.index`: the searchable copy of the memory's vectors (an index backend, vmem_core.backends): what it is
(`describe`, `params`, `devices`), and its upkeep (`move` to another backend, `set_search_ef`, `flush`)."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Optional

from ..backends import IndexBackend, migrate
from ..backends.hnsw_index import IndexParams
from ..devices import devices_in_use
from ..errors import VmemError
from ..storage.atomic import write_json_atomic
from ..storage.layout import CONFIG_NAME
from .part import Part

log = logging.getLogger(__name__)

# What `warm_up` leaves for after the first page: measured on 2 busy cores at 60,000 x 1280, collapsing the huge pages
# beside the first page made it 0.5-2 s slower (the collapse takes 1.2-2.5 s of CPU); in steps with pauses between,
# it never holds a core (or a writer, which waits for one step) for long.
SETTLE_AFTER = 5.0  # seconds after the index opened
SETTLE_PAUSE = 0.02  # seconds between steps of hugepages.COLLAPSE_STEP bytes


class IndexReads(Part):
    """What a reader may ask of the index: which backend, its parameters, where it searches."""

    __slots__ = ()
    _read_half = True

    def describe(self) -> dict:
        """The backend's description (name, and where it keeps its files or which server it uses)."""
        return self._index.describe()

    @property
    def params(self) -> IndexParams:
        """HNSW graph and search parameters (frozen)."""
        return self._index_params

    def devices(self) -> dict:
        """Where this memory encodes and searches (`vmem_core.devices.devices_in_use`), without stats' disk sums."""
        with self._lock.read():
            return devices_in_use(self._encoder, self._index.describe())


class Index(IndexReads):
    """The index of one open memory (`memory.index`), with its upkeep."""

    __slots__ = ()
    _read_half = False

    @property
    def backend(self) -> IndexBackend:
        """The backend that searches this memory's vectors (vmem_core.backends)."""
        return self._index

    def move(self, backend: str, index_uri: Optional[str] = None) -> dict:
        """Move the index to another backend ("hnswlib", or "milvus": embedded, or on the server at `index_uri`),
        rebuilt from the database; the old one is removed. Returns {"from": ..., "to": ...} backend descriptions."""
        with self._lock.write():
            before = self._index.describe()
            memory = self._memory
            memory._index, memory.config = migrate(memory.path, memory.config, self._store, self._index_params,
                                               self._ids_with_labels, self._index, backend, index_uri)
            memory._index_uri = None
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
            before = self._index_params.ef_search
            params = replace(self._index_params, ef_search=ef)
            config = {**self._memory.config, "index": asdict(params)}
            write_json_atomic(self._memory.path / CONFIG_NAME, config)
            self._memory.config, self._memory._index_params = config, params
            self._index.set_search_ef(ef)
            self._store.log_event("tune", {"ef_search": {"from": before, "to": ef}})
        return {"from": before, "to": ef}

    def warm_up(self, settle_after: float = SETTLE_AFTER) -> threading.Thread:
        """Open the index in a background thread, then do what its open left for later (an hnswlib index's huge
        pages, `settle`), `settle_after` seconds later: for a long-lived process such as the app, whose first page
        then waits for the open alone and whose searches get the huge pages' speed soon after. Returns the thread (a
        daemon)."""
        memory = self._memory

        @contextmanager
        def step():  # one step of the settling: never beside a change (a resize moves hnswlib's block)
            with memory._lock.read():
                yield not memory._closed

        def run() -> None:
            try:
                with step() as still_open:
                    if not still_open:
                        return
                    backend = memory._index
                settle = getattr(backend, "settle", None)
                if settle is not None:
                    time.sleep(settle_after)  # not beside the first page, which needs both cores
                    settle(step, SETTLE_PAUSE)
            except Exception as exc:  # noqa: BLE001 - the next user of the index opens it and sees the error
                log.warning("%s: opening the index in the background failed (%s)", memory.path, exc)

        thread = threading.Thread(target=run, name="vmem-index-warm-up", daemon=True)
        thread.start()
        return thread

    def flush(self) -> None:
        """Persist the index if the database has changed since it last did (an hnswlib snapshot, a Milvus flush),
        and the neighbour table if it is newer than its file."""
        with self._lock.write(), self._index_if_open() as index:
            if index is not None:  # never opened here: the database holds every change, the next opener replays them
                index.persist(self._store.seq())
        self._neighbours.save()
