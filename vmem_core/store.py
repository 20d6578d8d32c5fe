"""The DuckDB database of a memory: exemplar rows (embeddings included) and a change counter.

The database is the source of truth: the hnswlib index can always be rebuilt from it. Every write runs in one
transaction that bumps `seq` and stamps the rows it touched with it (`changed_seq`), so an index snapshot that records
the last seq it includes can be brought up to date by replaying the rows changed since.
"""

from __future__ import annotations

import datetime as dt
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import MemoryFormatError, MemoryLockedError, UnknownIdError

SCHEMA_VERSION = 1


@dataclass
class NewExemplars:
    """Rows to insert; ids are assigned by the store."""

    labels: Sequence[str]
    sources: Sequence[str]
    sha256: Sequence[str]
    thumbnails: Sequence[Optional[bytes]]
    embeddings: np.ndarray  # (n, dim) float32 unit rows

    def __len__(self) -> int:
        return len(self.labels)


class Store:
    """One DuckDB file. Writes are serialised by a lock; reads use a cursor per call, so threads may share a Store."""

    def __init__(self, path: Path, dim: int, encoder_identity: str) -> None:
        self.path = Path(path)
        self.dim = dim
        self.encoder_identity = encoder_identity
        try:
            self._con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise MemoryLockedError(
                    f"memory database {self.path} is open in another process (for example the vmem app or another "
                    "vmem command); close that process, or run this command in it, and try again"
                ) from None
            raise MemoryFormatError(f"memory database {self.path} cannot be opened: {exc}") from None
        except duckdb.Error as exc:
            raise MemoryFormatError(f"memory database {self.path} cannot be opened: {exc}") from None
        self._write_lock = threading.Lock()
        self._create_schema()

    def _create_schema(self) -> None:
        self._con.execute(
            f"""
            CREATE TABLE IF NOT EXISTS exemplars (
                id BIGINT PRIMARY KEY,
                label VARCHAR NOT NULL,
                source VARCHAR NOT NULL,
                sha256 VARCHAR NOT NULL,
                thumbnail BLOB,
                added_at TIMESTAMP NOT NULL,
                encoder VARCHAR NOT NULL,
                embedding FLOAT[{self.dim}] NOT NULL,
                deleted_at TIMESTAMP,
                changed_seq BIGINT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
            CREATE TABLE IF NOT EXISTS label_changes (
                exemplar_id BIGINT NOT NULL,
                old_label VARCHAR NOT NULL,
                new_label VARCHAR NOT NULL,
                changed_at TIMESTAMP NOT NULL,
                seq BIGINT NOT NULL
            );
            INSERT INTO meta VALUES ('seq', 0), ('next_id', 0), ('schema_version', {SCHEMA_VERSION})
                ON CONFLICT DO NOTHING;
            """
        )

    def close(self) -> None:
        self._con.close()

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = self._con.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    @contextmanager
    def _transaction(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
        """A write transaction with the next seq; the seq is only consumed if the transaction commits."""
        with self._write_lock, self._cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                seq = cur.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value").fetchone()[0]
                yield cur, seq
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    # --- writes ---------------------------------------------------------------------------------------------------
    def insert(self, rows: NewExemplars) -> tuple[np.ndarray, int]:
        """Insert rows in one transaction; returns (their new ids, the seq of the change)."""
        n = len(rows)
        embeddings = np.ascontiguousarray(rows.embeddings, dtype=np.float32)
        if embeddings.shape != (n, self.dim):
            raise ValueError(f"embeddings have shape {embeddings.shape}, expected ({n}, {self.dim})")
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        with self._transaction() as (cur, seq):
            first = cur.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()[0]
            cur.execute(f"UPDATE meta SET value = value + {int(n)} WHERE key = 'next_id'")
            ids = np.arange(first, first + n, dtype=np.int64)
            batch = pa.table(
                {
                    "id": pa.array(ids),
                    "label": pa.array([str(x) for x in rows.labels], pa.string()),
                    "source": pa.array([str(x) for x in rows.sources], pa.string()),
                    "sha256": pa.array(list(rows.sha256), pa.string()),
                    "thumbnail": pa.array(list(rows.thumbnails), pa.binary()),
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), self.dim),
                }
            )
            cur.register("new_rows", batch)
            try:
                cur.execute(
                    f"""INSERT INTO exemplars
                        SELECT id, label, source, sha256, thumbnail, ?::TIMESTAMP, ?, embedding::FLOAT[{self.dim}],
                               NULL, ?
                        FROM new_rows""",
                    [now, self.encoder_identity, seq],
                )
            finally:
                cur.unregister("new_rows")
        return ids, seq

    def set_deleted(self, ids: Sequence[int], deleted: bool) -> int:
        """Tombstone (deleted=True) or restore exemplars; every id must exist and be in the opposite state."""
        ids = [int(i) for i in ids]
        with self._transaction() as (cur, seq):
            found = dict(
                cur.execute(
                    "SELECT id, deleted_at IS NOT NULL FROM exemplars WHERE id IN (SELECT UNNEST(?::BIGINT[]))", [ids]
                ).fetchall()
            )
            missing = [i for i in ids if i not in found]
            if missing:
                raise UnknownIdError(f"unknown exemplar id(s): {', '.join(map(str, missing[:20]))}")
            wrong = [i for i in ids if found[i] == deleted]
            if wrong:
                state = "already deleted" if deleted else "not deleted"
                raise UnknownIdError(f"exemplar id(s) {state}: {', '.join(map(str, wrong[:20]))}")
            cur.execute(
                "UPDATE exemplars SET deleted_at = ?, changed_seq = ? WHERE id IN (SELECT UNNEST(?::BIGINT[]))",
                [dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) if deleted else None, seq, ids],
            )
        return seq

    def relabel(self, ids: Sequence[int], label: str) -> int:
        """Change labels, recording each change (old label, new label, time) in `label_changes`."""
        ids = [int(i) for i in ids]
        with self._transaction() as (cur, seq):
            found = {r[0] for r in cur.execute(
                "SELECT id FROM exemplars WHERE id IN (SELECT UNNEST(?::BIGINT[]))", [ids]).fetchall()}
            missing = [i for i in ids if i not in found]
            if missing:
                raise UnknownIdError(f"unknown exemplar id(s): {', '.join(map(str, missing[:20]))}")
            cur.execute(
                """INSERT INTO label_changes
                   SELECT id, label, ?, ?, ? FROM exemplars
                   WHERE id IN (SELECT UNNEST(?::BIGINT[])) AND label <> ?""",
                [str(label), dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), seq, ids, str(label)],
            )
            cur.execute(
                "UPDATE exemplars SET label = ?, changed_seq = ? WHERE id IN (SELECT UNNEST(?::BIGINT[]))",
                [str(label), seq, ids],
            )
        return seq

    # --- reads ----------------------------------------------------------------------------------------------------
    def seq(self) -> int:
        with self._cursor() as cur:
            return cur.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]

    def live_labels(self) -> tuple[np.ndarray, list[str]]:
        """(ids, labels) of every live exemplar, ordered by id."""
        with self._cursor() as cur:
            table = cur.sql("SELECT id, label FROM exemplars WHERE deleted_at IS NULL ORDER BY id").to_arrow_table()
        return table.column("id").to_numpy().astype(np.int64), table.column("label").to_pylist()

    def deleted_ids(self) -> np.ndarray:
        with self._cursor() as cur:
            rows = cur.execute("SELECT id FROM exemplars WHERE deleted_at IS NOT NULL").fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def embeddings(self, where: str = "deleted_at IS NULL", params: Sequence = ()) -> tuple[np.ndarray, np.ndarray]:
        """(ids, (n, dim) float32 embeddings) of the rows matching a fixed SQL condition with bound parameters."""
        with self._cursor() as cur:
            table = cur.sql(
                f"SELECT id, embedding FROM exemplars WHERE {where} ORDER BY id", params=list(params) or None
            ).to_arrow_table()
        ids = table.column("id").to_numpy().astype(np.int64)
        flat = table.column("embedding").combine_chunks().flatten().to_numpy()
        return ids, np.asarray(flat, dtype=np.float32).reshape(len(ids), self.dim)

    def changed_since(self, seq: int) -> tuple[np.ndarray, np.ndarray]:
        """(live ids, deleted ids) among the rows changed after `seq`."""
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT id, deleted_at IS NOT NULL FROM exemplars WHERE changed_seq > ?", [seq]
            ).fetchall()
        live = np.asarray([r[0] for r in rows if not r[1]], dtype=np.int64)
        deleted = np.asarray([r[0] for r in rows if r[1]], dtype=np.int64)
        return live, deleted

    def rows(self, ids: Sequence[int]) -> pd.DataFrame:
        """Metadata (no embedding) of the given ids, in the given order; unknown ids are absent."""
        ids = [int(i) for i in ids]
        with self._cursor() as cur:
            frame = cur.execute(
                """SELECT id, label, source, sha256, thumbnail, added_at, encoder, deleted_at
                   FROM exemplars WHERE id IN (SELECT UNNEST(?::BIGINT[]))""",
                [ids],
            ).df()
        return frame.set_index("id").reindex([i for i in ids if i in set(frame["id"])]).reset_index()

    @staticmethod
    def _browse_filter(label, source, added_from, added_to, include_deleted) -> tuple[str, list]:
        where = """(? IS NULL OR label = ?) AND (? IS NULL OR contains(lower(source), lower(?)))
                   AND (? IS NULL OR added_at >= ?) AND (? IS NULL OR added_at < ?)
                   AND (? OR deleted_at IS NULL)"""
        return where, [label, label, source, source, added_from, added_from, added_to, added_to, include_deleted]

    def browse(
        self,
        label: Optional[str] = None,
        source: Optional[str] = None,
        added_from: Optional[dt.datetime] = None,
        added_to: Optional[dt.datetime] = None,
        include_deleted: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> pd.DataFrame:
        """A page of exemplar metadata, filtered by label, source substring and time added (bound parameters only)."""
        where, params = self._browse_filter(label, source, added_from, added_to, include_deleted)
        with self._cursor() as cur:
            return cur.execute(
                f"""SELECT id, label, source, sha256, thumbnail, added_at, deleted_at FROM exemplars
                    WHERE {where} ORDER BY id LIMIT ? OFFSET ?""",
                params + [int(limit), int(offset)],
            ).df()

    def count_matching(
        self,
        label: Optional[str] = None,
        source: Optional[str] = None,
        added_from: Optional[dt.datetime] = None,
        added_to: Optional[dt.datetime] = None,
        include_deleted: bool = False,
    ) -> int:
        where, params = self._browse_filter(label, source, added_from, added_to, include_deleted)
        with self._cursor() as cur:
            return int(cur.execute(f"SELECT count(*) FROM exemplars WHERE {where}", params).fetchone()[0])

    def label_changes(self, limit: int = 100) -> pd.DataFrame:
        """The most recent label changes, newest first."""
        with self._cursor() as cur:
            return cur.execute(
                "SELECT exemplar_id, old_label, new_label, changed_at FROM label_changes ORDER BY seq DESC, exemplar_id LIMIT ?",
                [int(limit)],
            ).df()

    def label_counts(self) -> dict[str, int]:
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT label, count(*) FROM exemplars WHERE deleted_at IS NULL GROUP BY label ORDER BY label"
            ).fetchall()
        return {label: int(count) for label, count in rows}

    def counts(self) -> dict[str, int]:
        with self._cursor() as cur:
            live, deleted = cur.execute(
                "SELECT count(*) FILTER (deleted_at IS NULL), count(*) FILTER (deleted_at IS NOT NULL) FROM exemplars"
            ).fetchone()
        return {"live": int(live), "deleted": int(deleted)}

    def sources(self) -> set[str]:
        with self._cursor() as cur:
            return {r[0] for r in cur.execute("SELECT DISTINCT source FROM exemplars").fetchall()}
