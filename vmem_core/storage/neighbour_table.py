"""The neighbour table: every live exemplar's leave-one-out nearest neighbours, kept with the memory and updated
incrementally, so that reliability v, the out-of-distribution threshold and curation never search the whole memory
on the interactive path.

A row lists an item's nearest *other* live items (ids and distances, nearest first; -1 / inf pad the rest): at
least the `need` that the memory answers from it, and up to the table's width, `SLACK` more. The table is a function
of the set of live items alone (labels do not enter it), so it is brought up to date by comparing the ids it covers
with the live ids now, whatever changed them and in which process:

- items no longer live (deleted, purged) lose their rows and are dropped from the rows that list them, whose later
  entries move up (what stays of such a row is still its nearest live items, in order, only fewer); a row is
  searched again only when a reader needs more entries than it has left (`need`: the OOD threshold reads 1,
  reliability 10, curation 50), so a purge of 200 at 60,000 (~10,000 rows listing one of them) searches nothing for
  the threshold or v;
- new items (added, restored) are searched for their own rows, and inserted into every other row they enter: a row
  changes only where a new item is nearer than its last entry. Candidates are the new item's `COVER` nearest items;
  a row not among them can only list the new item if its last distance exceeds the farthest of those, and such rows
  (few: outliers) are compared directly, so the result is the one a full recomputation finds with the same search
  (a row shortened by deletes takes a new item only if it is nearer than its last entry).
- a relabel changes no row.

Search goes through `VectorSearch` (this module imports no memory). The table records the memory's change counter it
reflects, and lives in one file in the memory folder (`layout.NEIGHBOUR_TABLE`), written on the memory's flush, never
by a read. A full build is explicit (`build`), chunked with progress, and resumable from its checkpoint file.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np

from .atomic import fsync_dir, fsync_file

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

FORMAT = 1
BUILD_CHUNK = 2048  # rows per search call in a full build; a checkpoint is written after each
# a new item's nearest `COVER x depth` items are its candidate rows; the rest are compared directly where needed
COVER = 2
# an edit that brings more new items than this (or than a tenth of the table) rebuilds instead: one batched search
# of every row is then cheaper than inserting item by item
MAX_INCREMENTAL_ADD = 4096
# a memory's table holds this many neighbours per row beyond the depth it must answer: a delete then drops the entry
# from every row that lists it and those rows move up, where without slack each of them was searched again (one
# exemplar of a 60,000 Gaussian mixture sat in 769 rows: 0.8 s of searches per delete). A row is searched again only
# once deletes have taken more than the slack from it and no add has refilled it.
SLACK = 14
# new items whose distances to the rows their search missed are taken in one pass over the stored vectors (bounds
# the (items, rows) matrix: 256 x 60,000 float32 is 61 MB)
INSERT_CHUNK = 256


class VectorSearch(Protocol):
    """What the table needs of a memory: search its live items, and read stored unit vectors."""

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (n, k'), distances (n, k')) of each vector's k nearest live items, nearest first, k' <= k."""

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """(n, dim) float32 unit vectors of the given ids, in that order."""

    def distances(self, vectors: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(len(vectors), len(ids)) `cosine_distances` between the vectors and the stored vectors of `ids` (sorted,
        unique): what a new item's insertion compares against rows its search did not reach, often thousands."""


def cosine_distances(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """1 - <q, x> for unit rows: the memory's distance (hnswlib's inner-product space)."""
    return (1.0 - queries @ vectors.T).astype(np.float32)


@dataclass
class NeighbourTable:
    seq: int  # the memory's change counter this table reflects
    ids: np.ndarray  # (n,) int64, sorted: the live items
    neighbours: np.ndarray  # (n, depth) int64, nearest first; -1 pads
    distances: np.ndarray  # (n, depth) float32; inf pads
    # what `updated` knows without a pass over the whole table (each pass over 60,000 x 64 entries costs 10-20 ms of
    # an edit's page): the entries each row lists, and a bound on the largest id any row lists
    _counts: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    _top_listed: Optional[int] = field(default=None, repr=False, compare=False)

    @property
    def depth(self) -> int:
        return int(self.neighbours.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def row_counts(self) -> np.ndarray:
        """(n,) the entries each row lists (the rest pads). Not to be written: it is the table's own."""
        if self._counts is None:
            self._counts = np.count_nonzero(self.neighbours >= 0, axis=1)
        return self._counts

    def top_listed(self) -> int:
        """At least the largest id any row lists (-1 for none): exact unless `updated` kept a bound."""
        if self._top_listed is None:
            self._top_listed = int(self.neighbours.max(initial=-1))
        return self._top_listed

    def fewest_listed(self) -> int:
        """The fewest entries any row lists (depth for an empty table)."""
        return int(self.row_counts().min()) if len(self.ids) else self.depth

    def complete_to(self, need: int) -> bool:
        """Whether every row lists its `need` nearest other items (all of them where fewer exist)."""
        return self.fewest_listed() >= min(int(need), self.depth, max(len(self.ids) - 1, 0))

    def leave_one_out(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item ids, neighbour ids (n, k'), distances (n, k')), k' = min(k, n - 1): what
        `VisualMemory.memory_neighbors(k)` returns."""
        k = min(int(k), max(len(self.ids) - 1, 0))
        if k > self.depth:
            raise ValueError(f"the neighbour table holds {self.depth} neighbours per item, not {k}")
        return self.ids, self.neighbours[:, :k], self.distances[:, :k]

    # --- building and updating ----------------------------------------------------------------------------------
    @classmethod
    def empty(cls, depth: int, seq: int = -1) -> "NeighbourTable":
        return cls(seq, np.zeros(0, np.int64), np.zeros((0, depth), np.int64), np.zeros((0, depth), np.float32))

    @classmethod
    def build(cls, ids: np.ndarray, search: VectorSearch, depth: int, seq: int,
              progress: Optional[Progress] = None, checkpoint: Optional[Path] = None) -> "NeighbourTable":
        """Every row searched, `BUILD_CHUNK` at a time. With `checkpoint`, the rows done are saved there after each
        chunk and a build of the same items at the same seq resumes from them."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        neighbours = np.full((len(ids), depth), -1, np.int64)
        distances = np.full((len(ids), depth), np.inf, np.float32)
        done = 0
        if checkpoint is not None:
            partial = _load(checkpoint)
            if partial is not None and partial[0].seq == seq and np.array_equal(partial[0].ids, ids) \
                    and partial[0].depth == depth:
                neighbours, distances, done = partial[0].neighbours, partial[0].distances, partial[1]
        if progress:
            progress(done, len(ids))
        while done < len(ids):
            rows = slice(done, min(done + BUILD_CHUNK, len(ids)))
            neighbours[rows], distances[rows] = search_rows(ids[rows], search, depth)
            done = rows.stop
            if checkpoint is not None and done < len(ids):
                _save(checkpoint, cls(seq, ids, neighbours, distances), done)
            if progress:
                progress(done, len(ids))
        if checkpoint is not None:
            Path(checkpoint).unlink(missing_ok=True)
        return cls(seq, ids, neighbours, distances)

    def updated(self, live_ids: np.ndarray, search: VectorSearch, seq: int,
                need: Optional[int] = None) -> "NeighbourTable":
        """This table brought to the live set `live_ids` (sorted), as `search` sees it now. Rows must keep at least
        `need` entries (default: every column); a table wider than that has slack, which absorbs deletes: see
        `SLACK`."""
        live_ids = np.asarray(live_ids, dtype=np.int64)
        depth = self.depth
        need = depth if need is None else min(int(need), depth)
        kept = _member(self.ids, live_ids)
        added = live_ids[~_member(live_ids, self.ids)]
        if len(added) > min(MAX_INCREMENTAL_ADD, max(len(live_ids) // 10, 64)):
            return NeighbourTable.build(live_ids, search, depth, seq)
        # the arrays are copied once, and only when something changes: the table a reader holds is never written
        owned = not kept.all()
        if owned:
            ids, neighbours, distances = self.ids[kept], self.neighbours[kept], self.distances[kept]
        else:
            ids, neighbours, distances = self.ids, self.neighbours, self.distances
        # an entry that is not live any more (deleted, purged, or added and gone while it was searched) is dropped
        # and the rest of its row moves up: a row is its item's nearest `count` others, and without one of them it
        # is still the nearest `count - 1` of what remains. A row left with fewer than `need` entries while there
        # are more items it could list is searched again.
        count = self.row_counts()[kept] if owned else self.row_counts().copy()
        removed = self._removed(kept, live_ids)
        top_listed = self.top_listed()  # after `_removed`, which may have made it exact
        gone = _listing(neighbours, removed)
        hit = np.flatnonzero(gone.any(axis=1))
        if len(hit):
            if not owned:
                neighbours, distances, owned = neighbours.copy(), distances.copy(), True
            lost = gone[hit]
            rows_n = np.where(lost, -1, neighbours[hit])
            rows_d = np.where(lost, np.inf, distances[hit]).astype(np.float32)
            order = np.argsort(lost, axis=1, kind="stable")  # the entries kept, in their order, then the padding
            neighbours[hit] = np.take_along_axis(rows_n, order, axis=1)
            distances[hit] = np.take_along_axis(rows_d, order, axis=1)
            count[hit] -= lost.sum(axis=1)
        complete = count >= len(ids) - 1  # lists every other item kept: any new one enters it
        stale = (count < need) & ~complete
        sorted_already = True
        if len(added):
            kept_rows = len(ids)
            added_vectors = search.vectors(added)
            cover = min(COVER * depth + 1, len(live_ids))
            found, found_d = search.search(added_vectors, cover)
            new_neighbours, new_distances = (_rows_from(added, found, found_d, depth) if found.shape[1] >= depth + 1
                                             or found.shape[1] >= len(live_ids) else search_rows(added, search, depth))
            sorted_already = not kept_rows or int(added[0]) > int(ids[-1])  # new ids come last (a restore does not)
            ids = np.concatenate([ids, added])
            neighbours = np.concatenate([neighbours, new_neighbours])  # the copy: the kept rows are written below
            distances = np.concatenate([distances, new_distances])
            owned = True
            entered = _insert(ids[:kept_rows], neighbours[:kept_rows], distances[:kept_rows], ~stale, complete, count,
                              added, added_vectors, found, found_d, cover, search)
            count = np.concatenate([count, np.count_nonzero(new_neighbours >= 0, axis=1)])
            count[entered] = np.count_nonzero(neighbours[entered] >= 0, axis=1)
            top_listed = max(top_listed, int(added.max()), int(new_neighbours.max(initial=-1)))
        if stale.any():
            if not owned:
                neighbours, distances, owned = neighbours.copy(), distances.copy(), True
            rows = np.flatnonzero(stale)
            neighbours[rows], distances[rows] = search_rows(ids[rows], search, depth)
            count[rows] = np.count_nonzero(neighbours[rows] >= 0, axis=1)
            top_listed = max(top_listed, int(neighbours[rows].max(initial=-1)))
        if not sorted_already:
            order = np.argsort(ids, kind="stable")
            ids, neighbours, distances, count = ids[order], neighbours[order], distances[order], count[order]
        # the bound only grows: dropped entries leave it above what is listed, which costs a pass, never an answer
        return NeighbourTable(seq, ids, neighbours, distances, count, top_listed)


    def _removed(self, kept: np.ndarray, live_ids: np.ndarray) -> np.ndarray:
        """The ids these rows may list that are not live: the items whose rows go, and any item a row lists that has
        no row here and is not live (added while the table was built, and gone since). Ids only grow, so such an
        item lies above the table's largest id."""
        removed = self.ids[~kept]
        if len(self.ids) and self.neighbours.size and self.top_listed() > int(self.ids[-1]):
            # a pass is made anyway: the bound becomes exact (an item added and gone left it above every id, and
            # every later update would pass again)
            self._top_listed = int(self.neighbours.max(initial=-1))
            beyond = np.unique(self.neighbours[self.neighbours > self.ids[-1]])
            removed = np.concatenate([removed, beyond[~_member(beyond, live_ids)]])
        return np.unique(removed)


def _listing(neighbours: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Where `neighbours` holds one of `removed` (sorted): a comparison per removed id while they are few (one
    delete: a pass over the table's ids, where a membership test of every entry took ten times as long)."""
    if len(removed) == 0:
        return np.zeros(neighbours.shape, dtype=bool)
    if len(removed) <= 8:
        found = neighbours == removed[0]
        for item in removed[1:]:
            found |= neighbours == item
        return found
    return _member(neighbours, removed)


def search_rows(ids: np.ndarray, search: VectorSearch, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out rows of `ids`: depth + 1 searched, the item itself dropped (or, where the approximate search
    missed it, the farthest), padded to `depth`."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros((0, depth), np.int64), np.zeros((0, depth), np.float32)
    found, found_d = search.search(search.vectors(ids), depth + 1)
    return _rows_from(ids, found, found_d, depth)


def _rows_from(ids: np.ndarray, found: np.ndarray, found_d: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    found = np.asarray(found, dtype=np.int64)
    found_d = np.asarray(found_d, dtype=np.float32)
    neighbours = np.full((len(ids), depth), -1, np.int64)
    distances = np.full((len(ids), depth), np.inf, np.float32)
    if found.shape[1] == 0:
        return neighbours, distances
    is_self = found == ids[:, None]
    # the same rule as VisualMemory._memory_neighbors: drop the item itself, else the farthest found
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), found.shape[1] - 1)
    keep = np.ones(found.shape, dtype=bool)
    keep[np.arange(len(found)), drop] = False
    width = min(depth, found.shape[1] - 1)
    neighbours[:, :width] = found[keep].reshape(len(found), -1)[:, :width]
    distances[:, :width] = found_d[keep].reshape(len(found), -1)[:, :width]
    return neighbours, distances


def _insert(ids, neighbours, distances, open_rows, complete, count, added, added_vectors, found, found_d, cover,
            search) -> np.ndarray:
    """Insert new items into the rows (where `open_rows`) they enter, in place (the caller owns the arrays); returns
    the rows written."""
    found = np.asarray(found, dtype=np.int64)
    found_d = np.asarray(found_d, dtype=np.float32)
    # a new item enters a row if it is nearer than the row's last entry; any new item enters a row that lists every
    # other item (one of a small memory). A row shortened by deletes holds only its nearest `count`: an item beyond
    # its last entry may have others, unknown to the row, between them, so it does not enter
    last = distances[np.arange(len(ids)), np.maximum(count - 1, 0)] if len(ids) else np.zeros(0, np.float32)
    radius = np.where(complete, np.inf, np.where(count > 0, last, -np.inf)).astype(np.float32)
    row_of = _positions(ids, found)  # -1 where a found item has no row here (it is new)
    pair_rows, pair_items, pair_d = [], [], []
    hit = (row_of >= 0)
    hit[hit] &= open_rows[row_of[hit]]
    a_index = np.broadcast_to(np.arange(len(added))[:, None], found.shape)
    enters = hit.copy()
    enters[hit] = found_d[hit] < radius[row_of[hit]]
    pair_rows.append(row_of[enters])
    pair_items.append(a_index[enters])
    pair_d.append(found_d[enters])
    # rows the search did not reach: only one whose radius exceeds the farthest found can list the new item. A new
    # item near many others (a near-copy) leaves thousands such rows, so their distances come from one pass over the
    # stored vectors per chunk of new items (`search.distances`), not a gather per item
    if found.shape[1] >= cover and len(ids):
        farthest = found_d[:, -1] if found.shape[1] else np.full(len(added), -np.inf, np.float32)
        for chunk in range(0, len(added), INSERT_CHUNK):  # per chunk: a near-copy alone has ~26,000 candidates
            per_item = {}
            for a in range(chunk, min(chunk + INSERT_CHUNK, len(added))):
                candidates = np.flatnonzero(open_rows & (radius > farthest[a]))
                if len(candidates):
                    candidates = np.setdiff1d(candidates, row_of[a][row_of[a] >= 0], assume_unique=False)
                if len(candidates):
                    per_item[a] = candidates
            if not per_item:
                continue
            items = list(per_item)
            union = np.unique(np.concatenate(list(per_item.values())))
            distances_all = search.distances(added_vectors[items], ids[union])
            for row_in_chunk, a in enumerate(items):
                candidates = per_item[a]
                d = distances_all[row_in_chunk, np.searchsorted(union, candidates)]
                near = d < radius[candidates]
                pair_rows.append(candidates[near])
                pair_items.append(np.full(int(near.sum()), a))
                pair_d.append(d[near])
    rows = np.concatenate(pair_rows)
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    items = added[np.concatenate(pair_items)]
    dists = np.concatenate(pair_d).astype(np.float32)
    depth = neighbours.shape[1]
    order = np.argsort(rows, kind="stable")
    rows, items, dists = rows[order], items[order], dists[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    for start, end in zip(starts, ends):
        row = rows[start]
        have = neighbours[row]
        fresh = ~np.isin(items[start:end], have)  # listed already: found while it was being added
        merged_ids = np.concatenate([have, items[start:end][fresh]])
        merged_d = np.concatenate([distances[row], dists[start:end][fresh]])
        best = np.argsort(merged_d, kind="stable")[:depth]
        neighbours[row], distances[row] = merged_ids[best], merged_d[best]
    return rows[starts]


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """values (any shape) that are in `sorted_set` (sorted, unique, non-negative ids): a lookup in a boolean array
    over the ids (a gather per value; binary searches over 60,000 x 50 entries took ~10x longer)."""
    values = np.asarray(values)
    if len(sorted_set) == 0 or values.size == 0:
        return np.zeros(np.shape(values), dtype=bool)
    top = int(sorted_set[-1])
    if top > 64 * (len(sorted_set) + values.size) + 2**20:  # ids too sparse for a table: binary search
        at = np.clip(np.searchsorted(sorted_set, values), 0, len(sorted_set) - 1)
        return sorted_set[at] == values
    table = np.zeros(top + 2, dtype=bool)  # the last slot stands for every value outside [0, top]
    table[sorted_set] = True
    return table[np.where((values < 0) | (values > top), top + 1, values)]


def _positions(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in `sorted_ids`, -1 where absent."""
    if len(sorted_ids) == 0:
        return np.full(np.shape(values), -1, np.int64)
    at = np.clip(np.searchsorted(sorted_ids, values), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[at] == values, at, -1)


# --- the file ---------------------------------------------------------------------------------------------------------
def _save(path: Path, table: NeighbourTable, rows_done: Optional[int] = None) -> None:
    """Written to a temp file, fsynced and renamed: a crash leaves the old table or the new one; a write that fails
    (a full disk) leaves nothing behind, not even the folder it made."""
    path = Path(path)
    made_folder = not path.parent.exists()
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, format=np.int64(FORMAT), seq=np.int64(table.seq), ids=table.ids,
                     neighbour_ids=table.neighbours, distances=table.distances,
                     rows_done=np.int64(len(table) if rows_done is None else rows_done))
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        if made_folder:
            try:
                path.parent.rmdir()
            except OSError:
                pass
        raise


def _load(path: Path) -> Optional[tuple[NeighbourTable, int]]:
    """(table, rows done) from `path`, or None where it is missing, damaged or of another format: the caller then
    rebuilds (the table is derived data, never the only copy of anything)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != FORMAT:
                return None
            # copy=False: the arrays are saved in these types, and a copy of each took ~0.09 s at 60,000 x 64
            table = NeighbourTable(int(data["seq"]), data["ids"].astype(np.int64, copy=False),
                                   data["neighbour_ids"].astype(np.int64, copy=False),
                                   data["distances"].astype(np.float32, copy=False))
            done = int(data["rows_done"])
    except (OSError, ValueError, KeyError, EOFError):
        return None
    n = len(table.ids)
    if table.neighbours.ndim != 2 or table.neighbours.shape != table.distances.shape or \
            table.neighbours.shape[0] != n or not 0 <= done <= n or (n and np.any(np.diff(table.ids) <= 0)):
        return None
    return table, done


class NeighbourTableKeeper:
    """A memory's table: loaded from its file on first use, brought up to date on each use after a change, built in
    full where there is none, and saved by `save` (the memory's flush)."""

    def __init__(self, path: Path, depth: int, slack: int = SLACK) -> None:
        self.path = Path(path)
        self.depth = int(depth)  # the neighbours every row must answer
        self.width = self.depth + int(slack)  # the neighbours a row is built with
        self._table: Optional[NeighbourTable] = None
        self._saved: Optional[NeighbourTable] = None  # the table the file holds (a refill keeps the seq)
        self._lock = threading.Lock()  # one update at a time; readers of a returned table need none

    @property
    def checkpoint(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    def loaded(self) -> Optional[NeighbourTable]:
        """The table in this process, if any (it may lag the memory)."""
        return self._table

    def kept(self) -> bool:
        """Whether the file holds a table, and (once this process has one) the very table this process holds: a
        table brought up to date but not saved (by a reader, or on a full disk) is not kept."""
        # no lock: an update holds it for a whole build, and two reference reads need none
        return self.path.exists() and (self._table is None or self._table is self._saved)

    def current(self, live_ids: np.ndarray, seq: int, search: VectorSearch,
                progress: Optional[Progress] = None, need: Optional[int] = None) -> NeighbourTable:
        """The table for the live items `live_ids` at change `seq` (read before `live_ids`), every row listing at
        least its `need` nearest other items (default: the depth every row must answer)."""
        need = self.depth if need is None else min(int(need), self.depth)
        table = self._table
        if table is not None and table.seq == seq and table.complete_to(need):
            return table
        with self._lock:
            table = self._table
            if table is None:
                found = _load(self.path)
                # a table built with less slack (or none, before there was any) still answers: it is kept
                if found is not None and found[1] == len(found[0]) and found[0].depth >= self.depth:
                    table = self._saved = found[0]
            if table is None:
                table = NeighbourTable.build(live_ids, search, self.width, seq, progress, self.checkpoint)
            elif table.seq != seq and np.array_equal(table.ids, live_ids) and (
                    not len(table.ids) or table.top_listed() <= int(table.ids[-1])):
                # the same live items (a relabel, or a delete undone): the same rows. A row can list an id above
                # the table's largest only if that item came while the table was built (ids only grow): then update
                table = replace(table, seq=seq)  # its counts and bound too
            elif table.seq != seq or not np.array_equal(table.ids, live_ids):
                table = table.updated(live_ids, search, seq, need)
            if not table.complete_to(need):  # rows that lost entries to deletes, refilled as far as asked
                table = table.updated(live_ids, search, seq, need)
            self._table = table
            return table

    def rebuild(self, live_ids: np.ndarray, seq: int, search: VectorSearch,
                progress: Optional[Progress] = None) -> NeighbourTable:
        """A full recomputation (resumable from its checkpoint), replacing the table."""
        with self._lock:
            self._table = NeighbourTable.build(live_ids, search, self.width, seq, progress, self.checkpoint)
            return self._table

    def after_purge(self, current: Callable[[], NeighbourTable]) -> None:
        """After exemplars were purged: no file keeps listing them. The table on disk is brought up to date and
        rewritten (`current` gives the table of the memory as it is now: rows that listed a purged item keep the
        rest, and are refilled only as far as `current` asks); a build's checkpoint is dropped."""
        self.checkpoint.unlink(missing_ok=True)
        if self._table is not None or self.path.exists():
            current()
            with self._lock:
                table = self._table
                if table is not None:
                    try:
                        _save(self.path, table)
                    except OSError as exc:
                        # no file may keep listing purged ids: without room for the new table, the old one goes
                        # (derived data: the next writer saves it again)
                        self.path.unlink(missing_ok=True)
                        self._saved = None
                        log.warning("neighbour table %s removed, not rewritten (%s)", self.path, exc)
                        return
                    self._saved = table

    def save(self) -> bool:
        """Write the table if it is newer than the file; returns whether it wrote."""
        with self._lock:
            table = self._table
            if table is None or table is self._saved:
                return False
            try:
                _save(self.path, table)
            except OSError as exc:
                # derived data: the database holds every change, and the next reader brings the table up to date
                log.warning("neighbour table %s not saved (%s); the next open updates it from the database",
                            self.path, exc)
                return False
            self._saved = table
            return True
