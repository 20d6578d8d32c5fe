"""The store of a memory: a DuckDB database of exemplar rows and changes, and the vault of their bytes.

Together they are the source of truth: the hnswlib index can always be rebuilt from them. Rows hold the metadata
(label, source, image sha256, time, state) and where the exemplar's thumbnail lies in the vault; the embedding of id i
is record i of the vault's vector file. Every write runs in one transaction that bumps `seq` and stamps the rows it
touched with it (`changed_seq`), so an index snapshot that records the last seq it includes can be brought up to date
by replaying the rows changed since.

The schema (creation, format checks, migration, vault trim) is `vmem_core.storage.schema`; the read queries are
`vmem_core.storage.queries`: both are mixins of `Store`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import duckdb
import numpy as np

from ..errors import MemoryFormatError, MemoryLockedError, ReadOnlyError, StorageError, UnknownIdError
from .atomic import fsync_dir, fsync_file
from .check import check_dimension
from .layout import HNSW_DIR
from .audit import (GENESIS, AuditEntry, Verification, canonical, check_action, default_actor, entry_hash,
                    id_summary, label_runs, verify)
from .locks import ReadWriteLock
from .queries import StoreQueries
from .schema import SCHEMA_VERSION, StoreSchema  # noqa: F401  (SCHEMA_VERSION: re-exported)
from .vault import Vault

if TYPE_CHECKING:  # imported by the writes that build a batch: a reading process never needs it
    import pyarrow as pa

SPACE_MARGIN = 1 << 20  # bytes: DuckDB's own blocks and the write-ahead log of a purge's delete
log = logging.getLogger(__name__)


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


class Store(StoreSchema, StoreQueries):
    """One DuckDB file. Writes are serialised by a lock; reads use a cursor per call, so threads may share a Store."""

    def __init__(self, path: Path, dim: int, encoder_identity: str, create: bool = False,
                 read_only: bool = False) -> None:
        """Open the memory's database; `create`: a new memory (the file must not exist yet); `read_only`: hold no
        write handle (DuckDB read-only, vault files opened for reading) and refuse every change.

        Opening reads before it writes: a missing database, someone else's DuckDB file, a vault shorter than the rows
        need or a dimension that disagrees with the one recorded is refused (MemoryFormatError naming the file)
        before any byte is written, and the vault is never trimmed on open (a write trims what it owns).
        """
        self.path = Path(path)
        self.dim = dim
        self.encoder_identity = encoder_identity
        self.read_only = read_only
        self._actor = default_actor()
        self._thread_actor = threading.local()  # a command run for another process names its own actor
        # readers share the connection; a purge swaps the database file under the write side
        self._connection_lock = ReadWriteLock()
        if not create and not self.path.exists():
            raise MemoryFormatError(
                f"{self.path} is missing: it holds the memory's labels and ids, which the vectors beside it cannot "
                "give back; copy memory.duckdb back from where this memory came from (vmem does not create an empty "
                "database over existing vectors)")
        if create and self.path.exists():
            raise MemoryFormatError(f"{self.path} already exists; open the memory instead of creating it")
        self._con = self._connect()
        self._write_lock = threading.Lock()
        self._vault_trimmed = False
        self._audit_head: Optional[tuple[int, str]] = None  # (seq, hash) of the last committed audit entry
        self._pending_audit: Optional[tuple[int, str]] = None
        try:
            if not create:
                self._check_is_vmem_database()
            if not read_only:
                self._create_schema()
            # The change counter: every write transaction logs one audit entry, whose head row also records the
            # counter (one statement fewer per change than a separate counter row). Older memories kept it in `meta`.
            self._seq = int(self._con.execute(
                "SELECT greatest((SELECT value FROM meta WHERE key = 'seq'), "
                "(SELECT max(change_seq) FROM audit_head))" if self._has_column("audit_head", "change_seq") else
                "SELECT value FROM meta WHERE key = 'seq'"
            ).fetchone()[0] or 0)
            recorded_dim = self._meta("dim")
            check_dimension(self.path.parent, dim, recorded_dim)
            next_id = int(self._meta("next_id") or 0)
            embedded = self._has_column("exemplars", "embedding")  # vmem 0.1's first format: no vault yet
            if read_only and embedded:
                raise MemoryFormatError(
                    f"{self.path}: a memory of vmem 0.1's first format, which a read-only open cannot upgrade; "
                    "run one writing command on it first (e.g. `vmem tune MEMORY --index-ef 128`)")
            self.vault = Vault(self.path.parent, dim, create=create or next_id == 0 or embedded, read_only=read_only)
            if not embedded:
                self._check_vault(next_id)
            if not read_only:
                if recorded_dim is None:  # from now on the database records the dimension its vectors have
                    self._con.execute("INSERT INTO meta VALUES ('dim', ?) ON CONFLICT DO NOTHING", [int(dim)])
                self._migrate_embedded_bytes()
        except duckdb.Error as exc:
            self._con.close()
            raise MemoryFormatError(f"{self.path} is damaged ({_first_line(exc)}); restore it from a copy") from None
        except BaseException:
            self._con.close()
            raise

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError(f"memory {self.path.parent} is open read-only: this handle makes no changes; open it "
                                "without read_only to change it")

    @property
    def actor(self) -> str:
        """Who the audit log names for changes made by this thread."""
        return getattr(self._thread_actor, "value", None) or self._actor

    @actor.setter
    def actor(self, value: str) -> None:
        self._actor = str(value)

    @contextmanager
    def acting_as(self, actor: str) -> Iterator[None]:
        """Name `actor` for the changes this thread makes inside the block (other threads keep theirs)."""
        previous = getattr(self._thread_actor, "value", None)
        self._thread_actor.value = str(actor)
        try:
            yield
        finally:
            self._thread_actor.value = previous

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.ConnectionException as exc:
            if self.read_only and "different configuration" in str(exc):
                # this process holds the database for writing already (DuckDB shares one instance per file and
                # process): share it; this handle still refuses every change (`_writable`)
                return duckdb.connect(str(self.path))
            raise MemoryLockedError(
                f"memory database {self.path} is open in this process in another mode ({_first_line(exc)}); close "
                "the other handle first") from None
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise MemoryLockedError(
                    f"memory database {self.path} is open in another process (for example the vmem app or another "
                    "vmem command); close that process, or run this command in it, and try again"
                ) from None
            raise MemoryFormatError(f"{self.path} cannot be opened ({_first_line(exc)}); restore it from a copy") \
                from None
        except duckdb.Error as exc:
            raise MemoryFormatError(f"{self.path} cannot be opened ({_first_line(exc)}); restore it from a copy") \
                from None

    def close(self) -> None:
        """Close the database. A checkpoint the disk refuses (full) is no failure: every committed change is in the
        write-ahead log, which the next open replays."""
        try:
            self._con.close()
        except duckdb.Error as exc:
            log.warning("%s: closing could not checkpoint (%s); the write-ahead log keeps every committed change",
                        self.path, _first_line(exc))

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._connection_lock.read():
            cursor = self._con.cursor()
            try:
                yield cursor
            except (duckdb.IOException, duckdb.InternalException, duckdb.FatalException) as exc:
                # a block that cannot be read (a truncated or damaged file) shows only when a query reaches it
                raise MemoryFormatError(f"{self.path} could not be read ({_first_line(exc)}); it is damaged: restore "
                                        "it from a copy") from None
            finally:
                cursor.close()

    @contextmanager
    def _transaction(self, locked: bool = False) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
        """A write transaction with the next seq; the seq is only consumed if the transaction commits.
        `locked`: the caller already holds the write lock."""
        self._writable()
        if not self._vault_trimmed:
            try:
                self._trim_vault()  # the first write of this handle cuts what a killed add left (never an open)
            except OSError as exc:
                raise _not_written(self.path.parent, exc, "the change was not made") from None
        with (contextlib.nullcontext() if locked else self._write_lock), self._cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            self._pending_audit = None
            seq = self._transaction_seq = self._seq + 1  # one writer (the write lock, DuckDB's file lock)
            try:
                yield cur, seq
                if self._pending_audit is None:  # no audit entry carried the counter: store it directly
                    cur.execute("UPDATE meta SET value = ? WHERE key = 'seq'", [seq])
                cur.execute("COMMIT")
            except BaseException as exc:
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the commit itself failed: DuckDB has rolled back already
                if isinstance(exc, (duckdb.IOException, duckdb.FatalException, duckdb.TransactionException,
                                    OSError)):
                    # a write the disk refused (full, read-only): nothing of this change was committed
                    raise StorageError(f"could not write {self.path} ({_first_line(exc)}); the change was not "
                                       "made: free some space (or make the folder writable) and try again") \
                        from None
                raise
            self._seq = seq
            if self._pending_audit is not None:  # the chain's head moves only once the entry is committed
                self._audit_head = self._pending_audit

    def _audit(self, cur: duckdb.DuckDBPyConnection, action: str, details: dict) -> AuditEntry:
        """Append a hash-chained audit entry inside the caller's transaction."""
        check_action(action)  # before anything is written: a refused entry leaves the transaction untouched
        if self._audit_head is None:  # one process writes at a time (DuckDB's lock), so the head can be cached
            self._audit_head = cur.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone() \
                or (0, GENESIS)
        last_seq, prev = self._pending_audit or self._audit_head
        seq = last_seq + 1
        at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
        text = canonical(details)
        entry = AuditEntry(seq, at, self.actor, action, text, prev, entry_hash(prev, seq, at, self.actor, action, text))
        cur.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [entry.seq, entry.at, entry.actor, entry.action, entry.details, entry.prev_hash, entry.hash])
        # the head, kept apart from the log, lets verify notice entries cut from the end
        cur.execute("UPDATE audit_head SET seq = ?, hash = ?, change_seq = ?",
                    [entry.seq, entry.hash, self._transaction_seq])
        self._pending_audit = (entry.seq, entry.hash)
        return entry

    def log_event(self, action: str, details: dict) -> None:
        """An audit entry for a change that touches no exemplar row (e.g. the memory's creation)."""
        with self._transaction() as (cur, _):
            self._audit(cur, action, details)

    def audit_head(self) -> Optional[tuple[int, str]]:
        """(seq, hash) of the last entry ever written, recorded beside the log."""
        with self._cursor() as cur:
            row = cur.execute("SELECT seq, hash FROM audit_head").fetchone()
        return (int(row[0]), str(row[1])) if row and row[0] else None

    def verify_audit(self) -> Verification:
        """The audit log's chain, its head, and that replaying it gives every row's state and label (`verify`)."""
        with self._cursor() as cur:
            rows = cur.execute("SELECT id, deleted_at IS NULL, label FROM exemplars").fetchall()
        return verify(self.audit_entries(), self.audit_head(), {int(i): (bool(live), label) for i, live, label in rows})

    def audit_entries(self) -> list[AuditEntry]:
        with self._cursor() as cur:
            rows = cur.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()
        return [AuditEntry(*row) for row in rows]

    # --- writes ---------------------------------------------------------------------------------------------------
    def insert(self, rows: NewExemplars) -> tuple[np.ndarray, int]:
        """Insert rows: their bytes into the vault first (fsynced), then the rows in one transaction; returns (their
        new ids, the seq of the change)."""
        import hashlib

        n = len(rows)
        embeddings = np.ascontiguousarray(rows.embeddings, dtype=np.float32)
        if embeddings.shape != (n, self.dim):
            raise ValueError(f"embeddings have shape {embeddings.shape}, expected ({n}, {self.dim})")
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        thumbnail_hashes = [hashlib.sha256(t).hexdigest() if t else None for t in rows.thumbnails]
        import pyarrow as pa

        with self._write_lock:  # one writer: the ids read here are the ids the transaction will take
            with self._cursor() as cur:
                first = cur.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()[0]
            ids = np.arange(first, first + n, dtype=np.int64)
            columns = {  # built and type-checked before any byte is written
                "id": pa.array(ids),
                "label": pa.array([str(x) for x in rows.labels], pa.string()),
                "source": pa.array([str(x) for x in rows.sources], pa.string()),
                "sha256": pa.array(list(rows.sha256), pa.string()),
                "thumb_sha256": pa.array(thumbnail_hashes, pa.string()),
            }
            self._writable()
            try:
                self._trim_vault()
            except OSError as exc:
                raise _not_written(self.path.parent, exc, "nothing was added") from None
            _, thumbnails_end = self.vault.sizes()
            try:
                self.vault.write_vectors(first, embeddings)
                places = self.vault.append_thumbnails(list(rows.thumbnails))
                batch = pa.table({**columns, "thumb_offset": pa.array([p[0] for p in places], pa.int64()),
                                  "thumb_len": pa.array([p[1] for p in places], pa.int32())})
                seq = self._insert_rows(batch, ids, now, n)
            except BaseException as exc:
                self.vault.trim_thumbnails(thumbnails_end)  # nothing of a failed add stays on disk
                self.vault.trim_vectors(first)
                if isinstance(exc, OSError) and not isinstance(exc, StorageError):
                    raise _not_written(self.path.parent, exc, "nothing was added") from None
                raise
        return ids, seq

    def _insert_rows(self, batch: pa.Table, ids: np.ndarray, now: dt.datetime, n: int) -> int:
        """Commit the rows of an add whose bytes are already in the vault; returns the change's seq."""
        with self._transaction(locked=True) as (cur, seq):
            cur.execute(f"UPDATE meta SET value = value + {int(n)} WHERE key = 'next_id'")
            cur.register("new_rows", batch)
            try:
                cur.execute(
                    """INSERT INTO exemplars (id, label, source, sha256, added_at, encoder, deleted_at,
                                              changed_seq, thumb_offset, thumb_len, thumb_sha256)
                       SELECT id, label, source, sha256, ?::TIMESTAMP, ?, NULL, ?, thumb_offset, thumb_len,
                              thumb_sha256
                       FROM new_rows""",
                    [now, self.encoder_identity, seq],
                )
            finally:
                cur.unregister("new_rows")
            labels: dict[str, int] = {}
            for label in batch.column("label").to_pylist():
                labels[label] = labels.get(label, 0) + 1
            self._audit(cur, "add", {"ids": id_summary(ids), "labels": labels,
                                     "label_runs": label_runs(batch.column("label").to_pylist())})
        return seq

    def set_deleted(self, ids: Sequence[int], deleted: bool) -> int:
        """Tombstone (deleted=True) or restore exemplars; every id must exist and be in the opposite state."""
        ids = sorted({int(i) for i in ids})
        with self._transaction() as (cur, seq):
            # one statement on the common path: update the rows in the expected state, then count them
            # a single id compares directly: the primary-key lookup is ~1 ms faster than a list membership
            match = "id = ?" if len(ids) == 1 else "id IN (SELECT UNNEST(?::BIGINT[]))"
            changed = cur.execute(
                f"""UPDATE exemplars SET deleted_at = ?, changed_seq = ?
                    WHERE {match} AND deleted_at IS {'NULL' if deleted else 'NOT NULL'} RETURNING id""",
                [dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) if deleted else None, seq,
                 ids[0] if len(ids) == 1 else ids],
            ).fetchall()
            if len(changed) != len(ids):
                done = {r[0] for r in changed}
                existing = {r[0] for r in cur.execute(
                    "SELECT id FROM exemplars WHERE id IN (SELECT UNNEST(?::BIGINT[]))", [ids]).fetchall()}
                missing = [i for i in ids if i not in existing]
                if missing:
                    raise UnknownIdError(f"unknown exemplar id(s): {', '.join(map(str, missing[:20]))}")
                state = "already deleted" if deleted else "not deleted"
                wrong = [i for i in ids if i not in done]
                raise UnknownIdError(f"exemplar id(s) {state}: {', '.join(map(str, wrong[:20]))}")
            self._audit(cur, "delete" if deleted else "restore", {"ids": id_summary(ids)})
        return seq

    def labels_of(self, ids: Sequence[int]) -> tuple[np.ndarray, list[str]]:
        """(ids, labels) of the given rows, ordered by id."""
        with self._cursor() as cur:
            rows = cur.execute("SELECT id, label FROM exemplars WHERE id IN (SELECT UNNEST(?::BIGINT[])) ORDER BY id",
                               [[int(i) for i in ids]]).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

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
            self._audit(cur, "relabel", {"ids": id_summary(ids), "label": str(label)})
        return seq

    def thumbnail_places(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """(offset, length) in the vault of each existing id's thumbnail."""
        with self._cursor() as cur:
            return [(int(o), int(n)) for o, n in cur.execute(
                "SELECT thumb_offset, thumb_len FROM exemplars WHERE id IN (SELECT UNNEST(?::BIGINT[])) ORDER BY id",
                [[int(i) for i in ids]]).fetchall()]

    def purge(self, ids: Sequence[int], purge_id: str, details: dict,
              thumbnail_places: Sequence[tuple[int, int]]) -> None:
        """Remove exemplars physically: zero their bytes in the vault, delete their rows and label history and log
        the purge in one transaction (once per purge_id, so a resumed purge does not log twice), then rewrite the
        database into a fresh file so that no free block keeps the rows."""
        ids = [int(i) for i in ids]
        self._writable()
        self._trim_vault()  # an add killed before its commit left bytes no row points at: none may outlive a purge
        self.vault.erase(ids, thumbnail_places)
        logged = any(entry.action == "purge" and entry.payload().get("purge_id") == purge_id
                     for entry in self.audit_entries())
        if not logged:
            with self._transaction() as (cur, seq):
                cur.execute("DELETE FROM exemplars WHERE id IN (SELECT UNNEST(?::BIGINT[]))", [ids])
                cur.execute("DELETE FROM label_changes WHERE exemplar_id IN (SELECT UNNEST(?::BIGINT[]))", [ids])
                self._audit(cur, "purge", {**details, "purge_id": purge_id})
        self.rewrite()

    def check_space_for_purge(self, journal_bytes: int) -> None:
        """Raise StorageError, before anything is written, unless the folder has room for what a purge writes: its
        journal, the database's rewritten copy beside the old one (and the write-ahead log of the delete), and a
        fresh index snapshot. A purge stopped by a full disk halfway would stay pending until space is freed."""
        folder = self.path.parent
        database = sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + ".wal"))
                       if p.exists())
        index = sum(p.stat().st_size for p in (folder / HNSW_DIR).glob("*") if p.is_file()) \
            if (folder / HNSW_DIR).is_dir() else 0
        needed = journal_bytes + database + index + SPACE_MARGIN
        free = shutil.disk_usage(folder).free
        if free < needed:
            raise StorageError(f"a purge needs about {needed / 2**20:.1f} MiB free in {folder} (it rewrites the "
                               f"database), and {free / 2**20:.1f} MiB are: free some space and try again; nothing "
                               "was changed")

    def rewrite(self) -> None:
        """Copy every table into a new file and swap it in atomically (readers wait; DELETE and VACUUM alone leave
        deleted values' bytes in the file)."""
        self._writable()
        fresh = self.path.with_name(self.path.name + ".rewrite")
        leftovers = (fresh, fresh.with_name(fresh.name + ".wal"))
        with self._write_lock, self._connection_lock.write():  # the same order as every writer: no deadlock
            for leftover in leftovers:
                leftover.unlink(missing_ok=True)
            name = self._con.execute("SELECT current_database()").fetchone()[0]
            quoted = str(fresh).replace("'", "''")
            try:
                self._con.execute(f"ATTACH '{quoted}' AS vmem_fresh")
                try:
                    self._con.execute(f'COPY FROM DATABASE "{name}" TO vmem_fresh')
                finally:
                    self._con.execute("DETACH vmem_fresh")
                self._con.close()  # checkpoints and removes the old write-ahead log
                fsync_file(fresh)
                self.path.with_name(self.path.name + ".wal").unlink(missing_ok=True)
                os.replace(fresh, self.path)
                fsync_dir(self.path.parent)
            except (duckdb.Error, OSError) as exc:
                # a full disk midway: the old database (or, once renamed, the whole copy) stays the memory, and no
                # half-written copy stays beside it
                for leftover in leftovers:
                    leftover.unlink(missing_ok=True)
                with contextlib.suppress(duckdb.Error):
                    self._con.close()
                self._con = self._connect()  # the old file, or (swapped) the complete new one
                raise StorageError(f"could not rewrite {self.path} ({_first_line(exc)}); the database is unchanged "
                                   "by the rewrite: free some space and try again") from None
            self._con = self._connect()


def _first_line(exc: BaseException) -> str:
    """A library error's first line, for a one-line message (DuckDB's run to many)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _not_written(folder: Path, exc: OSError, outcome: str) -> StorageError:
    """A failed write as one line: which file, why (a full disk, most often), that nothing changed, what to do."""
    where = f" {exc.filename}" if getattr(exc, "filename", None) else f" in {folder}"
    return StorageError(f"could not write{where} ({exc.strerror or exc}); {outcome}: free some space (or make the "
                        "folder writable) and try again")
