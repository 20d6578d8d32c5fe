"""A damaged or stale index snapshot heals from the database when the index is opened (on first use), and says so in
exactly one log line."""

import json
import logging

import numpy as np
import pytest

from vmem_core import VisualMemory
from vmem_core.backends.hnsw_index import MANIFEST_NAME


def damage_snapshot(path, how: str) -> None:
    manifest_path = path / "index" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    index_file = path / "index" / manifest["file"]
    data = index_file.read_bytes()
    if how == "missing":
        index_file.unlink()
    elif how == "truncated":
        index_file.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        index_file.write_bytes(data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:])
    elif how == "manifest":
        manifest_path.write_text(json.dumps({**manifest, "chunks": "garbled"})[:40])
    elif how == "ahead":  # e.g. the database was restored from an older backup
        manifest_path.write_text(json.dumps({**manifest, "applied_seq": manifest["applied_seq"] + 5}))


EXPECTED = {
    "missing": ("WARNING", "rebuilding the index of {path} from its database: index file index.{seq}.hnsw missing"),
    "truncated": ("WARNING", "rebuilding the index of {path} from its database: index file index.{seq}.hnsw does "
                             "not match its checksum (truncated or corrupted)"),
    "flipped": ("WARNING", "rebuilding the index of {path} from its database: index file index.{seq}.hnsw does "
                           "not match its checksum (truncated or corrupted)"),
    "manifest": ("WARNING", "rebuilding the index of {path} from its database: index manifest unreadable"),
    "ahead": ("WARNING", "rebuilding the index of {path} from its database: index snapshot is ahead of the database"),
    # the delete before the snapshot's damage is not in the snapshot either: tombstones are replayed from the database
    "behind": ("INFO", "index replayed 4 change(s) made after its last snapshot"),
}


@pytest.mark.parametrize("how", list(EXPECTED))
def test_snapshot_damage_heals_with_one_log_line(memory, how, caplog):
    memory.exemplars.delete([5])
    memory.index.flush()
    path = memory.path
    # a delete alone writes no snapshot (the database logs tombstones): the one on disk is the build's
    seq = json.loads((path / "index" / MANIFEST_NAME).read_text())["applied_seq"]
    assert seq < memory.change_counter
    if how == "behind":  # three changes committed after the snapshot, then the process died
        memory.exemplars.add_embeddings(np.eye(64)[:2] + 0.01, ["late", "late"])
        memory.exemplars.relabel([0], "renamed")
        memory.exemplars.delete([1])
        memory._store.close()
    else:
        memory.close()
        damage_snapshot(path, how)
    with caplog.at_level(logging.INFO, logger="vmem_core"), VisualMemory.open(path) as mem:
        live = sorted(mem.index.backend.live_ids().tolist())  # the index opens (and heals) on first use
        lines = [r for r in caplog.records if r.name.startswith("vmem_core")]
        assert live == sorted(mem.table.ids.tolist())  # index and database agree: nothing lost
        if how == "behind":
            assert live == [i for i in range(14) if i not in (1, 5)] and "renamed" in list(mem.table.labels)
        else:
            assert live == [i for i in range(12) if i != 5]
    level, text = EXPECTED[how]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelname == level and "\n" not in lines[0].getMessage()
    assert lines[0].getMessage().startswith(text.format(path=path, seq=seq))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vmem_core"), VisualMemory.open(path) as mem:
        mem.index.backend.live_ids()  # healed for good: the next open of the index has nothing to say
    assert [r.getMessage() for r in caplog.records if r.name.startswith("vmem_core")] == []


def test_a_delete_appends_to_the_tombstone_log_instead_of_rewriting_the_snapshot(memory, monkeypatch):
    """`vmem delete` must not rewrite the whole snapshot (1.4 s at 60,000 x 1280): the database logs the tombstone,
    the next open replays it; past the compaction threshold, the snapshot is rewritten."""
    import vmem_core.backends.hnsw_index as hnsw_index

    path = memory.path
    manifest = path / "index" / MANIFEST_NAME
    memory.index.flush()
    before = json.loads(manifest.read_text())
    memory.exemplars.delete([3])
    memory.exemplars.restore([3])
    memory.exemplars.delete([4])
    memory.close()
    assert json.loads(manifest.read_text()) == before  # no snapshot written for tombstones
    with VisualMemory.open(path) as reopened:
        assert 4 not in reopened.index.backend.live_ids() and 3 in reopened.index.backend.live_ids()
        monkeypatch.setattr(hnsw_index, "COMPACT_TOMBSTONES_MIN", 2)
        reopened.exemplars.delete([6, 7, 8])
    after = json.loads(manifest.read_text())
    assert after["applied_seq"] > before["applied_seq"]  # compacted: the tombstones are in the snapshot now
    with VisualMemory.open(path) as reopened:
        assert not {4, 6, 7, 8} & set(reopened.index.backend.live_ids().tolist())


def test_a_snapshot_checksummed_with_sha256_before_still_opens_and_a_flip_in_it_is_caught(memory, caplog):
    """Manifests written before the switch to XXH3 name no checksum and hold sha256 digests: they verify as such."""
    import hashlib

    from vmem_core.backends.hnsw_index import CHECKSUM_CHUNK

    memory.close()
    path = memory.path
    manifest_path = path / "index" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    assert manifest["checksum"] == "xxh3_128"
    data = (path / "index" / manifest["file"]).read_bytes()
    old = {key: value for key, value in manifest.items() if key != "checksum"}
    old["chunks"] = [hashlib.sha256(data[at:at + CHECKSUM_CHUNK]).hexdigest()
                     for at in range(0, max(len(data), 1), CHECKSUM_CHUNK)]
    manifest_path.write_text(json.dumps(old))
    with caplog.at_level(logging.INFO, logger="vmem_core"), VisualMemory.open(path) as mem:
        assert len(mem.index.backend.live_ids()) == 12
    assert [r.getMessage() for r in caplog.records if r.name.startswith("vmem_core")] == []
    manifest_path.write_text(json.dumps(old))  # the close above wrote nothing new: make sure of it
    damage_snapshot(path, "flipped")
    with caplog.at_level(logging.INFO, logger="vmem_core"), VisualMemory.open(path) as mem:
        assert len(mem.index.backend.live_ids()) == 12
    assert any("does not match its checksum" in r.getMessage() for r in caplog.records)


def test_a_writer_records_the_fast_checksum_for_a_snapshot_verified_under_sha256_a_reader_does_not(memory):
    import hashlib

    from vmem_core.backends.hnsw_index import CHECKSUM_CHUNK

    memory.close()
    path = memory.path
    manifest_path = path / "index" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    data = (path / "index" / manifest["file"]).read_bytes()
    old = {key: value for key, value in manifest.items() if key != "checksum"}
    old["chunks"] = [hashlib.sha256(data[at:at + CHECKSUM_CHUNK]).hexdigest()
                     for at in range(0, max(len(data), 1), CHECKSUM_CHUNK)]
    manifest_path.write_text(json.dumps(old))
    with VisualMemory.open_reader(path) as reader:
        reader.search(np.eye(64, dtype=np.float32)[:1], 3)  # opens the index
    assert json.loads(manifest_path.read_text()) == old  # what reads never writes
    with VisualMemory.open(path) as mem:
        mem.index.backend.live_ids()
    assert json.loads(manifest_path.read_text()) == manifest  # the same digests a fresh snapshot would have
