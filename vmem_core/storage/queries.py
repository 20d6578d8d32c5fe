"""The store's read queries: ids, labels, embeddings, changes since a seq, rows, the browse page and the counts.

`StoreQueries` is a mixin of `vmem_core.storage.store.Store`: every query runs on the store's `_cursor()` (a cursor
per call under the connection's read lock) and reads bytes from its vault; it imports no database driver itself.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # DuckDB's .df() imports pandas where a query asks for a frame: ~0.7 s a CLI process rarely needs
    import pandas as pd


class StoreQueries:
    """The reads of a `Store`."""

    def thumbnails_kept_elsewhere(self, thumbnails: Sequence[bytes], excluding: Sequence[int]) -> set[bytes]:
        """Those of `thumbnails` that a row outside `excluding` also holds (the same small image stored twice)."""
        import hashlib

        by_hash = {hashlib.sha256(t).hexdigest(): bytes(t) for t in thumbnails if t}
        if not by_hash:
            return set()
        with self._cursor() as cur:
            rows = cur.execute(
                """SELECT DISTINCT thumb_sha256 FROM exemplars
                   WHERE thumb_sha256 IN (SELECT UNNEST(?::VARCHAR[])) AND id NOT IN (SELECT UNNEST(?::BIGINT[]))""",
                [list(by_hash), [int(i) for i in excluding]],
            ).fetchall()
        return {by_hash[r[0]] for r in rows}

    def plain_rows(self, ids: Sequence[int]) -> list[tuple[int, str, str, Optional[str], Optional[bytes]]]:
        """(id, label, source, image sha256, thumbnail) of the given ids, by id; unknown ids are absent. Tuples, not a
        frame: a purge reads these and would otherwise import pandas for them (~0.7 s)."""
        with self._cursor() as cur:
            rows = cur.execute(
                """SELECT id, label, source, sha256, thumb_offset, thumb_len FROM exemplars
                   WHERE id IN (SELECT UNNEST(?::BIGINT[])) ORDER BY id""", [[int(i) for i in ids]]).fetchall()
        thumbnails = self.vault.read_thumbnails([(r[4], r[5]) for r in rows])
        return [(*r[:4], t) for r, t in zip(rows, thumbnails)]

    def digest_rows(self) -> list[tuple[int, str, bool, Optional[str]]]:
        """(id, label, tombstoned, image sha256) of every row, live or tombstoned, by id: what a digest covers."""
        with self._cursor() as cur:
            return cur.execute(
                "SELECT id, label, deleted_at IS NOT NULL, sha256 FROM exemplars ORDER BY id").fetchall()

    def all_ids(self) -> np.ndarray:
        """Every id with a row, live or tombstoned (purged ids have none)."""
        with self._cursor() as cur:
            return np.asarray([r[0] for r in cur.execute("SELECT id FROM exemplars").fetchall()], dtype=np.int64)

    def seq(self) -> int:
        """The number of the last committed change."""
        return self._seq

    def live_labels(self) -> tuple[np.ndarray, list[str]]:
        """(ids, labels) of every live exemplar, ordered by id."""
        with self._cursor() as cur:
            # fetchnumpy, not arrow: pyarrow's to_numpy imports pandas (~0.5 s of a CLI process)
            columns = cur.sql("SELECT id, label FROM exemplars WHERE deleted_at IS NULL ORDER BY id").fetchnumpy()
        return np.asarray(columns["id"], dtype=np.int64), np.asarray(columns["label"]).tolist()

    def deleted_ids(self) -> np.ndarray:
        with self._cursor() as cur:
            rows = cur.execute("SELECT id FROM exemplars WHERE deleted_at IS NOT NULL").fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def embeddings(self, where: str = "deleted_at IS NULL", params: Sequence = ()) -> tuple[np.ndarray, np.ndarray]:
        """(ids, (n, dim) float32 embeddings) of the rows matching a fixed SQL condition with bound parameters."""
        with self._cursor() as cur:
            ids = np.asarray(cur.sql(
                f"SELECT id FROM exemplars WHERE {where} ORDER BY id", params=list(params) or None
            ).fetchnumpy()["id"], dtype=np.int64)
        return ids, self.vault.read_vectors(ids)

    def changed_since(self, seq: int) -> tuple[np.ndarray, np.ndarray]:
        """(live ids, deleted ids) among the rows changed after `seq`."""
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT id, deleted_at IS NOT NULL FROM exemplars WHERE changed_seq > ?", [seq]
            ).fetchall()
        live = np.asarray([r[0] for r in rows if not r[1]], dtype=np.int64)
        deleted = np.asarray([r[0] for r in rows if r[1]], dtype=np.int64)
        return live, deleted

    def _with_thumbnails(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame["thumbnail"] = self.vault.read_thumbnails(list(zip(frame.pop("thumb_offset"), frame.pop("thumb_len"))))
        return frame

    def rows(self, ids: Sequence[int]) -> pd.DataFrame:
        """Metadata and thumbnail (no embedding) of the given ids, in the given order; unknown ids are absent."""
        ids = [int(i) for i in ids]
        with self._cursor() as cur:
            frame = cur.execute(
                """SELECT id, label, source, sha256, thumb_offset, thumb_len, added_at, encoder, deleted_at
                   FROM exemplars WHERE id IN (SELECT UNNEST(?::BIGINT[]))""",
                [ids],
            ).df()
        frame = frame.set_index("id").reindex([i for i in ids if i in set(frame["id"])]).reset_index()
        return self._with_thumbnails(frame)

    def thumbnails(self, ids: Sequence[int]) -> dict[int, Optional[bytes]]:
        """{id: thumbnail PNG, or None where none was stored} of the given ids that exist (no data frame: a page's
        twenty rows read this on every rerun)."""
        with self._cursor() as cur:
            found = cur.execute("SELECT id, thumb_offset, thumb_len FROM exemplars "
                                "WHERE id IN (SELECT UNNEST(?::BIGINT[]))", [[int(i) for i in ids]]).fetchall()
        thumbs = self.vault.read_thumbnails([(offset, length) for _, offset, length in found])
        return {int(i): bytes(t) if isinstance(t, (bytes, bytearray, memoryview)) else None
                for (i, _, _), t in zip(found, thumbs)}

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
        thumbnails: bool = True,
    ) -> pd.DataFrame:
        """A page of exemplar metadata, filtered by label, source substring and time added (bound parameters only);
        `thumbnails=False` skips reading them from the vault."""
        where, params = self._browse_filter(label, source, added_from, added_to, include_deleted)
        with self._cursor() as cur:
            frame = cur.execute(
                f"""SELECT id, label, source, sha256, thumb_offset, thumb_len, added_at, deleted_at FROM exemplars
                    WHERE {where} ORDER BY id LIMIT ? OFFSET ?""",
                params + [int(limit), int(offset)],
            ).df()
        if not thumbnails:
            return frame.drop(columns=["thumb_offset", "thumb_len"])
        return self._with_thumbnails(frame)

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

