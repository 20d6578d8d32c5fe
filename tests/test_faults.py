"""The faults people meet with a memory folder (a file missing from a copy, an archive from someone else, a full disk,
a hand-edited config): each is refused with one line naming the file and what to do, and nothing is written on the
way, least of all outside the memory (issue 24)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from vmem_core import VisualMemory, cli
from vmem_core.errors import MemoryFormatError, ReadOnlyError, StorageError
from vmem_core.storage.layout import DATABASE_NAME, HNSW_DIR, LOCK_FILE, THUMBNAILS_NAME, VECTORS_NAME

from .helpers import REPO

QUERY = REPO / "data" / "fashion-mnist" / "queries" / "bag"


def folder_state(path: Path) -> dict:
    """Every file under `path` (links as links): its size, digest and modification time."""
    state = {}
    for item in sorted(Path(path).rglob("*")):
        if item.is_symlink():
            state[str(item.relative_to(path))] = ("link", os.readlink(item))
        elif item.is_file():
            stat = item.stat()
            state[str(item.relative_to(path))] = (stat.st_size, stat.st_mtime_ns,
                                                  hashlib.sha256(item.read_bytes()).hexdigest())
    return state


def run(capsys, *args) -> tuple[int, str]:
    """`vmem ARGS` in this process: (exit status, stderr)."""
    capsys.readouterr()
    status = cli.main([str(a) for a in args])
    return status, capsys.readouterr().err


def one_line_error(status: int, err: str, *names: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmem: error:"), err
    for name in names:
        assert name in lines[0], err


READ_COMMANDS = (("stats", "{m}"), ("classify", "{m}", QUERY, "--k", "3"), ("audit", "{m}"),
                 ("audit", "verify", "{m}"))


def read_commands(path: Path):
    return [[str(part).format(m=path) for part in command] for command in READ_COMMANDS]


@pytest.fixture
def closed(memory, tmp_path) -> Path:
    """A built memory, closed, with a delete its index snapshot has not seen yet."""
    memory.exemplars.delete([3])
    path = memory.path
    memory.close()
    return path


# --- 1: opening reads before it writes -----------------------------------------------------------------------------
def test_a_copy_without_its_database_is_refused_and_its_vectors_are_kept(closed, capsys):
    (closed / DATABASE_NAME).unlink()
    before = folder_state(closed)
    for command in read_commands(closed) + [["delete", str(closed), "1"], ["build", str(QUERY.parent), "--memory",
                                                                             str(closed)]]:
        status, err = run(capsys, *command)
        one_line_error(status, err, DATABASE_NAME, "copy")
    with pytest.raises(MemoryFormatError, match="is missing"):
        VisualMemory.open(closed)
    assert folder_state(closed) == before  # no empty database, and vectors.f32 and thumbs.bin whole


def test_an_edited_dimension_is_detected_not_obeyed(closed, capsys):
    config = json.loads((closed / "vmem.json").read_text())
    config["encoder"]["dim"] = 16
    (closed / "vmem.json").write_text(json.dumps(config))
    before = folder_state(closed)
    for command in read_commands(closed) + [["delete", str(closed), "1"]]:
        status, err = run(capsys, *command)
        one_line_error(status, err, "encoder.dim", "64")
    assert folder_state(closed) == before  # vectors.f32 not cut to 16-d records


def test_an_edited_dimension_of_a_memory_that_never_recorded_it_is_detected_by_the_index(closed, capsys):
    with duckdb.connect(str(closed / DATABASE_NAME)) as con:  # as a memory written before the database recorded it
        con.execute("DELETE FROM meta WHERE key = 'dim'")
    config = json.loads((closed / "vmem.json").read_text())
    config["encoder"]["dim"] = 16
    (closed / "vmem.json").write_text(json.dumps(config))
    size = (closed / VECTORS_NAME).stat().st_size
    with pytest.raises(MemoryFormatError, match="index manifest records 64"):
        VisualMemory.open(closed)
    assert (closed / VECTORS_NAME).stat().st_size == size


@pytest.mark.parametrize("name", [VECTORS_NAME, THUMBNAILS_NAME])
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_truncated_vault_file_is_refused_and_not_trimmed(closed, capsys, name, damage):
    target = closed / name
    if damage == "missing":
        target.unlink()
    else:
        os.truncate(target, target.stat().st_size // 2)
    before = folder_state(closed)
    for command in read_commands(closed) + [["delete", str(closed), "1"]]:
        status, err = run(capsys, *command)
        one_line_error(status, err, name, damage if damage == "truncated" else "missing")
    assert folder_state(closed) == before


# --- 2: links inside a memory are never written through -------------------------------------------------------------
@pytest.mark.parametrize("name", [LOCK_FILE, THUMBNAILS_NAME, VECTORS_NAME, DATABASE_NAME])
def test_a_symbolic_link_inside_a_memory_is_refused_and_its_target_untouched(closed, tmp_path, capsys, name):
    outside = tmp_path / "precious.bin"
    original = (closed / name).read_bytes() if (closed / name).exists() else b""
    outside.write_bytes(original + b"the user's own bytes " * 100_000)
    (closed / name).unlink(missing_ok=True)
    (closed / name).symlink_to(outside)
    before = outside.read_bytes(), outside.stat().st_mtime_ns
    for command in read_commands(closed) + [["delete", str(closed), "1"]]:
        status, err = run(capsys, *command)
        one_line_error(status, err, name, "symbolic link")
    with pytest.raises(MemoryFormatError, match="symbolic link"):
        VisualMemory.open(closed)
    assert (outside.read_bytes(), outside.stat().st_mtime_ns) == before


def test_a_link_made_after_the_check_is_refused_by_the_kernel(memory, tmp_path):
    outside = tmp_path / "precious.bin"
    outside.write_bytes(b"x" * 1000)
    thumbs = memory.path / THUMBNAILS_NAME
    thumbs.unlink()
    thumbs.symlink_to(outside)
    with pytest.raises(MemoryFormatError, match="symbolic link"):
        memory.exemplars.add_embeddings(np.ones((1, 64)), ["bag"], thumbnails=[b"png"])
    assert outside.read_bytes() == b"x" * 1000


# --- 6: someone else's database, a damaged one ---------------------------------------------------------------------
def test_a_foreign_duckdb_file_is_not_adopted(closed, capsys):
    (closed / DATABASE_NAME).unlink()
    with duckdb.connect(str(closed / DATABASE_NAME)) as con:
        con.execute("CREATE TABLE invoices (id INTEGER, amount DECIMAL(10, 2)); INSERT INTO invoices VALUES (1, 9.5)")
    before = folder_state(closed)
    for command in read_commands(closed) + [["delete", str(closed), "1"]]:
        status, err = run(capsys, *command)
        one_line_error(status, err, DATABASE_NAME, "not a vmem database")
    assert folder_state(closed) == before
    with duckdb.connect(str(closed / DATABASE_NAME), read_only=True) as con:
        assert [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()] == ["invoices"]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_gives_one_line(closed, capsys, damage):
    database = closed / DATABASE_NAME
    if damage == "garbage":
        data = bytearray(database.read_bytes())
        data[12288:16384] = bytes(4096)  # a block whose checksum no longer matches
        database.write_bytes(bytes(data))
    else:
        os.truncate(database, database.stat().st_size // 2)  # a copy cut short
    for command in read_commands(closed):
        status, err = run(capsys, *command)
        one_line_error(status, err, DATABASE_NAME)


# --- 7 (storage side): what opens read-only holds no write handle ---------------------------------------------------
def test_a_read_only_open_refuses_changes_and_holds_no_write_handle(closed):
    before = folder_state(closed)
    with VisualMemory.open(closed, read_only=True) as memory:
        live = len(memory)
        with pytest.raises(ReadOnlyError, match="read-only"):
            memory.exemplars.delete([1])
        with pytest.raises(ReadOnlyError):
            memory.exemplars.relabel([1], "hat")
        with pytest.raises(ReadOnlyError):
            memory.exemplars.add_embeddings(np.ones((1, 64)), ["hat"])
        with pytest.raises(ReadOnlyError):
            memory._store.set_deleted([1], True)
        with pytest.raises(duckdb.Error, match="read-only"):  # raw SQL through the handle's own connection
            memory._store._con.execute("UPDATE exemplars SET label = 'hat' WHERE id = 1")
        with pytest.raises(ReadOnlyError):
            memory._store.vault.erase([1], []) if False else memory._store.purge([1], "x", {}, [])
        assert len(memory) == live
    assert folder_state(closed) == before


def test_commands_that_read_write_no_byte(closed, capsys):
    before = folder_state(closed)
    for command in read_commands(closed) + [["classify", str(closed), str(QUERY), "--json"]]:
        status, err = run(capsys, *command)
        assert status == 0, (command, err)
    assert folder_state(closed) == before


# --- 4: an index that disagrees with the database ------------------------------------------------------------------
def test_an_index_of_another_dimension_behind_a_right_manifest_is_rebuilt(closed, capsys):
    from vmem_core.backends.hnsw_index import AnnIndex, IndexParams

    index_dir = closed / HNSW_DIR
    manifest = json.loads((index_dir / "manifest.json").read_text())
    wrong = AnnIndex(16, IndexParams())
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(12, 16)).astype(np.float32)
    wrong.add(np.arange(12), vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    shutil.rmtree(index_dir)
    wrong.save_snapshot(index_dir, manifest["applied_seq"])
    forged = json.loads((index_dir / "manifest.json").read_text())
    (index_dir / "manifest.json").write_text(json.dumps({**forged, "dim": 64}))
    with VisualMemory.open(closed) as memory:
        ids, vectors = memory.exemplars.embeddings()
        found, distances = memory.search(vectors, 1)
        assert np.isfinite(distances).all()
        assert found[:, 0].tolist() == ids.tolist()  # each exemplar finds itself
    with VisualMemory.open(closed) as memory:  # and the index it saved is the right one
        ids, vectors = memory.exemplars.embeddings()
        assert memory.search(vectors, 1)[0][:, 0].tolist() == ids.tolist()


def test_an_index_that_marks_a_live_exemplar_deleted_is_repaired_on_open(closed):
    with VisualMemory.open(closed) as memory:
        backend = memory.index.backend
        backend.index._index.mark_deleted(5)  # hnswlib's own mark, behind the database's back
        backend.index.save_snapshot(backend.directory, memory.change_counter)
    with VisualMemory.open(closed) as memory:
        ids, vectors = memory.exemplars.embeddings()
        assert 5 in ids.tolist()
        found, _ = memory.search(vectors, 1)  # every search read vector 5: "Label not found" before
        assert found[:, 0].tolist() == ids.tolist()


# --- 3: a full disk -------------------------------------------------------------------------------------------------
def test_a_short_index_file_is_never_recorded_as_the_snapshot(memory, monkeypatch):
    from vmem_core.backends import hnsw_index

    path = memory.path
    manifest_before = (path / HNSW_DIR / "manifest.json").read_bytes()
    real_save = hnsw_index.hnswlib.Index.save_index

    def save_short(self, target):  # as hnswlib does on a full disk: no error, a short file
        real_save(self, target)
        os.truncate(target, os.path.getsize(target) // 2)

    monkeypatch.setattr(hnsw_index.AnnIndex, "_save_raw", None, raising=False)
    index = memory.index.backend.index
    monkeypatch.setattr(index, "_index", _Proxy(index._index, save_short))
    memory.exemplars.add_embeddings(np.ones((1, 64)), ["bag"])
    memory.index.flush()  # the database has the add; the snapshot cannot be written: a warning, not a failure
    assert (path / HNSW_DIR / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.name for p in (path / HNSW_DIR).iterdir()) == sorted(
        ["manifest.json", json.loads(manifest_before)["file"]])  # no temp or unnamed index file left
    monkeypatch.undo()
    memory.close()
    with VisualMemory.open(path) as reopened:
        assert len(reopened) == 13  # replayed from the database


class _Proxy:
    def __init__(self, inner, save):
        self._inner, self._save = inner, save

    def save_index(self, target):
        self._save(self._inner, target)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_an_add_the_disk_refuses_is_reported_in_one_line_and_leaves_nothing(memory, monkeypatch, capsys):
    from vmem_core.storage import vault

    sizes = memory._store.vault.sizes()
    seq = memory.change_counter

    def full(self, thumbnails):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.thumbnails_path))

    monkeypatch.setattr(vault.Vault, "append_thumbnails", full)
    with pytest.raises(StorageError, match="No space left on device.*nothing was added"):
        memory.exemplars.add_embeddings(np.ones((2, 64)), ["bag", "bag"], thumbnails=[b"a", b"b"])
    assert memory._store.vault.sizes() == sizes and memory.change_counter == seq and len(memory) == 12


# --- 5: a purge keeps DuckDB's own lock on the database ------------------------------------------------------------
def test_after_a_purge_a_plain_duckdb_connect_is_still_kept_out(memory):
    import subprocess
    import sys

    from vmem_core.unlearn import purge

    memory.exemplars.delete([2])
    purge(memory, [2])  # its byte scan reads memory.duckdb
    probe = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(memory.path / DATABASE_NAME)!r})"],
        capture_output=True, text=True, timeout=120)
    assert probe.returncode != 0 and "lock" in probe.stderr.lower(), probe.stderr


# --- 8: audit verify replays the log against the database ----------------------------------------------------------
def test_audit_verify_reports_changes_made_behind_the_logs_back_by_id(memory, capsys):
    memory.exemplars.relabel([4], "hat")
    memory.exemplars.delete([6])
    assert memory.audit.verify().ok and "replaying" in memory.audit.verify().reason
    path = memory.path
    memory.close()
    status, _ = run(capsys, "audit", "verify", path)
    assert status == 0
    with duckdb.connect(str(path / DATABASE_NAME)) as con:  # raw SQL: no audit entry
        con.execute("UPDATE exemplars SET label = 'sandal' WHERE id = 7")
        con.execute("UPDATE exemplars SET deleted_at = NULL WHERE id = 6")
    capsys.readouterr()
    assert cli.main(["audit", "verify", str(path), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert not result["ok"] and result["differing_ids"] == [6, 7]
    assert "id 7 is labelled 'sandal', the log says" in result["reason"] and "id 6 is live" in result["reason"]


# --- 12: a second app on a held memory is refused at start ---------------------------------------------------------
def test_a_second_app_on_a_held_memory_is_refused_at_start(closed, capsys, request):
    from .helpers import held_by_a_host

    with held_by_a_host(closed) as other:
        launched_apps = request.getfixturevalue("launched_apps")  # replaces Popen: only once the holder runs
        status, err = run(capsys, "app", closed, "--headless")
        one_line_error(status, err, str(closed), f"pid {other.pid}")
        assert launched_apps == []
    status, err = run(capsys, "app", closed, "--headless")  # once it is free, the app starts
    assert status == 0 and len(launched_apps) == 1, err


# --- 15: what cannot be undone asks for a word more; bounds on what a user may set ---------------------------------
def test_purging_a_live_exemplar_needs_a_delete_first_or_live(closed, capsys):
    status, err = run(capsys, "purge", closed, 1)
    one_line_error(status, err, "live", "vmem delete", "--live")
    with VisualMemory.open(closed, read_only=True) as memory:
        assert len(memory.exemplars.rows([1])) == 1 and memory.table.class_indices([1])[0] >= 0
    status, err = run(capsys, "purge", closed, 1, "--live", "--json")
    assert status == 0, err
    status, err = run(capsys, "purge", closed, 3, "--json")  # tombstoned already: no word more needed
    assert status == 0, err


def test_absurd_index_parameters_and_labels_are_refused(closed, capsys, tmp_path):
    status, err = run(capsys, "tune", closed, "--index-ef", 1_000_000_000_000)
    one_line_error(status, err, "--index-ef 1000000000000", "10,000")
    status, err = run(capsys, "build", QUERY.parent, "--memory", tmp_path / "new", "--encoder", "test-pixels",
                      "--index-m", 100_000)
    one_line_error(status, err, "--index-m 100000")
    with VisualMemory.open(closed) as memory:
        with pytest.raises(Exception, match="10,000 characters; a label has at most 200"):
            memory.exemplars.add_embeddings(np.ones((1, 64)), ["x" * 10_000])
        with pytest.raises(Exception, match="at most 200"):
            memory.exemplars.relabel([1], "y" * 201)


# --- 9: sign-in on a network ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("secret", ["abc", " " * 20, "short pass"])
def test_a_short_or_blank_password_in_the_environment_does_not_start_an_app(secret, capsys, launched_apps):
    from vmem_core.access import AccessPolicy
    from vmem_core.errors import VmemError

    with pytest.raises(VmemError, match="VMEM_EDITOR_PASSWORD.*too easy to guess; use 12 or more"):
        AccessPolicy.from_environment({"VMEM_EDITOR_PASSWORD": secret})
    os.environ["VMEM_EDITOR_PASSWORD"] = secret
    try:
        status, err = run(capsys, "app", "--address", "0.0.0.0", "--headless")
    finally:
        del os.environ["VMEM_EDITOR_PASSWORD"]
    one_line_error(status, err, "VMEM_EDITOR_PASSWORD", "12")
    assert launched_apps == [] and secret.strip() not in err.replace("VMEM_EDITOR_PASSWORD", "") or not secret.strip()


def test_wrong_passwords_slow_a_client_down_and_are_logged(caplog):
    from vmem_core.access import SignInThrottle

    now = [1000.0]
    throttle = SignInThrottle(clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="vmem_core.access"):
        for _ in range(5):
            assert throttle.wait("10.0.0.9") == 0
            throttle.record("10.0.0.9", success=False)
    assert len([r for r in caplog.records if "sign-in failed from 10.0.0.9" in r.getMessage()]) == 5
    assert throttle.wait("10.0.0.9") == 1.0 and throttle.wait("10.0.0.7") == 0  # per client
    for _ in range(25):  # 30 guesses in a row: each waits twice as long as the last, up to 5 minutes
        now[0] += throttle.wait("10.0.0.9")
        throttle.record("10.0.0.9", success=False)
    assert throttle.wait("10.0.0.9") == SignInThrottle.MAX_WAIT
    assert now[0] - 1000.0 > 1500  # 30 guesses took more than 25 minutes (5.9 s before)
    throttle.record("10.0.0.9", success=True)
    assert throttle.wait("10.0.0.9") == 0


# --- 10: archives bounded by size, count and ratio; a damaged one is named ------------------------------------------
def test_a_zip_bomb_and_a_zip_with_a_bad_crc_are_refused_in_one_line(tmp_path):
    import io
    import zipfile

    from vmem_core.errors import DatasetError
    from vmem_core.ingest.datasets import extract_labelled_zip

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bag/a.png", bytes(50 * 2**20))  # 50 MiB of zeros in ~50 KB
    assert len(bomb.getvalue()) < 2**20
    with pytest.raises(DatasetError, match="zip bomb"):
        extract_labelled_zip(bomb.getvalue(), tmp_path / "bomb")
    assert not (tmp_path / "bomb").exists() or not any((tmp_path / "bomb").rglob("*.png"))

    good = io.BytesIO()
    with zipfile.ZipFile(good, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("bag/a.png", b"\x89PNG not really an image but bytes " * 100)
    data = bytearray(good.getvalue())
    at = data.index(b"not really")
    data[at] ^= 0xFF  # one byte flipped: the CRC no longer matches
    with pytest.raises(DatasetError, match="'bag/a.png' is damaged.*CRC"):
        extract_labelled_zip(bytes(data), tmp_path / "crc")


# --- the fault drill (scripts/faultdrill.py), short ----------------------------------------------------------------
@pytest.mark.slow
def test_the_fault_drill_finds_nothing_wrong(tmp_path, monkeypatch):
    import importlib
    import io

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    drill = importlib.import_module("faultdrill")
    figures = drill.run(tmp_path, short=True, log=io.StringIO())
    assert figures.problems == []
    assert figures.tracebacks == 0 and figures.bytes_written_outside == 0 and figures.read_commands_that_wrote == 0
    assert figures.failed_but_took_effect == 0 and figures.acknowledged_lost == 0 and figures.left_behind == []
    assert figures.commands > 70 and set(figures.exit_codes) <= {"0", "2"}
    if figures.full_disk == "run":  # root could mount a small filesystem: some writes fit, some did not
        assert figures.acknowledged_kept > 0 and figures.exit_codes.get("2", 0) > 70


@pytest.mark.slow
def test_the_sign_in_page_makes_a_guessing_client_wait(app, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from .helpers import TIMEOUT

    monkeypatch.setenv("VMEM_EDITOR_PASSWORD", "editor-token-4f9b2c-throttle")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/memory.py").run()
    for guess in range(6):
        at.text_input(key="sign-in-secret").input(f"guess {guess}")
        at.button[0].click().run()
    assert any(e.value.startswith("Too many wrong passwords from this client: try again in") for e in at.error)
    at.text_input(key="sign-in-secret").input("editor-token-4f9b2c-throttle")
    at.button[0].click().run()  # even the right one waits: the guesser learns nothing meanwhile
    assert [t.value for t in at.title] == ["Sign in"]
