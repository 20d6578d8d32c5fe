"""A query set's nearest exemplars, kept through edits, equal a fresh search after any sequence of edits."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmem_core.memory import VisualMemory
from vmem_core.memory.query_rows import QueryRowsCache
from vmem_core.voting import VoteSettings

from .test_neighbour_table import DIM, LABELS, ExactSearch, _FakeEncoder, unit

edits = st.lists(st.tuples(st.sampled_from(["add", "delete", "restore"]), st.integers(1, 6), st.integers(0, 2**31)),
                 min_size=1, max_size=10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.integers(0, 30), steps=edits, depth=st.sampled_from([1, 4, 10]), seed=st.integers(0, 2**31))
def test_kept_rows_equal_a_fresh_search(start, steps, depth, seed):
    rng = np.random.default_rng(seed)
    search, deleted = ExactSearch(), set()
    queries = unit(rng, 40)  # enough to be remembered (query_rows.MIN_QUERIES)
    search.add(unit(rng, start))
    cache, calls = QueryRowsCache(), []

    def counted(vectors, k):
        calls.append(len(vectors))
        return search.search(vectors, k)

    live = search.live_ids
    key = cache.key(queries, depth, False)
    cache.rows(key, queries, depth, live(), counted, search.vectors)
    for action, n, pick in steps:
        pool = sorted(search.live) if action == "delete" else sorted(deleted)
        chosen = {pool[(pick + j * 7919) % len(pool)] for j in range(min(n, len(pool)))} if pool else set()
        if action == "add":
            search.add(unit(rng, n))
        for i in chosen:
            if action == "delete":
                del search.live[i]
                deleted.add(i)
            elif action == "restore":
                search.live[i] = search.stored[i]
                deleted.discard(i)
        calls.clear()
        before = cache._rows[key]
        ids, distances = cache.rows(key, queries, depth, live(), counted, search.vectors)
        fresh_ids, fresh_d = search.search(queries, depth)
        np.testing.assert_array_equal(ids, fresh_ids)
        np.testing.assert_allclose(distances, fresh_d, rtol=1e-5, atol=1e-6)
        if before.ids.shape[1] == depth and len(search.live) > depth:  # kept, not searched again whole:
            removed = np.setdiff1d(before.members, live())  # only the rows that listed a removed exemplar
            listing = int(np.isin(before.ids, removed).any(axis=1).sum())
            assert calls == ([listing] if listing else [])


def test_the_evaluation_split_after_edits_equals_a_fresh_search_and_searches_only_what_changed(tmp_path):
    rng = np.random.default_rng(5)
    with VisualMemory.create(tmp_path / "m", encoder=_FakeEncoder()) as memory:
        memory.exemplars.add_embeddings(unit(rng, 300), [LABELS[i % 3] for i in range(300)])
        queries = unit(rng, 40)
        for pruning in ("none", "soft", "hard"):
            vote = VoteSettings(k=5, pruning=pruning, threshold=3)
            memory.search.neighbour_set(queries, 20, vote)
            searched = []
            real = memory._index.search
            memory._index.search = lambda q, k, **kw: searched.append(len(q)) or real(q, k, **kw)
            try:
                victim = int(memory.search.neighbour_set(queries, 20, vote).ids[0, 0])
                assert searched == []  # asked again unchanged: remembered
                memory.exemplars.delete([victim])
                memory.exemplars.add_embeddings(queries[3:4] * 0.9 + unit(rng, 1) * 0.1, ["a"])
                memory.exemplars.relabel([int(memory.table.ids[7])], "b")
                kept = memory.search.neighbour_set(queries, 20, vote)
                if pruning != "hard":  # (hard pruning's kept set moves with every v: it may search every row)
                    assert sum(searched) < len(queries)
            finally:
                memory._index.search = real
            allowed = memory.reliability.kept_ids(vote) if pruning == "hard" else None
            fresh_ids, fresh_d = memory.search(queries, 20, allowed_ids=allowed)
            np.testing.assert_array_equal(kept.ids, fresh_ids)
            np.testing.assert_allclose(kept.distances, fresh_d, rtol=1e-5, atol=1e-6)
            fresh = memory.search.classify_embeddings(queries, vote)
            assert [r.label for r in kept.classifications(vote)] == [r.label for r in fresh]
    assert DIM == queries.shape[1]


def test_a_few_queries_are_searched_every_time_and_push_nothing_out():
    search, cache = ExactSearch(), QueryRowsCache()
    search.add(unit(np.random.default_rng(1), 50))
    one = unit(np.random.default_rng(2), 1)
    key = cache.key(one, 5, False)
    cache.rows(key, one, 5, np.arange(50), search.search, search.vectors)
    assert key not in cache._rows
