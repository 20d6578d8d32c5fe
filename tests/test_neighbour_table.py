"""The neighbour table kept incrementally equals a full recomputation, whatever sequence of edits came before."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmem_core.analysis.ood import nearest_distance_threshold
from vmem_core.memory import VisualMemory
from vmem_core.storage.neighbour_table import NeighbourTable, NeighbourTableKeeper, cosine_distances
from vmem_core.voting import reliability_counts

DIM = 8
LABELS = ["a", "b", "c"]


class ExactSearch:
    """Exact search over a dict of live unit vectors: a full recomputation is then the one true answer."""

    def __init__(self) -> None:
        self.live: dict[int, np.ndarray] = {}
        self.stored: dict[int, np.ndarray] = {}

    def add(self, vectors) -> list[int]:
        """Store and make live each vector under the next id (ids are never reused); returns the ids."""
        first = len(self.stored)
        for offset, vector in enumerate(vectors):
            self.live[first + offset] = self.stored[first + offset] = vector
        return list(range(first, first + len(vectors)))

    def live_ids(self) -> np.ndarray:
        return np.asarray(sorted(self.live), dtype=np.int64)

    def search(self, vectors, k):
        ids = self.live_ids()
        if not len(ids):
            return np.zeros((len(vectors), 0), np.int64), np.zeros((len(vectors), 0), np.float32)
        d = cosine_distances(np.asarray(vectors), np.stack([self.live[i] for i in ids]))
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        return ids[order], np.take_along_axis(d, order, axis=1)

    def vectors(self, ids):
        return np.stack([self.stored[int(i)] for i in ids]) if len(ids) else np.zeros((0, DIM), np.float32)

    def distances(self, vectors, ids):
        return cosine_distances(np.asarray(vectors), self.vectors(ids))


def assert_bookkeeping(table: NeighbourTable) -> None:
    """What an update carries over instead of recounting: each row's entries, and a bound on the largest listed id."""
    np.testing.assert_array_equal(table.row_counts(), np.count_nonzero(table.neighbours >= 0, axis=1))
    assert table.top_listed() >= int(table.neighbours.max(initial=-1))
    assert table.fewest_listed() == (int((table.neighbours >= 0).sum(axis=1).min()) if len(table) else table.depth)


def unit(rng, n):
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def v_and_threshold(table: NeighbourTable, labels: dict[int, int], top_n: int):
    ids, neighbours, distances = table.leave_one_out(top_n)
    v = reliability_counts(ids, np.asarray([labels[int(i)] for i in ids]), neighbours)
    threshold = float(np.quantile(distances[:, 0], 0.99)) if distances.size else float("inf")
    return dict(zip(ids.tolist(), v.tolist())), threshold


edits = st.lists(st.tuples(st.sampled_from(["add", "delete", "restore", "relabel"]),
                           st.integers(1, 6), st.integers(0, 2**31)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.integers(0, 25), steps=edits, depth=st.sampled_from([1, 3, 10]), slack=st.sampled_from([0, 2, 5]),
       seed=st.integers(0, 2**31))
def test_incremental_table_equals_full_recomputation(start, steps, depth, slack, seed):
    """With or without slack (rows built wider than they must answer, so that deletes shorten them instead of
    searching them again), the first `depth` neighbours of every row are a full recomputation's."""
    rng = np.random.default_rng(seed)
    search, labels, deleted = ExactSearch(), {}, set()

    def add(n):
        for i in search.add(unit(rng, n)):
            labels[i] = int(rng.integers(len(LABELS)))

    add(start)
    live = search.live_ids
    table = NeighbourTable.build(live(), search, depth + slack, seq=0)
    for seq, (action, n, pick) in enumerate(steps, start=1):
        pool = sorted(search.live) if action in ("delete", "relabel") else sorted(deleted)
        chosen = [pool[(pick + j * 7919) % len(pool)] for j in range(min(n, len(pool)))] if pool else []
        if action == "add":
            add(n)
        elif action == "delete":
            for i in set(chosen):
                del search.live[i]
                deleted.add(i)
        elif action == "restore":
            for i in set(chosen):
                search.live[i] = search.stored[i]
                deleted.discard(i)
        else:
            for i in chosen:
                labels[i] = (labels[i] + 1) % len(LABELS)
        before = (table.ids.copy(), table.neighbours.copy(), table.distances.copy())
        previous, table = table, table.updated(live(), search, seq, need=depth)
        for held, now in zip(before, (previous.ids, previous.neighbours, previous.distances)):
            np.testing.assert_array_equal(held, now)  # the table a reader may still hold is never written
        full = NeighbourTable.build(live(), search, depth, seq)
        np.testing.assert_array_equal(table.ids, full.ids)
        np.testing.assert_array_equal(table.neighbours[:, :depth], full.neighbours)
        assert_bookkeeping(table)
        for top_n in {1, depth}:
            (v, threshold), (full_v, full_threshold) = (v_and_threshold(t, labels, top_n) for t in (table, full))
            assert v == full_v
            # the same neighbours; a distance found by a direct comparison may differ from the search's in the
            # last bit of float32 arithmetic (one row against a matrix product)
            assert threshold == pytest.approx(full_threshold, rel=1e-6, abs=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.integers(0, 25), steps=edits, depth=st.sampled_from([3, 10]), seed=st.integers(0, 2**31),
       needs=st.lists(st.integers(1, 10), min_size=12, max_size=12))
def test_rows_refilled_only_as_far_as_needed_are_exact_prefixes(start, steps, depth, seed, needs):
    """Rows that lost entries are searched again only where a reader needs more than they have left; what every row
    lists is still exactly its nearest items (a prefix of the full recomputation's row), the first `need` of them at
    least, and a later read that needs every column gets the full recomputation."""
    rng = np.random.default_rng(seed)
    search = ExactSearch()
    search.add(unit(rng, start))
    live = search.live_ids
    table = NeighbourTable.build(live(), search, depth, seq=0)
    deleted: set[int] = set()
    for seq, ((action, n, pick), need) in enumerate(zip(steps, needs), start=1):
        pool = sorted(search.live) if action in ("delete", "relabel") else sorted(deleted)
        chosen = {pool[(pick + j * 7919) % len(pool)] for j in range(min(n, len(pool)))} if pool else set()
        if action == "add":
            search.add(unit(rng, n))
        elif action == "delete":
            for i in chosen:
                del search.live[i]
                deleted.add(i)
        elif action == "restore":
            for i in chosen:
                search.live[i] = search.stored[i]
                deleted.discard(i)
        need = min(need, depth)
        table = table.updated(live(), search, seq, need)
        full = NeighbourTable.build(live(), search, depth, seq)
        np.testing.assert_array_equal(table.ids, full.ids)
        assert_bookkeeping(table)
        assert table.complete_to(need)
        listed = table.neighbours >= 0
        assert not (listed[:, 1:] & ~listed[:, :-1]).any()  # padding only at the end
        np.testing.assert_array_equal(np.where(listed, table.neighbours, -1), np.where(listed, full.neighbours, -1))
        np.testing.assert_array_equal(table.leave_one_out(need)[1], full.leave_one_out(need)[1])
    table = table.updated(live(), search, len(steps) + 1)
    np.testing.assert_array_equal(table.neighbours, NeighbourTable.build(live(), search, depth, 0).neighbours)


def test_a_delete_searches_no_row_for_what_the_remaining_entries_answer():
    """Deleting an item listed in many rows drops it from them; the OOD threshold and v (need 1 and 10 of depth 50)
    are then answered without searching a row again, and need 50 searches just the rows that lost it."""
    rng = np.random.default_rng(1)
    search = ExactSearch()
    search.add(unit(rng, 300))
    table = NeighbourTable.build(np.arange(300), search, 50, seq=0)
    victim = int(np.bincount(table.neighbours[:, :40].ravel()).argmax())
    losing = int((table.neighbours == victim).any(axis=1).sum())
    del search.live[victim]
    searched = []
    original = search.search
    search.search = lambda vectors, k: (searched.append(len(vectors)), original(vectors, k))[1]
    live = np.asarray(sorted(search.live))
    shallow = table.updated(live, search, 1, need=10)
    assert searched == [] and not (shallow.neighbours == victim).any()
    deep = shallow.updated(live, search, 1)
    assert searched == [losing]
    np.testing.assert_array_equal(deep.neighbours, NeighbourTable.build(live, search, 50, 1).neighbours)


def test_rows_outside_the_new_items_cover_are_still_updated():
    """An outlier's last neighbour is farther than everything a new item's search covers; the new item must still
    enter the outlier's row (the direct comparison, not the search, finds it)."""
    rng = np.random.default_rng(0)
    search = ExactSearch()
    cluster = unit(rng, 40) * 0.05 + np.eye(DIM, dtype=np.float32)[0]
    cluster /= np.linalg.norm(cluster, axis=1, keepdims=True)
    e0, e1 = np.eye(DIM, dtype=np.float32)[:2]
    outlier = e1[None, :]  # cosine distance ~1 from every cluster item: its row's last entry is that far
    search.add(np.concatenate([cluster, outlier]))
    table = NeighbourTable.build(np.arange(41), search, 3, seq=0)
    # ~0.14 from the cluster, ~0.49 from the outlier: its 7 nearest (the search's cover) are all cluster items
    newcomer = e0 + 0.6 * e1
    search.live[41] = search.stored[41] = newcomer / np.linalg.norm(newcomer)
    assert 40 not in search.search(search.vectors([41]), 7)[0]
    updated = table.updated(np.arange(42), search, 1)
    full = NeighbourTable.build(np.arange(42), search, 3, seq=1)
    np.testing.assert_array_equal(updated.neighbours, full.neighbours)
    assert 41 in updated.neighbours[40]


def test_a_delete_shortens_the_rows_that_list_it_without_searching_them():
    rng = np.random.default_rng(3)
    search = ExactSearch()
    search.add(unit(rng, 60))
    table = NeighbourTable.build(np.arange(60), search, 5 + 2, seq=0)
    hub = int(np.bincount(table.neighbours[:, :5].ravel()).argmax())  # listed in the most rows
    del search.live[hub]
    searched = []
    search.search = lambda vectors, k, _search=search.search: searched.append(len(vectors)) or _search(vectors, k)
    updated = table.updated(np.asarray(sorted(search.live)), search, 1, need=5)
    assert searched == []  # every row that listed it had slack to spare
    full = NeighbourTable.build(np.asarray(sorted(search.live)), search, 5, seq=1)
    np.testing.assert_array_equal(updated.neighbours[:, :5], full.neighbours)
    # three more deletes from the same rows use the slack up: those rows, and only those, are searched again
    for victim in updated.neighbours[0, :3].tolist():
        del search.live[victim]
    searched.clear()
    again = updated.updated(np.asarray(sorted(search.live)), search, 2, need=5)
    assert searched and sum(searched) < len(search.live)
    full = NeighbourTable.build(np.asarray(sorted(search.live)), search, 5, seq=2)
    np.testing.assert_array_equal(again.neighbours[:, :5], full.neighbours)


def test_damaged_table_file_is_rebuilt_not_trusted(tmp_path):
    search = ExactSearch()
    search.add(unit(np.random.default_rng(1), 12))
    keeper = NeighbourTableKeeper(tmp_path / "neighbours" / "table.npz", 3)
    keeper.current(np.arange(12), 5, search)
    assert keeper.save()
    keeper.path.write_bytes(b"not a table")
    again = NeighbourTableKeeper(keeper.path, 3).current(np.arange(12), 5, search)
    full = NeighbourTable.build(np.arange(12), search, 3, 5)
    np.testing.assert_array_equal(again.leave_one_out(3)[1], full.neighbours)  # the keeper's rows have slack


def test_an_interrupted_build_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import vmem_core.storage.neighbour_table as nt

    search = ExactSearch()
    search.add(unit(np.random.default_rng(2), 30))
    monkeypatch.setattr(nt, "BUILD_CHUNK", 10)
    checkpoint = tmp_path / "table.npz.partial"
    calls = []

    def failing_progress(done, total):
        calls.append(done)
        if done == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        NeighbourTable.build(np.arange(30), search, 3, 7, failing_progress, checkpoint)
    assert checkpoint.exists()
    resumed = []
    table = NeighbourTable.build(np.arange(30), search, 3, 7, lambda d, t: resumed.append(d), checkpoint)
    assert resumed[0] == 20  # the first 20 rows were not searched again
    np.testing.assert_array_equal(table.neighbours, NeighbourTable.build(np.arange(30), search, 3, 7).neighbours)
    assert not checkpoint.exists()


@pytest.fixture
def memory(tmp_path):
    rng = np.random.default_rng(3)
    memory = VisualMemory.create(tmp_path / "m", encoder=_FakeEncoder())
    memory.exemplars.add_embeddings(unit(rng, 60), [LABELS[i % 3] for i in range(60)])
    yield memory
    memory.close()


class _FakeEncoder:
    name, identity, dim = "fake-8", "fake-8-identity", DIM


def _full(memory, k):
    return memory.search._memory_neighbors(k, None)  # the whole-memory search the table replaces


def test_memory_reads_its_table_and_keeps_it_through_edits(memory, monkeypatch):
    rng = np.random.default_rng(4)
    items, neighbours, _ = memory.search.memory_neighbors(10)
    full = _full(memory, 10)
    np.testing.assert_array_equal(items, full[0])
    np.testing.assert_array_equal(neighbours, full[1])
    memory.exemplars.delete([3, 17])
    memory.exemplars.relabel([5], "c")
    new = memory.exemplars.add_embeddings(unit(rng, 4), ["a", "b", "a", "b"])
    memory.exemplars.restore([17])
    # from here on no whole-memory pass: a search of every row would go through _memory_neighbors or build()
    monkeypatch.setattr(NeighbourTable, "build", classmethod(lambda *a, **k: pytest.fail("rebuilt in full")))
    v = memory.reliability(10)
    threshold = nearest_distance_threshold(memory)
    monkeypatch.undo()
    items, neighbours, distances = _full(memory, 10)
    expected_v = reliability_counts(items, memory.table.class_indices(items), neighbours)
    assert v == dict(zip(items.tolist(), expected_v.tolist()))
    assert threshold == pytest.approx(float(np.quantile(distances[:, 0], 0.99)))
    assert set(new) <= set(v)


def test_the_table_is_saved_on_close_and_updated_from_the_file_on_open(memory, tmp_path):
    memory.search.memory_neighbors(5)
    memory.close()
    reopened = VisualMemory.open(tmp_path / "m")
    try:
        reopened.exemplars.delete([0])  # a change the file does not reflect
        reopened._neighbours._table = None  # as a fresh process: the file, then the change since
        assert reopened._neighbours.path.exists()
        items, neighbours, _ = reopened.search.memory_neighbors(10)
        assert 0 not in items and not (neighbours == 0).any()
        np.testing.assert_array_equal(neighbours, _full(reopened, 10)[1])
    finally:
        reopened.close()


def test_a_purge_leaves_no_table_file_listing_the_purged(memory, tmp_path):
    from vmem_core.unlearn import purge

    memory.search.memory_neighbors(5)
    memory.index.flush()
    victim = int(memory.search.memory_neighbors(1)[1][0, 0])  # listed in a row
    purge(memory, [victim], certificate_path=tmp_path / "cert.json")
    with np.load(memory._neighbours.path) as saved:
        assert victim not in saved["ids"] and victim not in saved["neighbour_ids"]


@pytest.mark.parametrize("count", [0, 3, 600, 9000])
def test_the_vaults_similarities_are_the_gathered_products(tmp_path, count, monkeypatch):
    """Many ids are read in one pass over the records they span, block by block (small blocks here, so that ids fall
    on either side of their edges); a few are gathered. Either way the products are those of the stored vectors."""
    import vmem_core.storage.vault as vault_module
    from vmem_core.storage.vault import Vault

    monkeypatch.setattr(vault_module, "SCAN_BLOCK", 97)
    rng = np.random.default_rng(count)
    stored = unit(rng, 12_000)
    vault = Vault(tmp_path, DIM, create=True)
    vault.write_vectors(0, stored)
    ids = np.sort(rng.choice(len(stored), count, replace=False))
    queries = unit(rng, 5)
    products = vault.similarities(queries, ids)
    assert products.shape == (5, count) and products.dtype == np.float32
    np.testing.assert_allclose(products, queries @ stored[ids].T, atol=1e-5)
    with pytest.raises(ValueError, match="holds no vector for id 12000"):
        vault.similarities(queries, np.r_[ids, 12_000] if count > 600 else np.arange(599, 12_001))
    with pytest.raises(ValueError, match="sorted and unique"):
        vault.similarities(queries, [5, 4])


def test_the_bound_on_listed_ids_becomes_exact_again_after_the_newest_item_goes():
    """An item added and deleted leaves the bound above every id; the next update's pass makes it exact, so later
    updates (a relabel keeps the rows) need no pass."""
    rng = np.random.default_rng(5)
    search = ExactSearch()
    search.add(unit(rng, 30))
    table = NeighbourTable.build(np.arange(30), search, 4, seq=0)
    [newest] = search.add(unit(rng, 1))
    table = table.updated(search.live_ids(), search, 1)
    del search.live[newest]
    table = table.updated(search.live_ids(), search, 2)
    assert table.top_listed() >= newest > int(table.ids[-1])  # a bound, still above
    table = table.updated(search.live_ids(), search, 3)  # nothing changed: the pass is made once
    assert table.top_listed() == int(table.neighbours.max()) <= int(table.ids[-1])


def test_new_items_compared_chunk_by_chunk_enter_the_rows_a_full_recomputation_gives(monkeypatch):
    """Several new items near existing ones (each with rows its search misses), compared with those rows a few
    items at a time: the rows they enter are those of a full recomputation."""
    import vmem_core.storage.neighbour_table as table_module

    monkeypatch.setattr(table_module, "INSERT_CHUNK", 2)
    rng = np.random.default_rng(11)
    search = ExactSearch()
    search.add(unit(rng, 60))
    table = NeighbourTable.build(np.arange(60), search, 3, seq=0)
    copies = search.vectors(np.arange(7)) + 1e-3 * unit(rng, 7)
    search.add(copies / np.linalg.norm(copies, axis=1, keepdims=True))
    updated = table.updated(search.live_ids(), search, 1)
    np.testing.assert_array_equal(updated.neighbours, NeighbourTable.build(search.live_ids(), search, 3, 1).neighbours)
    assert_bookkeeping(updated)
