"""Verifiable unlearning: tombstones, physical purge, the certificate, the audit log, crash safety."""

import json
import logging
import subprocess
import sys

import duckdb
import numpy as np
import pytest

from vmem_core import UnknownIdError, VisualMemory
from vmem_core.errors import VmemError
from vmem_core.purge_proof import verify_certificate
from vmem_core.unlearn import byte_patterns, byte_scan, memory_digest, purge

from .helpers import REPO, new_memory


def leftovers(memory, ids):
    """Byte patterns of exemplars (embeddings, thumbnails), for scanning the memory directory."""
    rows = memory.exemplars.rows(ids)
    _, vectors = memory.exemplars.stored_embeddings(ids)
    return byte_patterns(vectors, [bytes(t) if t is not None else None for t in rows["thumbnail"]])


def test_byte_scan_finds_the_bytes_before_purge_and_not_after(memory):
    memory.exemplars.delete([3])
    memory.index.flush()  # the snapshot on disk now holds id 3 as a deleted element, its vector intact
    patterns = leftovers(memory, [3])
    before = byte_scan(memory.path, patterns)
    assert any(path.startswith("index/") and "float32" in name for path, name in before)
    certificate = purge(memory, [3])
    assert certificate.passed, certificate.explain()
    assert byte_scan(memory.path, patterns) == []
    assert 3 not in memory.exemplars.rows([3])["id"].tolist()
    names = [c.name for c in certificate.checks]
    assert names == ["byte scan", "removed images return none of their ids", "exactness", "index (hnswlib)"]
    assert "1 record(s) overwritten in place in the snapshot file" in certificate.checks[3].detail
    assert certificate.removed[0].id == 3 and len(certificate.removed[0].embedding_sha256) == 64


def test_purge_all_tombstones_and_nothing_else(memory):
    memory.exemplars.delete([1, 2])
    live_before = sorted(memory.table.ids.tolist())
    certificate = purge(memory)
    assert [r.id for r in certificate.removed] == [1, 2]
    assert sorted(memory.table.ids.tolist()) == live_before
    assert memory.stats()["deleted"] == 0
    assert certificate.digest_before != certificate.digest_after


def test_purge_of_unknown_or_purged_ids_changes_nothing(memory):
    purge(memory, [4])
    digest = memory_digest(memory)
    entries = len(memory.audit.log())
    for bad in ([4], [999], [5, 4]):
        with pytest.raises(UnknownIdError, match="unknown or already purged"):
            purge(memory, bad)
    assert memory_digest(memory) == digest and len(memory.audit.log()) == entries
    assert 5 in memory.table.ids  # not purged with the bad id


def test_purged_memory_reopens_consistently(memory):
    purge(memory, [0, 6])
    path = memory.path
    memory.close()
    with VisualMemory.open(path) as mem:
        assert len(mem) == 10 and mem.index.backend.live_count == 10
        assert set(mem.index.backend.live_ids().tolist()) == set(range(12)) - {0, 6}
        ids, _ = mem.search(mem.exemplars.embeddings()[1], 10)
        assert not np.isin(ids, [0, 6]).any()


def test_audit_log_records_every_change_and_chains(memory):
    memory.exemplars.delete([1])
    memory.exemplars.restore([1])
    memory.exemplars.relabel([2], "hat")
    purge(memory, [2])
    entries = memory.audit.log()
    assert [e.action for e in entries] == ["create", "add", "delete", "restore", "relabel", "purge", "certify"]
    assert entries[1].payload() == {"ids": {"count": 12, "runs": [[0, 11]]},
                                    "labels": {"bag": 4, "sneaker": 4, "trouser": 4},
                                    "label_runs": [["bag", 4], ["sneaker", 4], ["trouser", 4]]}
    assert all(e.actor.endswith("via library") for e in entries)
    assert memory.audit.verify().ok and memory.audit.verify().entries == len(entries)
    purged, certified = entries[-2].payload(), entries[-1].payload()
    assert purged["ids"] == [2] and len(purged["commitments"]) == 1 and "image_sha256" not in purged
    assert certified["purge_id"] == purged["purge_id"] and len(certified["certificate_sha256"]) == 64


def test_audit_log_refuses_an_action_no_reader_knows(memory):
    # readers match on action names (`vmem purge verify` looks for "purge" and "certify"): a misspelt one would chain
    # an entry nobody finds. The store is the only writer of the log, so it is reached directly here.
    before = memory.audit.log()
    with pytest.raises(ValueError, match=r"'certified' is not one of .*certify"):
        memory._store.log_event("certified", {"purge_id": "x"})
    memory.index.set_search_ef(64)
    assert [e.action for e in memory.audit.log()] == [e.action for e in before] + ["tune"]
    assert memory.audit.verify().ok


@pytest.mark.parametrize("tamper", ["edit", "remove", "rehash-one", "cut-the-end"])
def test_audit_tampering_is_detected(memory, tamper):
    memory.exemplars.delete([1])
    memory.exemplars.restore([1])
    delete_seq = next(e.seq for e in memory.audit.log() if e.action == "delete")
    path = memory.path
    memory.close()
    con = duckdb.connect(str(path / "memory.duckdb"))
    if tamper == "edit":
        con.execute("UPDATE audit_log SET details = '{\"ids\":{\"count\":1,\"runs\":[[9,9]]}}' WHERE action='delete'")
    elif tamper == "remove":
        con.execute("DELETE FROM audit_log WHERE action = 'delete'")
    elif tamper == "cut-the-end":
        con.execute("DELETE FROM audit_log WHERE seq >= ?", [delete_seq])
    else:  # a careful forger recomputes the edited entry's own hash: the next link still breaks
        from vmem_core.storage.audit import entry_hash

        seq, at, actor, action, _, prev, _ = con.execute("SELECT * FROM audit_log WHERE action='delete'").fetchone()
        forged = '{"ids":{"count":1,"runs":[[9,9]]}}'
        con.execute("UPDATE audit_log SET details = ?, hash = ? WHERE seq = ?",
                    [forged, entry_hash(prev, seq, at, actor, action, forged), seq])
    con.close()
    with VisualMemory.open(path) as mem:
        result = mem.audit.verify()
    assert not result.ok
    # an edit breaks its own entry; a removal or a re-hashed forgery breaks the link of the entry after it
    assert result.first_broken == (delete_seq if tamper in ("edit", "cut-the-end") else delete_seq + 1)
    cli = subprocess.run([sys.executable, "-m", "vmem_core.cli", "audit", "verify", str(path)],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 1 and "BROKEN" in cli.stdout


def test_near_duplicates_of_a_deleted_exemplar_are_listed(memory):
    vector = memory.exemplars.embeddings([7])[1]
    (twin,) = memory.exemplars.add_embeddings(vector * 1.0001, ["bag"])
    memory.exemplars.delete([7])
    assert [other for other, _ in memory.exemplars.near_duplicates_of([7], max_distance=1e-3)[7]] == [twin]
    memory.exemplars.delete([twin])
    assert memory.exemplars.near_duplicates_of([7, twin], max_distance=1e-3) == {}


CRASH_DURING_PURGE = """
import os, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
import helpers  # registers the test encoder
from vmem_core import VisualMemory
from vmem_core.storage import store, vault
from vmem_core.backends import hnsw
from vmem_core.unlearn import purge
from vmem_core.memory import erasure

where = {where!r}
def crash_around(owner, name, before):
    original = getattr(owner, name)
    def wrapper(*a, **kw):
        if before:
            os._exit(9)
        original(*a, **kw)
        os._exit(9)
    setattr(owner, name, wrapper)

owner, name, before = {{
    "before-snapshot-patch": (hnsw, "patch_snapshot", True),
    "after-snapshot-patch": (hnsw, "patch_snapshot", False),
    "after-vault-erase": (vault.Vault, "erase", False),
    "before-rewrite": (store.Store, "rewrite", True),
    "after-rewrite": (store.Store, "rewrite", False),
    "before-certify": (erasure.Erasure, "record_certificate", True),
    "after-certify": (erasure.Erasure, "record_certificate", False),
}}[where]
crash_around(owner, name, before)
mem = VisualMemory.open({path!r})
purge(mem, [3, 8], certificate_path={certificate!r})
"""


@pytest.mark.parametrize("where", ["before-snapshot-patch", "after-snapshot-patch", "after-vault-erase",
                                   "before-rewrite", "after-rewrite", "before-certify", "after-certify"])
def test_crash_during_purge_is_finished_and_certified_on_open(memory, where, tmp_path, caplog):
    patterns = leftovers(memory, [3, 8])
    memory.index.flush()
    path = memory.path
    memory.close()
    assert byte_scan(path, patterns)  # the snapshot and the vault hold them before
    certificate_path = tmp_path / "certificate.json"
    script = CRASH_DURING_PURGE.format(repo=str(REPO), tests=str(REPO / "tests"), path=str(path), where=where,
                                       certificate=str(certificate_path))
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert (path / "purge.journal.json").exists() and not certificate_path.exists()
    with caplog.at_level(logging.WARNING, logger="vmem_core.unlearn"), VisualMemory.open(path) as mem:
        # whoever reopens it is told where the certificate went
        assert "of 2 exemplar(s) finished, checks passed; certificate written to " + str(certificate_path) in caplog.text
        assert not (path / "purge.journal.json").exists()
        assert len(mem) == 10 and mem.index.backend.live_count == 10
        assert mem.exemplars.rows([3, 8]).empty
        actions = [e.action for e in mem.audit.log()]
        assert actions.count("purge") == 1 and actions.count("certify") == 1  # never a second, unmatched certificate
        assert mem.audit.verify().ok
        assert byte_scan(path, patterns) == []
        # the certificate the crashed purge would have written, with the salts its commitments were logged with
        certificate = json.loads(certificate_path.read_text())
        assert certificate["ids"] == [3, 8] and certificate["passed"]
        # stopped after its checks, the purge's own certificate is handed out unchanged; before them, reopen makes it
        assert certificate["finished_on_reopen"] == (where not in ("before-certify", "after-certify"))
        assert [c["name"] for c in certificate["checks"]][:3] == [
            "byte scan", "removed images return none of their ids", "exactness"]
        assert verify_certificate(mem, certificate).ok
    assert byte_scan(path, patterns) == []  # and after the snapshot written on close
    # the salts were in the journal only: with the journal gone, nothing in the folder can open the commitments
    salts = [r["salt"].encode() for r in certificate["removed"]]
    assert byte_scan(path, [(f"salt {i}", salt) for i, salt in enumerate(salts)]) == []
    cli = subprocess.run([sys.executable, "-m", "vmem_core.cli", "purge", "verify", str(certificate_path), str(path)],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 0, cli.stdout + cli.stderr


@pytest.mark.parametrize("journal", ["no certificate path", "from an earlier version"])
def test_crashed_purge_with_nowhere_to_send_its_certificate_keeps_no_salt(memory, journal):
    path = memory.path
    memory.close()
    script = CRASH_DURING_PURGE.format(repo=str(REPO), tests=str(REPO / "tests"), path=str(path),
                                       where="after-vault-erase", certificate=None)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    written = json.loads((path / "purge.journal.json").read_text())
    salts = [r["salt"].encode() for r in written["certificate_plan"]["removed"]]
    if journal == "from an earlier version":  # journals then held no certificate plan
        del written["certificate_plan"]
        (path / "purge.journal.json").write_text(json.dumps(written))
    with VisualMemory.open(path) as mem:
        assert mem.exemplars.rows([3, 8]).empty and mem.audit.verify().ok
        actions = [e.action for e in mem.audit.log()]
    assert not (path / "purge.journal.json").exists()
    assert byte_scan(path, [(f"salt {i}", salt) for i, salt in enumerate(salts)]) == []
    receipts = [json.loads(p.read_text()) for p in (path / "certificates").glob("purge-*.json")]
    if journal == "no certificate path":  # certified and receipted, though no one holds the certificate
        assert actions.count("certify") == 1 and receipts[0]["finished_on_reopen"] and receipts[0]["passed"]
        assert receipts[0]["commitments"] == written["details"]["commitments"]
    else:
        assert "certify" not in actions and not receipts


@pytest.mark.slow
def test_random_kills_during_purge_never_leave_it_half_done(tmp_path):
    rng = np.random.default_rng(11)
    for attempt in range(3):
        path = tmp_path / f"m{attempt}"
        with new_memory(path) as mem:
            mem.exemplars.add_embeddings(rng.normal(size=(3000, 64)), [f"c{i % 5}" for i in range(3000)])
            vectors = mem.exemplars.stored_embeddings([10, 20])[1]
        script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r});"
                  f"import helpers; from vmem_core import VisualMemory; from vmem_core.unlearn import purge;"
                  f"purge(VisualMemory.open({str(path)!r}), [10, 20])")
        process = subprocess.Popen([sys.executable, "-c", script])
        try:
            process.wait(timeout=float(rng.uniform(1.0, 4.0)))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with VisualMemory.open(path) as mem:
            assert not (path / "purge.journal.json").exists()
            purged = mem.exemplars.rows([10, 20]).empty
            assert len(mem) == (2998 if purged else 3000) and mem.index.backend.live_count == len(mem)
            assert mem.audit.verify().ok
            if purged:
                assert byte_scan(path, byte_patterns(vectors, [])) == []


def test_identical_image_that_stays_is_named_not_failed(memory):
    """Purging one of two byte-identical exemplars cannot remove bytes the other one still holds: say so."""
    image = memory.exemplars.thumbnails([5])[5]
    first, second = memory.exemplars.add([image, image], "twin")
    certificate = purge(memory, [first])
    assert certificate.passed, certificate.explain()
    assert "not searched: byte-identical to an exemplar that stays" in certificate.checks[0].detail
    assert second in memory.table.ids


def test_purge_when_the_snapshot_is_of_an_older_format(memory):
    """An old-format snapshot cannot be patched: the purge writes a fresh one, and no stale file survives."""
    import json

    memory.index.flush()
    path = memory.path
    patterns = leftovers(memory, [6])
    memory.close()
    manifest_path = path / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({"format": 1, "file": manifest["file"], "sha256": "x",
                                         "applied_seq": manifest["applied_seq"], "dim": 64}))
    with VisualMemory.open(path) as mem:  # the index is rebuilt; the old file still holds the vectors
        assert byte_scan(path, patterns)
        certificate = purge(mem, [6])
        assert certificate.passed, certificate.explain()
    assert byte_scan(path, patterns) == []


def test_crashed_add_leaves_no_bytes_for_a_later_purge_to_miss(memory):
    """An add killed after its vault write but before its commit: those bytes must not outlive the next write (an
    open only reads: it leaves them, and the first add or purge cuts them off)."""
    extra = np.stack([np.eye(64)[9], np.eye(64)[10]]) + 0.02
    path = memory.path
    memory.close()
    script = (f"import os, sys; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r});"
              "import numpy as np, helpers; from vmem_core import VisualMemory; from vmem_core.storage import store;"
              "store.Store._insert_rows = lambda *a, **k: os._exit(9);"
              f"VisualMemory.open({str(path)!r}).exemplars.add_embeddings(np.stack([np.eye(64)[9], np.eye(64)[10]]) + 0.02,"
              " ['x', 'y'], thumbnails=[b'ghost-thumbnail-one', b'ghost-thumbnail-two'])")
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    orphans = byte_patterns(extra / np.linalg.norm(extra, axis=1, keepdims=True),
                            [b"ghost-thumbnail-one", b"ghost-thumbnail-two"])
    with VisualMemory.open(path) as mem:
        mem.exemplars.delete([0])
        mem.exemplars.restore([0])
        assert byte_scan(path, orphans) == []  # trimmed by the first write
        (again,) = mem.exemplars.add_embeddings(extra[1:], ["y"])
        assert again == 12 and purge(mem, [again]).passed


def test_failed_add_writes_nothing(memory):
    from vmem_core.memory.stats import disk_usage

    before = {part: size for part, size in disk_usage(memory.path).items() if part in ("vectors", "thumbnails")}
    with pytest.raises(Exception):
        memory.exemplars.add_embeddings(np.ones((1, 64)), ["x"], sha256=[123], thumbnails=[b"never-stored"])
    assert {part: size for part, size in disk_usage(memory.path).items() if part in ("vectors", "thumbnails")} == before


def test_purge_removes_stray_index_files_and_stale_snapshots(memory):
    vector = memory.exemplars.stored_embeddings([2])[1]
    memory.index.flush()
    (memory.path / "index" / ".index.crashed.tmp").write_bytes(b"x" + vector.tobytes())
    assert purge(memory, [2]).passed
    assert not (memory.path / "index" / ".index.crashed.tmp").exists()


def test_purge_after_the_index_was_rebuilt_from_a_damaged_snapshot(memory):
    memory.exemplars.delete([3])
    memory.index.flush()
    patterns = leftovers(memory, [3])
    path = memory.path
    memory.close()
    snapshot = next((path / "index").glob("index.*.hnsw"))
    data = bytearray(snapshot.read_bytes())
    data[-1] ^= 0xFF  # damage far from id 3's record: the file still holds its vector
    snapshot.write_bytes(bytes(data))
    with VisualMemory.open(path) as mem:  # rebuilt from the store, without the tombstoned id 3
        assert purge(mem, [3]).passed
        assert byte_scan(path, patterns) == []


def test_patch_refuses_a_damaged_chunk(memory):
    from vmem_core.backends.hnsw_index import element_bytes, patch_snapshot

    memory.index.flush()
    snapshot = next((memory.path / "index").glob("index.*.hnsw"))
    vector = memory.exemplars.stored_embeddings([4])[1][0]
    data = bytearray(snapshot.read_bytes())
    data[-1] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    assert patch_snapshot(memory.path / "index", [(element_bytes(vector, 4), element_bytes(vector * 0, 4))]) is None


def test_patch_overwrites_each_element_where_its_label_puts_it_and_skips_the_rest(memory):
    from vmem_core.backends.hnsw_index import element_bytes, element_offsets, patch_snapshot

    memory.index.flush()
    snapshot = next((memory.path / "index").glob("index.*.hnsw"))
    vectors = memory.exemplars.stored_embeddings([4, 5])[1]
    places = element_offsets(snapshot, [4, 5, 10**9])
    assert sorted(places) == [4, 5]  # a label the file lacks has no place
    old = element_bytes(vectors[0], 4)
    assert snapshot.read_bytes()[places[4]:places[4] + len(old)] == old
    noise = np.ones_like(vectors[0])
    # 5's old bytes are not what it holds (already patched): skipped, as is a label the file lacks
    assert patch_snapshot(memory.path / "index", [(element_bytes(vectors[0], 4), element_bytes(noise, 4)),
                                                  (element_bytes(noise, 5), element_bytes(noise * 2, 5)),
                                                  (element_bytes(noise, 10**9), element_bytes(noise, 10**9))]) == 1
    data = snapshot.read_bytes()
    assert data.find(element_bytes(vectors[0], 4)) < 0 and data.find(element_bytes(noise, 4)) == places[4]
    assert data.find(element_bytes(vectors[1], 5)) == places[5]


def test_concurrent_purges_both_complete(memory):
    import threading

    errors = []
    threads = [threading.Thread(target=lambda i=i: errors.append(None) if purge(memory, [i]).passed
                                else errors.append(i)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [None, None]
    assert memory.exemplars.rows([1, 2]).empty and memory.audit.verify().ok


def test_twin_kept_only_as_a_tombstone_is_named(memory):
    vector = memory.exemplars.stored_embeddings([5])[1]
    (twin,) = memory.exemplars.add_embeddings(vector, ["twin"])
    memory.exemplars.delete([5])  # the original stays, tombstoned
    certificate = purge(memory, [twin])
    assert certificate.passed, certificate.explain()
    assert "byte-identical to an exemplar that stays" in certificate.checks[0].detail


def test_unlearning_measured_for_the_report(memory):
    """The report's measurement: single deletions timed, one certified purge, every query's prediction exact."""
    from vmem_core.analysis.unlearning import measure_unlearning

    ticks = iter(np.arange(0, 100, 0.004))  # a clock that moves 4 ms per reading: each deletion "takes" 4 ms
    ids, vectors = memory.exemplars.embeddings()
    probes = vectors[:5] + 0.01  # queries near exemplars, some of them about to be deleted
    result = measure_unlearning(memory, deletions=3, probes=probes, clock=lambda: float(next(ticks)))
    assert result["exemplars"] == 12 and result["deletions"] == 3 and len(memory) == 9
    assert result["delete_ms"] == {"median": pytest.approx(4.0), "p95": pytest.approx(4.0), "max": pytest.approx(4.0)}
    assert result["paper_deletion_ms"] == 20.0 and result["probes"] == 5
    checks = {check["name"]: check for check in result["certificate"]["checks"]}
    assert result["certificate"]["passed"] and checks["byte scan"]["passed"] and checks["exactness"]["passed"]
    assert checks["exactness"]["detail"].startswith("5 probe queries: predictions and 10 nearest neighbours equal")
    purged = sorted(set(ids.tolist()) - set(memory.exemplars.browse(include_deleted=True, limit=100)["id"].tolist()))
    assert len(purged) == 3 and result["purge"]["exemplars"] == 3
    assert memory.exemplars.rows(purged).empty  # gone, not tombstoned
    with pytest.raises(VmemError, match="between 1 and the 9 live exemplars, got 10"):
        measure_unlearning(memory, deletions=10)


def test_audit_text_output_shortens_a_long_entry_and_json_keeps_it(memory, capsys):
    from vmem_core.cli import main

    memory.exemplars.delete(list(range(8)))
    purge(memory, list(range(8)))
    path = str(memory.path)
    memory.close()
    assert main(["audit", path]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if " purge " in line)
    assert len(line) < 400 and "characters; --json shows them all)" in line
    assert main(["audit", path, "--json"]) == 0
    (entry,) = [e for e in json.loads(capsys.readouterr().out) if e["action"] == "purge"]
    assert len(entry["details"]["commitments"]) == 8


def test_an_open_that_finds_a_purge_journal_and_nothing_to_finish_it_fails_closed(memory, monkeypatch):
    # unlearn registers what finishes an interrupted purge (the memory cannot import it); without it an open must
    # refuse rather than hand out a half-purged memory
    from vmem_core.errors import MemoryFormatError
    from vmem_core.memory import core
    from vmem_core.storage.layout import PURGE_JOURNAL

    path = memory.path
    memory.close()
    (path / PURGE_JOURNAL).write_text("{}")
    monkeypatch.setattr(core, "_purge_finishers", [])
    with pytest.raises(MemoryFormatError, match="a purge was interrupted here"):
        VisualMemory.open(path)


def test_exactness_says_no_when_an_exemplar_that_stays_changed_during_the_purge(memory, monkeypatch):
    """The exactness check compares the exemplars that stay before and after: a purge that also disturbed one of them
    (here its vector in the vault, after the removal) is certified as failed, naming it."""
    from vmem_core.storage.store import Store

    erase = Store.purge
    vault = memory._store.vault

    def purge_and_disturb_another(self, *args, **kwargs):
        result = erase(self, *args, **kwargs)
        with open(vault.vectors_path, "r+b") as f:
            f.seek(5 * vault.record)
            f.write(np.full(vault.record // 4, 0.5, dtype="<f4").tobytes())
        return result

    monkeypatch.setattr(Store, "purge", purge_and_disturb_another)
    certificate = purge(memory, [3])
    checks = {c.name: c for c in certificate.checks}
    assert not certificate.passed and not checks["exactness"].passed
    assert "stored exemplars DIFFER" in checks["exactness"].detail
    assert checks["byte scan"].passed  # the removed exemplar itself is gone: only the exactness check says no


def test_exactness_says_no_when_no_exemplar_remains_where_some_should(memory, monkeypatch):
    """A purge that left none of the exemplars it should keep (here: every row reads as deleted afterwards) is
    certified as failed, not a crash of the check."""
    from vmem_core import purge_proof

    reads = []
    init = purge_proof.StoredRows.__init__

    def read_and_lose_everything_after(self, *args, **kwargs):
        init(self, *args, **kwargs)
        reads.append(self)
        if len(reads) == 2:  # the memory after the purge
            self.tombstoned = np.ones_like(self.tombstoned)

    monkeypatch.setattr(purge_proof.StoredRows, "__init__", read_and_lose_everything_after)
    certificate = purge(memory, [3])
    exactness = {c.name: c for c in certificate.checks}["exactness"]
    assert not certificate.passed and not exactness.passed
    assert exactness.detail == f"no exemplar remains where {len(memory)} should"

