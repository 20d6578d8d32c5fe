"""Index backends: where a memory's vectors are searched.

The database and the vault (vmem_core.storage.store) are the source of truth for every exemplar; an index backend holds a
derived, searchable copy of the live vectors. Three implement the same `IndexBackend` protocol:

- `hnswlib` (vmem_core.backends.hnsw): embedded, in-process, snapshots in the memory's `index/` folder (default);
- `milvus` (vmem_core.backends.milvus): a Milvus collection through pymilvus, embedded with milvus-lite (a local
  folder inside the memory) or on a Milvus server or cluster given by its URI (`http://host:19530`);
- `exact` (vmem_core.backends.exact): every live vector scored on a torch device (the CPU, or a GPU: see
  vmem_core.devices), loaded from the store on open, with no index file of its own.

Every change is committed to the store first and then applied to the backend; a backend records the last store
change it holds durably (`applied_seq`) and is brought up to date from the store when the memory opens (`catch_up`).
The memory's `vmem.json` names its backend under "backend"; a memory without that key uses hnswlib.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..errors import VmemError
from ..storage.layout import CONFIG_NAME, HNSW_DIR, MILVUS_LITE_DIR, MILVUS_STATE
from .base import Evidence, IndexBackend, LabelLookup, MilvusIndexError, RowFetcher, catch_up, check_uri, store_rows
from .registry import ALL_ENTRIES, BACKENDS, DEFAULT_BACKEND, REGISTRY, backend_config, load, new_backend_record

if TYPE_CHECKING:
    from ..storage.store import Store
    from .hnsw_index import IndexParams

log = logging.getLogger(__name__)

__all__ = [
    "BACKENDS", "DEFAULT_BACKEND", "HNSW_DIR", "MILVUS_LITE_DIR", "MILVUS_STATE", "Evidence", "IndexBackend",
    "LabelLookup", "MilvusIndexError", "RowFetcher", "backend_config", "catch_up", "check_uri", "load_milvus",
    "migrate", "new_backend_record", "open_backend", "remove_stale_local_indexes", "store_rows",
]


def load_milvus():
    """The Milvus backend module, or a clear error when the optional extra is not installed."""
    return load(REGISTRY["milvus"])


def open_backend(
    path: Path, config: dict, store: "Store", params: "IndexParams", label_lookup: LabelLookup,
    index_uri: Optional[str] = None,
) -> IndexBackend:
    """Open (or create) the memory's index backend, up to date with the store.

    `index_uri` overrides the Milvus location recorded in vmem.json (the same memory served by another address).
    """
    record = backend_config(config)
    dim = int(config["encoder"]["dim"])
    if not getattr(store, "read_only", False):  # a reader removes nothing; the next writer does
        remove_stale_local_indexes(path, record)
    kind = REGISTRY[record["name"]]
    if index_uri and not kind.schemes:
        raise VmemError(f"--index-uri {index_uri!r} given, but {path} uses the {record['name']} index, which lives "
                        f"in the memory folder; move it to Milvus first with `vmem migrate {path} --to milvus`")
    return load(kind).open_index(path, record, dim, params, store, label_lookup, index_uri=index_uri)


def remove_stale_local_indexes(path: Path, record: dict) -> None:
    """Delete the local files of a backend the memory no longer uses (left by an interrupted `vmem migrate`):
    they hold vectors that a later purge would not reach."""
    kept = REGISTRY[record["name"]].entries(record)
    stale = [path / entry for entry in ALL_ENTRIES if entry not in kept]
    for item in stale:
        if item.exists():
            log.warning("removing %s: index files of a backend this memory no longer uses", item)
            shutil.rmtree(item) if item.is_dir() else item.unlink()


def migrate(path: Path, config: dict, store: "Store", params: "IndexParams", label_lookup: LabelLookup,
            current: IndexBackend, to: str, index_uri: Optional[str] = None) -> tuple[IndexBackend, dict]:
    """Move a memory's index to another backend: build it from the store, persist it, switch vmem.json to it
    (atomically), then remove the old one. Returns (the new backend, the new config). The caller holds the
    memory's write lock and closes nothing else.

    A crash before the switch leaves the old backend in use (the half-built one is removed by the next migrate or
    open); after it, the next open removes the old local files. A collection on a Milvus server that was being
    left is dropped only at the end: after a crash there, drop it by hand (its name is in the audit log)."""
    from ..storage.atomic import write_json_atomic

    record = new_backend_record(to, index_uri)
    old = backend_config(config)
    if old["name"] == record["name"] and (old.get("uri") or None) == record.get("uri"):
        where = f" at {record['uri']}" if record.get("uri") else ""
        raise VmemError(f"{path} already uses the {to} index{where}; nothing to migrate")
    dim = int(config["encoder"]["dim"])
    new_config = {**config, "backend": record}
    target: IndexBackend = load(REGISTRY[to]).build_index(path, record, old, dim, params, store, label_lookup)
    try:
        target.persist(store.seq())
        if target.live_count != len(store.live_labels()[0]):
            raise VmemError(f"the new {to} index holds {target.live_count} exemplars where the database has "
                            f"{len(store.live_labels()[0])} live; the memory keeps its {old['name']} index")
    except BaseException:
        target.close()
        raise
    write_json_atomic(path / CONFIG_NAME, new_config)
    try:
        current.close()
    finally:
        leave = getattr(load(REGISTRY[old["name"]]), "leave", None)  # a server's collection is dropped
        if leave is not None:
            leave(path, old)
        remove_stale_local_indexes(path, record)
    return target, new_config
