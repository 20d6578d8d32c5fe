"""The Milvus backend: the memory's live vectors in a Milvus collection, through pymilvus.

Embedded (the default for `--backend milvus`): milvus-lite keeps the collection in the memory's `milvus/` folder,
served in-process. On a server or cluster: the memory is opened with its URI (`http://host:19530`, token from
$VMEM_MILVUS_TOKEN); the same code runs in both cases.

Collection: id INT64 primary key (the store's exemplar id), label VARCHAR (for label-filtered search), vector
FLOAT_VECTOR with an HNSW index in inner-product space (vectors are unit length: distance = 1 - score).

A tombstone deletes the row from the collection (the store keeps it; a restore inserts it again). Deleted rows stay
in Milvus's files until compaction rewrites them, so a purge deletes, flushes, triggers compaction and waits for it.
milvus-lite 3.x answers a compaction request without compacting (checked in its source: ManualCompaction returns
success and does nothing), so for the embedded case the purge also rebuilds the collection from the store without the
purged rows and drops the old one. `milvus.json` beside the database records the last store change the collection
holds (flushed), so that changes after it are replayed on open.
"""

from __future__ import annotations

import json
import logging
import shutil
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from ..storage.atomic import write_json_atomic
from ..storage.layout import MILVUS_LITE_DIR, MILVUS_STATE
from .base import Evidence, MilvusIndexError, RowFetcher, catch_up, check_uri, store_rows

if TYPE_CHECKING:
    from ..storage.store import Store
    from .hnsw_index import IndexParams

log = logging.getLogger(__name__)

LITE_NAME = "lite.db"  # pymilvus starts milvus-lite for a URI that is a path ending in .db
TOKEN_ENV = "VMEM_MILVUS_TOKEN"
MAX_LABEL_LENGTH = 65535  # Milvus's VARCHAR limit
MAX_TOPK = 16384  # Milvus's limit on both the number of results and of queries per request
WRITE_BATCH = 2048
COMPACTION_TIMEOUT_S = 600.0


def quote(text: str) -> str:
    """A string literal for a Milvus filter expression (pymilvus's templating is not supported by milvus-lite)."""
    return json.dumps(str(text), ensure_ascii=False)


class MilvusBackend:
    name = "milvus"

    def __init__(self, path: Path, record: dict, dim: int, params: "IndexParams", store: "Store",
                 uri: Optional[str]) -> None:
        self.path = path
        self.dim = dim
        self.params = params
        self.collection = str(record["collection"])
        self.server_uri = uri
        self._store = store
        self._live_count: Optional[int] = None
        if uri is None:
            (path / MILVUS_LITE_DIR).mkdir(exist_ok=True)
            self._client = MilvusClient(str(self.lite_path))
        else:
            self._client = MilvusClient(uri, token=os.environ.get(TOKEN_ENV, ""))
        state = self._read_state()  # valid for this collection, embedded or on a server (whatever its address)
        same = state.get("collection") == self.collection and state.get("embedded") == self.embedded
        self._applied_seq = int(state.get("applied_seq", -1)) if same else -1

    @classmethod
    def open(cls, path: Path, record: dict, dim: int, params: "IndexParams", store: "Store",
             index_uri: Optional[str] = None) -> "MilvusBackend":
        uri = check_uri(index_uri if index_uri else record.get("uri"))
        try:
            backend = cls(path, record, dim, params, store, uri)
        except MilvusException as exc:
            where = uri or f"milvus-lite in {path / MILVUS_LITE_DIR}"
            raise MilvusIndexError(f"cannot connect to Milvus at {where}: {exc}") from None
        try:
            if not backend._client.has_collection(backend.collection):
                if backend._applied_seq >= 0:
                    log.warning("Milvus collection %s is missing; rebuilding it from the database", backend.collection)
                backend._create_collection(backend.collection)
                backend._applied_seq = -1
            backend._drop_leftovers()
            backend._client.load_collection(backend.collection)  # a collection reopened is released until loaded
            catch_up(backend, store)
        except BaseException:
            backend.close()
            raise
        return backend

    @property
    def lite_path(self) -> Path:
        return self.path / MILVUS_LITE_DIR / LITE_NAME

    @property
    def embedded(self) -> bool:
        return self.server_uri is None

    # --- collection -----------------------------------------------------------------------------------------------
    def _create_collection(self, name: str) -> None:
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("label", DataType.VARCHAR, max_length=MAX_LABEL_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index = self._client.prepare_index_params()
        index.add_index(field_name="vector", index_type="HNSW", metric_type="IP",
                        params={"M": self.params.M, "efConstruction": self.params.ef_construction})
        self._client.create_collection(name, schema=schema, index_params=index)

    def _drop_leftovers(self) -> None:
        """Drop the collections a purge's rebuild left behind when it crashed midway."""
        for spare in (self.collection + "_rebuild", self.collection + "_retired"):
            if self._client.has_collection(spare):
                self._client.drop_collection(spare)

    def _read_state(self) -> dict:
        try:
            return json.loads((self.path / MILVUS_STATE).read_text())
        except (OSError, ValueError):
            return {}

    def _insert(self, name: str, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[str], upsert: bool) -> None:
        write = self._client.upsert if upsert else self._client.insert
        vectors = np.asarray(vectors, dtype=np.float32)
        for start in range(0, len(ids), WRITE_BATCH):
            rows = [{"id": int(i), "label": str(label), "vector": vector}
                    for i, label, vector in zip(ids[start:start + WRITE_BATCH], labels[start:start + WRITE_BATCH],
                                                vectors[start:start + WRITE_BATCH])]
            write(name, rows)

    def _held(self, ids: Sequence[int], fields: Sequence[str] = ("id",)) -> list[dict]:
        ids = [int(i) for i in ids]
        rows = []
        for start in range(0, len(ids), MAX_TOPK):
            chunk = ids[start:start + MAX_TOPK]
            rows += self._client.query(self.collection, filter=f"id in {chunk}", output_fields=list(fields),
                                       limit=len(chunk))
        return rows

    # --- contents -------------------------------------------------------------------------------------------------
    @property
    def applied_seq(self) -> int:
        return self._applied_seq

    @property
    def live_count(self) -> int:
        if self._live_count is None:
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
            self._live_count = int(rows[0]["count(*)"])
        return self._live_count

    def live_ids(self) -> np.ndarray:
        ids = []
        iterator = self._client.query_iterator(self.collection, batch_size=MAX_TOPK, filter="id >= 0",
                                               output_fields=["id"])
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    break
                ids += [int(row["id"]) for row in batch]
        finally:
            iterator.close()
        return np.asarray(sorted(ids), dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[str]) -> None:
        self._live_count = None
        self._insert(self.collection, np.asarray(ids, dtype=np.int64), vectors, list(labels), upsert=True)

    def relabel(self, ids: Sequence[int], label: str) -> None:
        rows = self._held(ids, ("id", "vector"))  # tombstoned rows are not held: they get their label on restore
        if rows:
            self._insert(self.collection, np.asarray([r["id"] for r in rows], dtype=np.int64),
                         np.asarray([r["vector"] for r in rows], dtype=np.float32), [label] * len(rows), upsert=True)

    def mark_deleted(self, ids: Sequence[int]) -> None:
        ids = [int(i) for i in ids]
        if ids:
            self._live_count = None
            self._client.delete(self.collection, ids=ids)

    def sync(self, live: np.ndarray, deleted: np.ndarray, fetch: RowFetcher) -> None:
        self._live_count = None
        if len(live):
            ids, vectors, labels = fetch(np.asarray(live, dtype=np.int64))
            self._insert(self.collection, ids, vectors, labels, upsert=True)  # current vector and label, idempotent
        self.mark_deleted(deleted)

    # --- search ---------------------------------------------------------------------------------------------------
    def _filter(self, allowed_ids: Optional[np.ndarray], labels: Optional[Sequence[str]]) -> str:
        parts = []
        if allowed_ids is not None:
            parts.append(f"id in {[int(i) for i in allowed_ids]}")
        if labels is not None:
            parts.append(f"label in [{', '.join(quote(label) for label in labels)}]")
        return " and ".join(parts)

    def _candidates(self, expression: str) -> int:
        if not expression:
            return self.live_count
        return int(self._client.query(self.collection, filter=expression, output_fields=["count(*)"])[0]["count(*)"])

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: Optional[np.ndarray] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have {queries.shape[1]} dimensions, the index {self.dim}")
        empty = np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        if (allowed_ids is not None and len(allowed_ids) == 0) or (labels is not None and len(labels) == 0):
            return empty
        expression = self._filter(allowed_ids, labels)
        k = min(int(k), self._candidates(expression), MAX_TOPK)
        if k <= 0 or len(queries) == 0:
            return empty
        ids = np.empty((len(queries), k), np.int64)
        distances = np.empty((len(queries), k), np.float32)
        for start in range(0, len(queries), 1024):
            chunk = queries[start:start + 1024]
            ids[start:start + len(chunk)], distances[start:start + len(chunk)] = self._search(chunk, k, expression)
        return ids, distances

    def _search(self, queries: np.ndarray, k: int, expression: str) -> tuple[np.ndarray, np.ndarray]:
        ef = max(self.params.ef_search, k)
        while True:
            hits = self._client.search(self.collection, data=list(queries), limit=k, filter=expression,
                                       output_fields=[], search_params={"metric_type": "IP", "params": {"ef": ef}})
            if all(len(row) >= k for row in hits) or ef >= 8 * max(self.params.ef_search, k):
                break
            ef *= 2  # fewer than k reachable under the filter: widen the beam, as for hnswlib
        if any(len(row) < k for row in hits):
            raise MilvusIndexError(f"Milvus returned fewer than {k} neighbours although {k} candidates match; "
                                   "the collection may still be loading")
        ids = np.asarray([[hit["id"] for hit in row[:k]] for row in hits], dtype=np.int64)
        scores = np.asarray([[hit["distance"] for hit in row[:k]] for row in hits], dtype=np.float32)
        return ids, np.maximum(1.0 - scores, 0)  # 1 - <q, x> rounds below 0 for twins

    # --- durability and removal -----------------------------------------------------------------------------------
    def persist(self, seq: int) -> None:
        if seq == self._applied_seq:
            return
        self._client.flush(self.collection)
        self._write_state(seq)

    def _write_state(self, seq: int) -> None:
        write_json_atomic(self.path / MILVUS_STATE, {"collection": self.collection, "applied_seq": seq,
                                                   "embedded": self.embedded, "uri": self.server_uri})
        self._applied_seq = seq

    def purge(self, ids: Sequence[int], originals: np.ndarray, seq: int) -> list[Evidence]:
        ids = [int(i) for i in ids]
        self.mark_deleted(ids)
        self._client.flush(self.collection)
        job = self._client.compact(self.collection)
        state = self._wait_for_compaction(job)
        held = self._held(ids)
        evidence = [Evidence(
            "index (milvus): deleted and compacted",
            state == "Completed" and not held,
            f"{len(ids)} row(s) deleted from collection {self.collection} and flushed; compaction {job} "
            f"{'completed' if state == 'Completed' else 'ended ' + repr(state)}; a query by id now finds "
            + ("none of them" if not held else f"{len(held)} of them: {[r['id'] for r in held][:10]}"),
        )]
        if self.embedded:
            evidence.append(self._rebuild_without(ids, originals))
        else:
            evidence.append(Evidence(
                "index (milvus): server storage",
                True,
                f"not verifiable from here: the server at {self.server_uri} keeps deleted rows in segments written "
                "within its retention window (common.retentionDuration) until a later compaction, and the files "
                "compaction replaced until its garbage collection removes them (dataCoord.gc.dropTolerance); "
                "check those settings on the cluster",
            ))
        self._client.flush(self.collection)
        self._write_state(seq)
        return evidence

    def _wait_for_compaction(self, job) -> str:
        deadline = time.monotonic() + COMPACTION_TIMEOUT_S
        while True:
            state = str(self._client.get_compaction_state(job))
            if state in ("Completed", "Failed", "Timeout") or time.monotonic() > deadline:
                return state
            time.sleep(0.5)

    def _rebuild_without(self, ids: Sequence[int], originals: np.ndarray) -> Evidence:
        """Embedded milvus-lite: copy the live rows but `ids` from the store into a new collection, swap it in under
        the old name and drop the old one (its folder goes with it)."""
        spare, retired = self.collection + "_rebuild", self.collection + "_retired"
        self._drop_leftovers()
        self._create_collection(spare)
        live, _ = self._store.embeddings()
        live = live[~np.isin(live, np.asarray(ids, dtype=np.int64))]
        fetch = store_rows(self._store)
        for start in range(0, len(live), 65536):
            found, vectors, labels = fetch(live[start:start + 65536])
            self._insert(spare, found, vectors, labels, upsert=False)
        self._client.flush(spare)
        # a crash between these steps leaves the name missing: the next open rebuilds it from the database
        self._client.rename_collection(self.collection, retired)
        self._client.rename_collection(spare, self.collection)
        self._client.load_collection(self.collection)
        old_folder = self._collection_folder(retired)
        self._client.drop_collection(retired)
        self._live_count = None
        gone = old_folder is not None and not old_folder.exists()
        files, holding = lite_rows_holding(self.lite_path, ids, originals)
        return Evidence(
            "index (milvus): embedded files rewritten",
            gone and not holding and self.live_count == len(live),
            f"milvus-lite does not compact on request, so the collection was rebuilt from the database without the "
            f"purged rows ({len(live)} live rows copied, {self.live_count} held) and the old one dropped (its folder "
            + ("is gone" if gone else f"was not found gone: {old_folder}") + f"); {files} data and log files of "
            "milvus-lite read row by row (their compression hides bytes from the byte scan): "
            + ("none holds a purged id or vector" if not holding else
               "purged rows STILL in " + ", ".join(f"{name} ({n})" for name, n in holding[:5])),
        )

    def _collection_folder(self, name: str) -> Optional[Path]:
        matches = [p for p in self.lite_path.rglob(name) if p.is_dir()]
        return matches[0] if matches else None

    def resident_bytes(self) -> int:
        return 0  # held by the Milvus server, or by milvus-lite, whose footprint it does not report

    def describe(self) -> dict:
        return {"name": self.name, "location": self.server_uri or str(self.lite_path),
                "collection": self.collection, "live": self.live_count}

    def set_search_ef(self, ef: int) -> None:
        self.params = replace(self.params, ef_search=int(ef))

    def close(self) -> None:
        try:
            self._client.close()
        finally:
            if self.embedded:
                release_lite(self.lite_path)


def lite_rows_holding(folder: Path, ids: Sequence[int], vectors: np.ndarray) -> tuple[int, list[tuple[str, int]]]:
    """Read every Parquet data/delta file and Arrow log of a milvus-lite folder: (files read, [(file, rows holding
    one of `ids` or one of `vectors` byte for byte)]). Snappy-compressed Parquet hides most vectors from a byte scan.
    Delta files list deleted ids only (no vectors): they are not counted as holding data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted_ids = np.asarray([int(i) for i in ids], dtype=np.int64)
    wanted = {np.asarray(v, dtype=np.float32).tobytes() for v in vectors}
    read, holding = 0, []
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix not in (".parquet", ".arrow") or not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
        else:
            with pa.OSFile(str(path), "rb") as source:
                try:
                    table = pa.ipc.open_stream(source).read_all()
                except pa.ArrowInvalid:
                    continue  # an empty log
        read += 1
        if "vector" not in table.column_names:
            continue  # a delta file or delete log: ids of deleted rows, no data
        rows = np.asarray(table.column("vector").combine_chunks().flatten(), dtype=np.float32)
        rows = rows.reshape(table.num_rows, -1) if table.num_rows else rows.reshape(0, 1)
        hits = np.isin(np.asarray(table.column("id"), dtype=np.int64), wanted_ids)
        hits |= np.fromiter((row.tobytes() in wanted for row in rows), dtype=bool, count=len(rows))
        if hits.any():
            holding.append((str(path.relative_to(folder)), int(hits.sum())))
    return read, holding


def release_lite(path: Path) -> None:
    """Stop this process's milvus-lite server for `path` and release its folder lock (another process may open it)."""
    from milvus_lite import server_manager_instance

    server_manager_instance.release_server(str(path))


def drop(path: Path, record: dict, index_uri: Optional[str] = None) -> None:
    """Remove a memory's Milvus collection (after `vmem migrate` away from Milvus): dropped on a server, the folder
    deleted when embedded."""
    uri = check_uri(index_uri if index_uri else record.get("uri"))
    if uri is None:
        release_lite(path / MILVUS_LITE_DIR / LITE_NAME)
    else:
        client = MilvusClient(uri, token=os.environ.get(TOKEN_ENV, ""))
        try:
            if client.has_collection(record["collection"]):
                client.drop_collection(record["collection"])
        finally:
            client.close()
    (path / MILVUS_STATE).unlink(missing_ok=True)


# --- the registry's hooks (vmem_core.backends.registry) -------------------------------------------------------------
def open_index(path: Path, record: dict, dim: int, params: "IndexParams", store: "Store", label_lookup,
               index_uri: Optional[str] = None) -> MilvusBackend:
    return MilvusBackend.open(path, record, dim, params, store, index_uri=index_uri)


def build_index(path: Path, record: dict, old: dict, dim: int, params: "IndexParams", store: "Store",
                label_lookup) -> MilvusBackend:
    if not record.get("uri") and old["name"] != "milvus":
        shutil.rmtree(path / MILVUS_LITE_DIR, ignore_errors=True)
        (path / MILVUS_STATE).unlink(missing_ok=True)
    return MilvusBackend.open(path, record, dim, params, store)  # empty collection: filled from the store


def leave(path: Path, record: dict) -> None:
    """After `vmem migrate` away from Milvus: drop the old collection (vmem_core.backends.migrate)."""
    drop(path, record)
