"""Streamlit sessions are threads sharing one VisualMemory: many at once adding, deleting, relabelling, classifying."""

import queue
import threading

import numpy as np
import pytest

from vmem_core import UnknownIdError, VisualMemory
from vmem_core.backends.hnsw_index import EXACT_SEARCH_BELOW

from .helpers import png_bytes

ROUNDS = 25


def run_threads(*targets) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target):
        def body():
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted by the caller
                errors.append(exc)
        return body

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    return errors


@pytest.mark.slow
def test_sessions_hammering_one_memory_never_corrupt_it(memory):
    rng = np.random.default_rng(3)
    probes = memory.exemplars.embeddings()[1]
    # past EXACT_SEARCH_BELOW, so that searches go through hnswlib, which must not be read while it is written
    bulk = memory.exemplars.add_embeddings(rng.normal(size=(EXACT_SEARCH_BELOW, 64)), [f"bulk{i % 7}" for i in
                                                                            range(EXACT_SEARCH_BELOW)])
    handed_over: queue.Queue = queue.Queue()
    kept = {"a": [], "b": [], "relabelled": []}

    def session_a():  # adds images, hands some to session b, deletes and restores its own
        for i in range(ROUNDS):
            ids = memory.exemplars.add([png_bytes(rng.integers(0, 255, (16, 16))) for _ in range(2)], "from-a",
                             sources=[f"a-{i}-0", f"a-{i}-1"])
            handed_over.put(ids[0])
            memory.exemplars.delete([ids[1]])
            if i % 3 == 0:
                memory.exemplars.restore([ids[1]])
                kept["a"].append(ids[1])
        handed_over.put(None)

    def session_b():  # sees a's new exemplar at once (table, search), relabels or deletes it; adds by vector
        while (exemplar := handed_over.get()) is not None:
            assert exemplar in memory.table.ids
            vector = memory.exemplars.embeddings([exemplar])[1]
            assert memory.search(vector, 1)[0][0, 0] == exemplar
            if exemplar % 2:
                memory.exemplars.relabel([exemplar], "seen-by-b")
                kept["relabelled"].append(exemplar)
            else:
                memory.exemplars.delete([exemplar])
            kept["b"].extend(memory.exemplars.add_embeddings(rng.normal(size=(1, 64)), ["from-b"]))

    def reader():  # the Classify page and the Curate page at once
        for i in range(ROUNDS):
            for result in memory.search.classify_embeddings(probes, k=5):
                assert result.label is not None and len(result.neighbors) == 5
            if i % 8 == 0:  # a leave-one-out pass over the whole memory: slow, a few are enough
                reliability = memory.reliability()
                assert all(count >= 0 for count in reliability.values())

    def clumsy():  # a session acting on stale ids gets a clear error and changes nothing
        for _ in range(ROUNDS):
            try:
                memory.exemplars.delete([10_000])
            except UnknownIdError:
                pass
            else:
                raise AssertionError("deleting an unknown id succeeded")

    errors = run_threads(session_a, session_b, reader, reader, clumsy)
    assert not errors, errors

    live = sorted(memory.table.ids.tolist())
    assert sorted(memory.index.backend.live_ids().tolist()) == live  # index and database agree
    assert live == sorted(memory.exemplars.browse(limit=10**6)["id"].tolist())
    assert set(live) == set(range(12)) | set(bulk) | set(kept["a"]) | set(kept["b"]) | set(kept["relabelled"])
    assert memory.audit.verify().ok
    labels = memory.stats()["labels"]
    assert labels["from-b"] == ROUNDS and labels["seen-by-b"] == len(kept["relabelled"]) > 0
    path = memory.path
    memory.close()
    with VisualMemory.open(path) as reopened:  # what the threads left is what the files hold
        assert sorted(reopened.index.backend.live_ids().tolist()) == live
        assert reopened.stats()["labels"] == labels
