"""The store's schema: creating its tables, checking an opened file is a vmem database whose vault holds every byte
its rows point at, migrating vmem 0.1's first format, and trimming vault bytes no committed row points at.

`StoreSchema` is a mixin of `vmem_core.storage.store.Store`: it uses the store's connection (`_con`), cursor, vault and
`rewrite`, and imports no database driver itself.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import MemoryFormatError
from .audit import GENESIS

SCHEMA_VERSION = 2


class StoreSchema:
    """Schema creation, format checks, the one-time migration and the vault trim of a `Store`."""

    def _meta(self, key: str) -> Optional[int]:
        row = self._con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else int(row[0])

    def _has_table(self, name: str) -> bool:
        return bool(self._con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND database_name = current_database()",
            [name]).fetchone()[0])

    def _has_column(self, table: str, column: str) -> bool:
        return bool(self._con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = ? "
            "AND database_name = current_database()", [table, column]).fetchone()[0])

    def _check_is_vmem_database(self) -> None:
        """Someone else's DuckDB file beside a vmem.json is not adopted: its tables are not vmem's."""
        missing = [t for t in ("exemplars", "meta") if not self._has_table(t)]
        if missing:
            raise MemoryFormatError(
                f"{self.path} is not a vmem database (it has no {' or '.join(missing)} table); vmem does not adopt "
                "another program's DuckDB file: put the memory's own memory.duckdb back, or build a new memory")

    def _check_vault(self, next_id: int) -> None:
        """The vault must hold every byte the rows point at: a shorter file was truncated or is another memory's."""
        vectors, thumbnails = self.vault.sizes()
        needed = next_id * self.vault.record
        if vectors < needed:
            raise MemoryFormatError(
                f"{self.vault.vectors_path} is truncated ({vectors:,} bytes; the database's {next_id:,} ids need "
                f"{needed:,}): copy the file back from where this memory came from")
        end = self._committed_thumbnails_end() if self._has_column("exemplars", "thumb_offset") else 0
        if thumbnails < end:
            raise MemoryFormatError(
                f"{self.vault.thumbnails_path} is truncated ({thumbnails:,} bytes; the database's thumbnails end at "
                f"{end:,}): copy the file back from where this memory came from")

    def _create_schema(self) -> None:
        self._con.execute(
            f"""
            CREATE TABLE IF NOT EXISTS exemplars (
                id BIGINT PRIMARY KEY,
                label VARCHAR NOT NULL,
                source VARCHAR NOT NULL,
                sha256 VARCHAR NOT NULL,
                added_at TIMESTAMP NOT NULL,
                encoder VARCHAR NOT NULL,
                deleted_at TIMESTAMP,
                changed_seq BIGINT NOT NULL,
                thumb_offset BIGINT NOT NULL,
                thumb_len INTEGER NOT NULL,
                thumb_sha256 VARCHAR
            );
            CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
            CREATE TABLE IF NOT EXISTS label_changes (
                exemplar_id BIGINT NOT NULL,
                old_label VARCHAR NOT NULL,
                new_label VARCHAR NOT NULL,
                changed_at TIMESTAMP NOT NULL,
                seq BIGINT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS audit_log (
                seq BIGINT PRIMARY KEY,
                "at" VARCHAR NOT NULL,
                actor VARCHAR NOT NULL,
                action VARCHAR NOT NULL,
                details VARCHAR NOT NULL,
                prev_hash VARCHAR NOT NULL,
                hash VARCHAR NOT NULL
            );
            CREATE TABLE IF NOT EXISTS audit_head (seq BIGINT NOT NULL, hash VARCHAR NOT NULL);
            ALTER TABLE audit_head ADD COLUMN IF NOT EXISTS change_seq BIGINT DEFAULT 0;
            INSERT INTO audit_head SELECT 0, '{GENESIS}', 0 WHERE NOT EXISTS (SELECT 1 FROM audit_head);
            INSERT INTO meta VALUES ('seq', 0), ('next_id', 0), ('schema_version', {SCHEMA_VERSION})
                ON CONFLICT DO NOTHING;
            ALTER TABLE exemplars ADD COLUMN IF NOT EXISTS thumb_offset BIGINT DEFAULT -1;
            ALTER TABLE exemplars ADD COLUMN IF NOT EXISTS thumb_len INTEGER DEFAULT 0;
            ALTER TABLE exemplars ADD COLUMN IF NOT EXISTS thumb_sha256 VARCHAR;
            """
        )

    def _migrate_embedded_bytes(self) -> None:
        """Memories written by vmem 0.1's first schema kept embeddings and thumbnails in the database: move them
        into the vault once, then rewrite the database without them."""
        columns = {r[0] for r in self._con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'exemplars'").fetchall()}
        if "embedding" not in columns:
            return
        import hashlib

        self.vault.trim_thumbnails(0)  # a migration killed earlier left copies no committed row points at
        rows = self._con.execute("SELECT id, embedding, thumbnail FROM exemplars ORDER BY id").fetchall()
        self._con.execute("BEGIN TRANSACTION")
        try:
            for exemplar_id, embedding, thumbnail in rows:
                self.vault.write_vectors(exemplar_id, np.asarray(embedding, dtype=np.float32)[None, :])
                ((offset, length),) = self.vault.append_thumbnails([bytes(thumbnail) if thumbnail else None])
                self._con.execute(
                    "UPDATE exemplars SET thumb_offset = ?, thumb_len = ?, thumb_sha256 = ? WHERE id = ?",
                    [offset, length, hashlib.sha256(bytes(thumbnail)).hexdigest() if thumbnail else None,
                     exemplar_id])
            self._con.execute("ALTER TABLE exemplars DROP COLUMN embedding")
            self._con.execute("ALTER TABLE exemplars DROP COLUMN thumbnail")
            self._con.execute(f"UPDATE meta SET value = {SCHEMA_VERSION} WHERE key = 'schema_version'")
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self.rewrite()

    def _committed_thumbnails_end(self) -> int:
        with self._cursor() as cur:
            return int(cur.execute("SELECT coalesce(max(thumb_offset + thumb_len), 0) FROM exemplars "
                                   "WHERE thumb_offset >= 0").fetchone()[0])

    def _trim_vault(self) -> None:
        """Drop vault bytes that no committed row points at (an add killed between its vault write and commit).
        Done by the first add, never on open: an open only reads, and a write trims only what its own checks
        (`_check_vault`, `check_dimension`) have shown to be this memory's uncommitted tail."""
        if self._vault_trimmed:
            return
        with self._cursor() as cur:
            next_id = cur.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()[0]
        self.vault.trim_thumbnails(self._committed_thumbnails_end())
        self.vault.trim_vectors(int(next_id))
        self._vault_trimmed = True

