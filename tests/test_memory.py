"""The VisualMemory facade: writes, reads, reopening, crash recovery, bad input, threads."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from vmem_core import (
    BadImageError,
    BadVectorError,
    EncoderMismatchError,
    MemoryFormatError,
    MemoryLockedError,
    UnknownIdError,
    VisualMemory,
    VmemError,
    VoteSettings,
)

from .helpers import REPO, SAMPLE, database_held_elsewhere, memory_state, new_memory


def test_build_records_everything_per_exemplar(memory, small_folder):
    assert len(memory) == 12 and list(memory.table.labels) == ["bag", "sneaker", "trouser"]
    rows = memory.exemplars.browse(limit=100)
    assert set(rows["label"]) == {"bag", "sneaker", "trouser"}
    first = rows.iloc[0]
    assert first["source"].startswith("bag/") and len(first["sha256"]) == 64
    assert bytes(first["thumbnail"]).startswith(b"\x89PNG")
    stats = memory.stats()
    assert stats["exemplars"] == 12 and stats["labels"] == {"bag": 4, "sneaker": 4, "trouser": 4}
    assert stats["encoder"] == "test-pixels" and stats["dim"] == 64


def test_config_records_format_and_encoder(memory):
    config = json.loads((memory.path / "vmem.json").read_text())
    assert config["format"] == "vmem-memory" and config["version"] == 2
    assert config["encoder"] == {"name": "test-pixels", "identity": "test-pixels:v1", "dim": 64}


def test_an_exemplar_is_its_own_nearest_neighbor(memory, small_folder):
    image = sorted((small_folder / "sneaker").glob("*.png"))[0]
    result = memory.classify([image], k=3)[0]
    assert result.label == "sneaker"
    assert result.neighbors[0].distance == pytest.approx(0.0, abs=1e-5)
    assert [n.rank for n in result.neighbors] == [0, 1, 2]
    assert [n.weight for n in result.neighbors] == pytest.approx([1 / 2, 1 / 3, 1 / 4])
    assert sum(result.scores.values()) == pytest.approx(1 / 2 + 1 / 3 + 1 / 4)


def test_k_is_clamped_to_live_exemplars(memory, small_folder):
    image = sorted((small_folder / "bag").glob("*.png"))[0]
    assert len(memory.classify([image], k=500)[0].neighbors) == 12
    memory.exemplars.delete(list(range(10)))
    assert len(memory.classify([image], k=500)[0].neighbors) == 2


def test_delete_hides_at_once_and_restore_brings_back(memory, small_folder):
    image = sorted((small_folder / "trouser").glob("*.png"))[0]
    nearest = memory.classify([image], k=1)[0].neighbors[0].id
    memory.exemplars.delete([nearest])
    assert nearest not in [n.id for n in memory.classify([image], k=12)[0].neighbors]
    assert memory.stats()["deleted"] == 1 and len(memory) == 11
    memory.exemplars.restore([nearest])
    assert memory.classify([image], k=1)[0].neighbors[0].id == nearest


def test_unknown_and_repeated_ids_are_clear_errors_that_change_nothing(memory):
    before = memory.stats()
    with pytest.raises(UnknownIdError, match="unknown exemplar id\\(s\\): 999"):
        memory.exemplars.delete([3, 999])
    assert memory.stats() == before  # id 3 was not deleted either: all or none
    memory.exemplars.delete([3])
    with pytest.raises(UnknownIdError, match="already deleted: 3"):
        memory.exemplars.delete([3])
    with pytest.raises(UnknownIdError, match="not deleted: 4"):
        memory.exemplars.restore([4])


def test_rejected_add_leaves_memory_exactly_as_it_was(memory, small_folder, tmp_path):
    path = memory.path
    memory.close()
    before = memory_state(path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    good = sorted((small_folder / "bag").glob("*.png"))[0]
    with VisualMemory.open(path) as mem:
        with pytest.raises(BadImageError, match="bad.jpg"):
            mem.exemplars.add([good, bad], "bag")
        with pytest.raises(VmemError, match="2 images but 3 labels"):
            mem.exemplars.add([good, good], ["a", "b", "c"])
        with pytest.raises(BadVectorError, match=r"accepts \(n, 64\)"):
            mem.exemplars.add_embeddings(np.ones((2, 63)), ["a", "a"])
        with pytest.raises(BadVectorError, match="NaN"):
            mem.exemplars.add_embeddings(np.full((1, 64), np.nan), ["a"])
        with pytest.raises(BadVectorError, match="zero vectors"):
            mem.exemplars.add_embeddings(np.zeros((1, 64)), ["a"])
    assert memory_state(path) == before


def test_adding_a_new_class_keeps_old_predictions(memory, small_folder):
    queries = [sorted((small_folder / label).glob("*.png"))[0] for label in ("bag", "sneaker", "trouser")]
    before = [r.label for r in memory.classify(queries, k=1)]
    dress = sorted((SAMPLE / "memory" / "dress").glob("*.png"))[:3]
    ids = memory.exemplars.add(dress, "dress")
    assert len(ids) == 3 and "dress" in list(memory.table.labels)
    assert [r.label for r in memory.classify(queries, k=1)] == before
    assert memory.classify([dress[0]], k=1)[0].label == "dress"


def test_relabel_is_recorded(memory):
    memory.exemplars.relabel([2, 3], "hat")
    memory.exemplars.relabel([2], "cap")
    memory.exemplars.relabel([2], "cap")  # no change, nothing recorded
    changes = memory.exemplars.label_changes()
    assert changes[["exemplar_id", "old_label", "new_label"]].values.tolist() == [
        [2, "hat", "cap"], [2, "bag", "hat"], [3, "bag", "hat"]
    ]
    assert memory.table.label_of(2) == "cap" and memory.table.label_of(3) == "hat"
    with pytest.raises(UnknownIdError, match="999"):
        memory.exemplars.relabel([999], "x")


def test_reopen_sees_the_same_memory(memory):
    memory.exemplars.delete([0, 1])
    memory.exemplars.relabel([2], "relabelled")
    path = memory.path
    memory.close()
    with VisualMemory.open(path) as mem:
        assert len(mem) == 10 and "relabelled" in list(mem.table.labels)
        assert sorted(mem.index.backend.live_ids().tolist()) == list(range(2, 12))


def test_opening_with_another_encoder_is_refused(memory):
    path = memory.path
    memory.close()
    with pytest.raises(EncoderMismatchError, match="built with encoder 'test-pixels'.*'test-pixels-other'"):
        VisualMemory.open(path, encoder="test-pixels-other")
    VisualMemory.open(path, encoder="test-pixels").close()


def test_not_a_memory(tmp_path):
    with pytest.raises(MemoryFormatError, match="no such memory directory"):
        VisualMemory.open(tmp_path / "missing")
    with pytest.raises(MemoryFormatError, match="not a vmem memory"):
        VisualMemory.open(tmp_path)
    (tmp_path / "vmem.json").write_text(json.dumps({"format": "vmem-memory", "version": 99}))
    with pytest.raises(MemoryFormatError, match="version 99"):
        VisualMemory.open(tmp_path)


def test_create_refuses_a_non_empty_directory(memory):
    with pytest.raises(MemoryFormatError, match="already exists"):
        new_memory(memory.path)


def test_build_resumes_without_duplicates(tmp_path, small_folder):
    with new_memory(tmp_path / "m") as mem:
        first = mem.exemplars.build(small_folder)
        second = mem.exemplars.build(small_folder)
        assert (first.added, second.added, second.skipped_existing) == (12, 0, 12)
        assert len(mem) == 12


def test_build_skips_and_reports_bad_images(tmp_path, small_folder):
    (small_folder / "bag" / "broken.png").write_bytes(b"garbage")
    with new_memory(tmp_path / "m") as mem:
        report = mem.exemplars.build(small_folder)
        assert report.added == 12 and len(report.rejected) == 1 and "broken.png" in report.rejected[0][1]
        with pytest.raises(BadImageError):
            mem.exemplars.build(small_folder, strict=True)  # broken.png was never added, so it is tried again


def test_build_from_csv(tmp_path, small_folder):
    rows = ["path,label"] + [f"{p.relative_to(small_folder)},{p.parent.name}" for p in small_folder.rglob("*.png")]
    (small_folder / "list.csv").write_text("\n".join(rows))
    with new_memory(tmp_path / "m") as mem:
        assert mem.exemplars.build(small_folder / "list.csv").added == 12
        assert mem.stats()["labels"] == {"bag": 4, "sneaker": 4, "trouser": 4}


def test_memory_neighbors_leave_the_item_out(memory):
    items, neighbors, distances = memory.search.memory_neighbors(3)
    assert neighbors.shape == (12, 3)
    assert not np.any(neighbors == items[:, None])
    assert np.all(np.diff(distances, axis=1) >= -1e-6)


def test_reliability_counts_differently_labelled_neighborhoods(memory):
    v = memory.reliability(top_n=3)
    items, neighbors, _ = memory.search.memory_neighbors(3)
    expected = {int(i): 0 for i in items}
    for item, row in zip(items, neighbors):
        for n in row:
            if memory.table.label_of(int(n)) != memory.table.label_of(int(item)):
                expected[int(n)] += 1
    assert v == expected


def test_memory_locked_by_another_process(memory):
    path = memory.path
    memory.close()
    with database_held_elsewhere(path), pytest.raises(MemoryLockedError, match="open in another process"):
        VisualMemory.open(path)


CRASH_PREAMBLE = """
import os, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
import numpy as np
import helpers  # registers the test encoder
from vmem_core import VisualMemory
mem = VisualMemory.open({path!r})
"""


def run_then_crash(path, body: str) -> None:
    """Run `body` on the memory at `path` in another process that then dies without closing (like kill -9)."""
    script = CRASH_PREAMBLE.format(repo=str(REPO), tests=str(REPO / "tests"), path=str(path)) + body + "\nos._exit(9)\n"
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9


def test_crash_after_commit_is_replayed_on_open(memory):
    path = memory.path
    memory.close()
    run_then_crash(path, 'mem.exemplars.add_embeddings(np.eye(64)[:5] + 0.01, ["new"] * 5)\nmem.exemplars.delete([0, 1])')
    with VisualMemory.open(path) as mem:
        assert len(mem) == 15 and "new" in list(mem.table.labels)
        assert sorted(mem.index.backend.live_ids().tolist()) == list(range(2, 17))
        assert mem.search.classify_embeddings(np.eye(64)[:1] + 0.01, k=1)[0].label == "new"


def test_concurrent_readers_and_writers(memory, small_folder):
    images = sorted(small_folder.rglob("*.png"))
    vectors = memory.exemplars.encode(images)
    errors = []

    def reader():
        try:
            for _ in range(30):
                results = memory.search.classify_embeddings(vectors, k=5)
                assert all(r.label is not None for r in results)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def writer():
        try:
            for i in range(10):
                ids = memory.exemplars.add_embeddings(vectors[i:i + 1], ["extra"])
                memory.exemplars.delete(ids)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(memory) == 12 and memory.stats()["deleted"] == 10


def test_browse_filters_and_pagination(memory):
    import datetime as dt

    assert memory.exemplars.count() == 12 and memory.exemplars.count(label="bag") == 4
    assert memory.exemplars.count(source="SNEAKER/") == 4  # case-insensitive substring
    page = memory.exemplars.browse(limit=5, offset=10)
    assert page["id"].tolist() == [10, 11]
    tomorrow = dt.datetime.now() + dt.timedelta(days=1)
    assert memory.exemplars.count(added_from=tomorrow) == 0 and memory.exemplars.count(added_to=tomorrow) == 12
    memory.exemplars.delete([0])
    assert memory.exemplars.count() == 11 and memory.exemplars.count(include_deleted=True) == 12
    assert memory.exemplars.count(label="bag'; DROP TABLE exemplars; --") == 0 and memory.exemplars.count() == 11
    thumbs = memory.exemplars.thumbnails([1, 2])
    assert set(thumbs) == {1, 2} and all(t.startswith(b"\x89PNG") for t in thumbs.values())


def test_thumbnails_absent_for_embedding_only_exemplars(memory):
    (new,) = memory.exemplars.add_embeddings(np.ones((1, 64)), ["vector"])
    assert memory.exemplars.thumbnails([new, 0]) == {new: None, 0: memory.exemplars.thumbnails([0])[0]}


def test_restore_of_a_row_the_index_never_saw(memory):
    """Added and deleted after the last snapshot, then a crash: replay skips it, so restore must add it."""
    path = memory.path
    memory.close()
    run_then_crash(path, '(new,) = mem.exemplars.add_embeddings(np.eye(64)[7:8] + 0.01, ["ghost"])\nmem.exemplars.delete([new])')
    with VisualMemory.open(path) as mem:
        mem.exemplars.restore([12])
        assert mem.search.classify_embeddings(np.eye(64)[7:8] + 0.01, k=1)[0].neighbors[0].id == 12
    with VisualMemory.open(path) as mem:  # and the snapshot written on close has it too
        assert mem.search.classify_embeddings(np.eye(64)[7:8] + 0.01, k=1)[0].label == "ghost"


def test_restore_after_the_snapshot_recorded_the_delete(memory):
    """The snapshot holds id 4 as deleted; it is restored and the process dies: searches must work and find it."""
    vector = memory.exemplars.embeddings([4])[1]
    memory.exemplars.delete([4])
    path = memory.path
    memory.close()
    run_then_crash(path, "mem.exemplars.restore([4])")
    for _ in range(2):  # and again after a clean close and reopen
        with VisualMemory.open(path) as mem:
            assert mem.search(vector, 1)[0][0, 0] == 4
            assert len(mem.search.classify_embeddings(vector, k=12)[0].neighbors) == 12


def test_readers_never_see_labels_mid_relabel(memory):
    """Relabelling to a label that sorts first shifts every class index; a reader must still see one state."""
    vector = memory.exemplars.embeddings([8])[1]  # a trouser; its own nearest neighbour
    stop = threading.Event()
    wrong = []

    def reader():
        while not stop.is_set():
            label = memory.search.classify_embeddings(vector, k=1)[0].label
            if label != "trouser":
                wrong.append(label)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(40):
        memory.exemplars.relabel([0], "aaa" if i % 2 == 0 else "bag")
    stop.set()
    for t in threads:
        t.join()
    assert wrong == []


def test_leave_one_out_cache_not_stamped_with_a_later_change(memory, monkeypatch):
    import vmem_core.storage.neighbour_table as neighbour_table
    from vmem_core.storage.layout import NEIGHBOUR_TABLE

    path = memory.path
    memory.close()
    (path / NEIGHBOUR_TABLE).unlink()  # the build made one: start again from none, so that it is built now
    memory = VisualMemory.open(path)
    original = neighbour_table.search_rows

    def slow(ids, search, depth):
        result = original(ids, search, depth)
        monkeypatch.setattr(neighbour_table, "search_rows", original)
        memory.exemplars.delete([0])  # a write lands while the neighbour table is being built
        return result

    monkeypatch.setattr(neighbour_table, "search_rows", slow)
    with memory:
        memory.search.memory_neighbors(3)
        items, neighbors, _ = memory.search.memory_neighbors(3)
    assert 0 not in items and 0 not in neighbors


def test_hard_pruning_keeps_k_voters_and_matches_evaluation(tmp_path):
    from vmem_core.analysis.evaluate import evaluate_embeddings

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(3, 64))
    vectors = np.concatenate([c + 0.6 * rng.normal(size=(40, 64)) for c in centres])
    labels = [f"c{i}" for i in range(3) for _ in range(40)]
    flipped = rng.choice(len(labels), 15, replace=False)
    for i in flipped:
        labels[i] = f"c{(int(labels[i][1]) + 1) % 3}"
    queries = np.concatenate([c + 0.6 * rng.normal(size=(10, 64)) for c in centres])
    truth = [f"c{i}" for i in range(3) for _ in range(10)]
    with new_memory(tmp_path / "m") as mem:
        mem.exemplars.add_embeddings(vectors, labels)
        kept = set(mem.reliability.kept_ids(VoteSettings(threshold=2, top_n=5)).tolist())
        assert 0 < len(kept) < len(mem)
        results = mem.search.classify_embeddings(queries, k=10, pruning="hard", threshold=2, top_n=5)
        assert all(len(r.neighbors) == 10 for r in results)
        assert all(n.id in kept for r in results for n in r.neighbors)
        assert all([n.rank for n in r.neighbors] == list(range(10)) for r in results)
        accuracy = np.mean([r.label == t for r, t in zip(results, truth)])
        curve = evaluate_embeddings(mem, queries, truth, k_max=20, pruning="hard", threshold=2, top_n=5)
        assert curve.accuracy["rank"][9] == pytest.approx(accuracy)


def test_incremental_label_table_matches_a_fresh_read(memory):
    from vmem_core.memory import LabelTable

    def fresh():
        rows = memory.exemplars.browse(limit=10**6, thumbnails=False).sort_values("id")
        return LabelTable.from_rows(rows["id"].to_numpy(), rows["label"].tolist())

    steps = [
        lambda: memory.exemplars.add_embeddings(np.ones((2, 64)), ["aaa", "zzz"]),  # new labels sorting first and last
        lambda: memory.exemplars.delete([0, 1, 2, 3]),  # every "bag": the label disappears
        lambda: memory.exemplars.restore([1]),
        lambda: memory.exemplars.delete([12]),
        lambda: memory.exemplars.relabel([5], "mmm"),
    ]
    for step in steps:
        step()
        table, expected = memory.table, fresh()
        assert table.labels == expected.labels
        assert table.ids.tolist() == expected.ids.tolist() and table.classes.tolist() == expected.classes.tolist()


def test_memory_of_the_first_schema_migrates_on_open(tmp_path):
    """vmem's first schema kept embeddings and thumbnails inside DuckDB; opening moves them to the vault."""
    import duckdb

    path = tmp_path / "old.vmem"
    path.mkdir()
    (path / "vmem.json").write_text(json.dumps({
        "format": "vmem-memory", "version": 1,
        "encoder": {"name": "test-pixels", "identity": "test-pixels:v1", "dim": 64}, "index": {}}))
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(3, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    con = duckdb.connect(str(path / "memory.duckdb"))
    con.execute("""CREATE TABLE exemplars (id BIGINT PRIMARY KEY, label VARCHAR NOT NULL, source VARCHAR NOT NULL,
                   sha256 VARCHAR NOT NULL, thumbnail BLOB, added_at TIMESTAMP NOT NULL, encoder VARCHAR NOT NULL,
                   embedding FLOAT[64] NOT NULL, deleted_at TIMESTAMP, changed_seq BIGINT NOT NULL)""")
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('seq', 1), ('next_id', 3), ('schema_version', 1)")
    for i in range(3):
        con.execute("INSERT INTO exemplars VALUES (?, ?, 's', 'h', ?, now(), 'test-pixels:v1', ?, NULL, 1)",
                    [i, "ab"[i % 2], b"thumb%d" % i if i else None, vectors[i].tolist()])
    con.close()
    with VisualMemory.open(path) as mem:
        ids, stored = mem.exemplars.embeddings()
        assert ids.tolist() == [0, 1, 2] and np.array_equal(stored, vectors)
        assert mem.exemplars.thumbnails([0, 1, 2]) == {0: None, 1: b"thumb1", 2: b"thumb2"}
        assert mem.search(vectors[2:], 1)[0][0, 0] == 2
        assert mem.exemplars.add_embeddings(vectors[:1], ["c"]) == [3]
    columns = duckdb.connect(str(path / "memory.duckdb")).execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'exemplars'").fetchall()
    assert ("embedding",) not in columns and ("thumbnail",) not in columns
    assert json.loads((path / "vmem.json").read_text())["version"] == 2


@pytest.mark.slow
def test_heavy_deletion_and_selective_filters_still_answer(tmp_path):
    """hnswlib raises when fewer than k live items are reachable; vmem widens the search or goes exact instead."""
    rng = np.random.default_rng(4)
    from vmem_core.backends.hnsw_index import EXACT_SEARCH_BELOW

    n = 25_000
    vectors = rng.normal(size=(n, 64)).astype(np.float32)
    with new_memory(tmp_path / "m") as mem:
        ids = mem.exemplars.add_embeddings(vectors, [f"c{i % 7}" for i in range(n)])
        mem.exemplars.delete(ids[: n * 9 // 10])  # 90% gone; 2,500 live stay above the exact-search size: hnswlib answers
        assert len(mem) > EXACT_SEARCH_BELOW
        found, distances = mem.search(vectors[-10:], 50)
        assert found.shape == (10, 50) and not np.isin(found, ids[: n * 9 // 10]).any()
        assert (found[:, 0] == np.arange(n - 10, n)).all()  # each finds itself first
        allowed = np.asarray([n - 300, n - 200, n - 100])  # a filter that matches 3 exemplars
        found, _ = mem.search(vectors[:2], 10, allowed_ids=allowed)
        assert found.shape == (2, 3) and set(found.ravel()) == set(allowed.tolist())
        results = mem.search.classify_embeddings(vectors[-10:], k=100)
        assert all(len(r.neighbors) == 100 and r.label for r in results)
