"""The index-backend contract, run against every backend: hnswlib (embedded), Milvus (milvus-lite in a folder) and
exact (torch, on the CPU here; tests/test_exact.py compares it with a GPU where there is one).

The same assertions hold for all three: searches agree with exact search, tombstones hide at once and restore, purges
remove the data and say what was verified, everything survives a reopen and a crash, label filters hold.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vmem_core import VisualMemory
from vmem_core.errors import VmemError
from vmem_core.unlearn import byte_patterns, byte_scan, purge

from .helpers import REPO, clustered, new_memory
from .optional import require

BACKENDS = ["hnswlib", "milvus", "exact"]
N = 2600  # above the exact-search threshold (2048): hnswlib answers through its graph
def exact(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    distances = 1.0 - queries @ vectors.T
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(distances, order, axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "milvus":
        require("pymilvus")
        require("milvus_lite")
    return request.param


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[str], np.ndarray]:
    vectors, labels = clustered(N)
    queries, _ = clustered(60, seed=1)
    return vectors, labels, queries


@pytest.fixture
def filled(tmp_path, backend, data):
    vectors, labels, _ = data
    memory = new_memory(tmp_path / "mem", backend=backend)
    ids = memory.exemplars.add_embeddings(vectors, labels)
    assert ids == list(range(N))
    yield memory
    try:
        memory.close()
    except Exception:
        pass


def test_the_memory_names_its_backend(filled, backend):
    assert filled.index.backend.name == backend
    assert filled.stats()["index_backend"]["name"] == backend


def test_search_agrees_with_exact_search(filled, data):
    vectors, _, queries = data
    found, distances = filled.search(queries, 50)
    truth, true_distances = exact(vectors, np.arange(N), queries, 50)
    assert found.shape == (len(queries), 50) and found.dtype == np.int64
    assert recall(found, truth) >= 0.95
    assert np.all(np.diff(distances, axis=1) >= -1e-6)  # nearest first
    # where both name the same neighbour, they give it the same distance (1 - cosine)
    for row in range(len(queries)):
        expected = dict(zip(truth[row], true_distances[row]))
        common = [j for j, i in enumerate(found[row]) if i in expected]
        assert np.allclose(distances[row, common], [expected[found[row, j]] for j in common], atol=1e-4)
    # an exemplar's own vector finds it first, at distance 0
    own, own_distance = filled.search(vectors[:20], 1)
    assert own[:, 0].tolist() == list(range(20)) and np.allclose(own_distance, 0, atol=1e-5)


def test_k_is_clamped_to_the_candidates(filled, data):
    _, _, queries = data
    found, distances = filled.search(queries[:2], 10, allowed_ids=np.array([5, 7, 9]))
    assert found.shape == (2, 3) and set(found[0]) == {5, 7, 9}
    found, _ = filled.search(queries[:2], 10, allowed_ids=np.array([], dtype=np.int64))
    assert found.shape == (2, 0)


def test_tombstone_hides_at_once_and_restore_brings_back(filled, data):
    vectors, _, _ = data
    gone = list(range(0, 200, 2))
    filled.exemplars.delete(gone)
    assert filled.index.backend.live_count == N - len(gone)
    found, _ = filled.search(vectors[gone], 20)
    assert not set(found.ravel().tolist()) & set(gone)
    assert not set(filled.index.backend.live_ids().tolist()) & set(gone)
    filled.exemplars.restore(gone[:10])
    found, distances = filled.search(vectors[gone[:10]], 1)
    assert found[:, 0].tolist() == gone[:10] and np.allclose(distances, 0, atol=1e-5)
    assert filled.index.backend.live_count == N - len(gone) + 10


def test_filtered_search_by_label(filled, data):
    vectors, labels, queries = data
    wanted = ["class-2", "class-5"]
    members = np.asarray([i for i, label in enumerate(labels) if label in wanted])
    found, distances = filled.search(queries, 20, labels=wanted)
    assert set(found.ravel().tolist()) <= set(members.tolist())
    truth, _ = exact(vectors[members], members, queries, 20)
    assert recall(found, truth) >= 0.95
    # a relabel moves an exemplar in or out of the filter at once
    outsider = int(next(i for i, label in enumerate(labels) if label not in wanted))
    filled.exemplars.relabel([outsider], "class-2")
    found, _ = filled.search(vectors[[outsider]], 1, labels=["class-2"])
    assert found[0, 0] == outsider
    found, _ = filled.search(vectors[[outsider]], 5, labels=[labels[outsider]])
    assert outsider not in found[0]
    # label and id filters together; an unknown label matches nothing
    found, _ = filled.search(queries[:3], 5, allowed_ids=members[:4], labels=["class-2"])
    assert set(found.ravel().tolist()) <= {int(i) for i in members[:4] if labels[i] == "class-2"}
    assert filled.search(queries[:3], 5, labels=["no-such-label"])[0].shape == (3, 0)


def test_state_survives_reopen(filled, data):
    vectors, labels, queries = data
    filled.exemplars.delete([1, 2, 3])
    filled.exemplars.relabel([10], "renamed")
    before = filled.search(queries, 10)
    path = filled.path
    filled.close()
    with VisualMemory.open(path) as memory:
        assert memory.index.backend.live_count == N - 3
        assert sorted(memory.index.backend.live_ids().tolist()) == [i for i in range(N) if i not in (1, 2, 3)]
        after = memory.search(queries, 10)
        assert recall(after[0], before[0]) >= 0.95
        assert memory.search(vectors[[10]], 1, labels=["renamed"])[0][0, 0] == 10



def search_beam(memory) -> int:
    """The ef the backend searches with now (hnswlib's own setting; the Milvus request's)."""
    backend = memory.index.backend
    return backend.index._index.ef if backend.name == "hnswlib" else backend.params.ef_search  # hnswlib keeps its own


def test_search_beam_changes_at_once_and_survives_reopen(filled, data, backend):
    if backend == "exact":
        pytest.skip("exact search has no beam (test_exact.py checks that tuning it changes nothing)")
    vectors, _, queries = data
    default = filled.index.params.ef_search
    with pytest.raises(VmemError, match="search beam ef 0: must be a positive integer"):
        filled.index.set_search_ef(0)
    assert filled.index.params.ef_search == default and search_beam(filled) == default
    assert filled.index.set_search_ef(400) == {"from": default, "to": 400}
    assert search_beam(filled) == 400
    truth, _ = exact(vectors, np.arange(N), queries, 50)
    assert recall(filled.search(queries, 50)[0], truth) >= 0.99
    assert search_beam(filled) == 400  # a search that widened the beam for k put it back
    path = filled.path
    filled.close()
    with VisualMemory.open(path) as memory:
        assert memory.index.params.ef_search == 400 and search_beam(memory) == 400
        assert memory.index.params.M == 16  # the graph's own parameters are untouched
        assert [e.payload() for e in memory.audit.log() if e.action == "tune"] == [
            {"ef_search": {"from": default, "to": 400}}]
        assert memory.audit.verify().ok


CRASH_AFTER_COMMIT = """
import os, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
import numpy as np, helpers
from vmem_core import VisualMemory
from vmem_core.errors import VmemError
mem = VisualMemory.open({path!r})
mem.exemplars.add_embeddings(np.eye(64)[:3], ["new"] * 3)
mem.exemplars.delete([4, 5])
mem.exemplars.relabel([6], "moved")
os._exit(9)  # no close: the backend's last persisted state is behind the database
"""


def test_changes_after_the_last_persist_are_replayed_on_open(filled):
    filled.index.flush()
    path = filled.path
    filled.close()
    script = CRASH_AFTER_COMMIT.format(repo=str(REPO), tests=str(REPO / "tests"), path=str(path))
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    with VisualMemory.open(path) as memory:
        live = set(memory.index.backend.live_ids().tolist())
        assert {N, N + 1, N + 2} <= live and not {4, 5} & live and len(live) == N + 1
        found, distances = memory.search(np.eye(64)[:3], 1)
        assert found[:, 0].tolist() == [N, N + 1, N + 2] and np.allclose(distances, 0, atol=1e-5)
        assert memory.search(memory.exemplars.stored_embeddings([6])[1], 1, labels=["moved"])[0][0, 0] == 6


def index_files_holding(memory, backend: str, ids: list[int], vectors: np.ndarray) -> list:
    """Where the backend's own files hold these exemplars: hnswlib's snapshot byte for byte; milvus-lite's
    compressed Parquet and Arrow files read row by row; the exact backend, which has no files, in its rows."""
    if backend == "exact":
        held = memory.index.backend.held_vectors(ids)
        return [i for i, vector in zip(ids, vectors) if i in held and np.array_equal(held[i], vector)]
    if backend == "hnswlib":
        return [hit for hit in byte_scan(memory.path, byte_patterns(vectors, [])) if hit[0].startswith("index/")]
    from vmem_core.backends.milvus import lite_rows_holding

    return lite_rows_holding(memory.index.backend.lite_path, ids, vectors)[1]


def test_purge_removes_the_data_and_says_what_was_verified(filled, data, backend):
    vectors, _, _ = data
    filled.index.flush()  # on disk in the index's files, then tombstoned: deleted rows stay in them until purged
    filled.exemplars.delete([7, 8])
    filled.index.flush()
    _, stored = filled.exemplars.stored_embeddings([7, 8, 9])
    patterns = byte_patterns(stored, [])
    assert index_files_holding(filled, backend, [7, 8, 9], stored)
    certificate = purge(filled, [7, 8, 9])
    assert certificate.passed, certificate.explain()
    index_checks = [c for c in certificate.checks if c.name.startswith("index")]
    assert index_checks and all(c.passed for c in index_checks)
    assert index_files_holding(filled, backend, [7, 8, 9], stored) == []
    assert not {7, 8, 9} & set(filled.index.backend.live_ids().tolist())
    assert filled.index.backend.live_count == N - 3
    assert byte_scan(filled.path, patterns) == []  # the index's files lie in the memory folder for both
    path = filled.path
    filled.close()
    with VisualMemory.open(path) as memory:
        found, _ = memory.search(vectors[[7, 8, 9]], 50)
        assert not {7, 8, 9} & set(found.ravel().tolist())
        assert memory.index.backend.live_count == N - 3
    assert byte_scan(path, patterns) == []


def test_migrate_to_milvus_and_back_keeps_the_memory(tmp_path, data):
    require("pymilvus")
    require("milvus_lite")
    from vmem_core.cli import main

    vectors, labels, queries = data
    path = tmp_path / "mem"
    with new_memory(path) as memory:
        memory.exemplars.add_embeddings(vectors[:800], labels[:800])
        memory.exemplars.delete([0, 1, 2])
        memory.exemplars.relabel([3], "renamed")
        before = memory.search(queries, 10)
    assert main(["migrate", str(path), "--to", "milvus", "--json"]) == 0
    assert not (path / "index").exists() and (path / "milvus").is_dir()
    with VisualMemory.open(path) as memory:
        assert memory.index.backend.name == "milvus" and memory.index.backend.live_count == 797
        after = memory.search(queries, 10)
        assert recall(after[0], before[0]) >= 0.95 and not {0, 1, 2} & set(after[0].ravel().tolist())
        assert memory.search(vectors[[3]], 1, labels=["renamed"])[0][0, 0] == 3
        memory.exemplars.delete([4])
        memory.exemplars.restore([0])
        moved = memory.index.move("hnswlib")
        assert moved["from"]["name"] == "milvus" and moved["to"]["name"] == "hnswlib"
    assert not (path / "milvus").exists() and not (path / "milvus.json").exists() and (path / "index").is_dir()
    with VisualMemory.open(path) as memory:
        assert memory.index.backend.name == "hnswlib"
        assert sorted(memory.index.backend.live_ids().tolist()) == [0] + list(range(3, 4)) + list(range(5, 800))
        assert [e.action for e in memory.audit.log()].count("migrate") == 2 and memory.audit.verify().ok


def test_migrate_refuses_what_it_cannot_do(tmp_path, capsys):
    from vmem_core.cli import main

    path = tmp_path / "mem"
    new_memory(path).close()
    assert main(["migrate", str(path), "--to", "hnswlib"]) == 2
    assert "already uses the hnswlib index" in capsys.readouterr().err
    assert main(["migrate", str(path), "--to", "hnswlib", "--index-uri", "http://host:19530"]) == 2
    assert "takes no URI" in capsys.readouterr().err
    assert main(["migrate", str(path), "--to", "milvus", "--index-uri", "host:19530"]) == 2
    err = capsys.readouterr().err
    assert "'host:19530' is not a Milvus server address" in err and "http://" in err
    assert main(["stats", str(path), "--index-uri", "http://host:19530"]) == 2
    assert "uses the hnswlib index" in capsys.readouterr().err
    with VisualMemory.open(path) as memory:  # nothing changed
        assert memory.index.backend.name == "hnswlib" and memory.audit.verify().ok
