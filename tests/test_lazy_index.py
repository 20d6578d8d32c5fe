"""The index opens on first use: a delete, restore or relabel (library or CLI) commits to the database alone and never
loads or verifies the snapshot; whoever next needs the index replays those changes, or rebuilds a damaged snapshot."""

import json
import logging

import numpy as np
import pytest

from vmem_core import VisualMemory
from vmem_core.backends import hnsw, hnsw_index
from vmem_core.backends.hnsw_index import MANIFEST_NAME

from .helpers import vmem


def snapshot_file(path):
    manifest = json.loads((path / "index" / MANIFEST_NAME).read_text())
    return path / "index" / manifest["file"]


@pytest.fixture
def closed(memory):
    """A built memory, closed: its snapshot on disk holds every exemplar."""
    (twin,) = memory.exemplars.add_embeddings(memory.exemplars.embeddings([7])[1] * 1.0001, ["bag"])
    memory.close()
    return memory.path, twin


@pytest.fixture
def no_index_opens(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the index was opened")

    monkeypatch.setattr(hnsw.HnswlibBackend, "open", classmethod(refuse))
    monkeypatch.setattr(hnsw_index.AnnIndex, "load", classmethod(refuse))
    monkeypatch.setattr(hnsw_index, "find_snapshot", refuse)
    return monkeypatch


def test_edits_and_close_never_open_the_index(closed, no_index_opens):
    path, twin = closed
    with VisualMemory.open(path) as memory:
        memory.exemplars.delete([3, 4])
        memory.exemplars.restore([4])
        memory.exemplars.relabel([5], "renamed")
        assert 3 not in memory.table.ids and memory.table.label_of(5) == "renamed"
        # the warning `vmem delete` prints comes from the vault, not from the index
        assert [other for other, _ in memory.exemplars.near_duplicates_of([7], 1e-3)[7]] == [twin]
        memory.index.flush()
    no_index_opens.undo()
    with VisualMemory.open(path) as memory:  # the next user of the index replays what the database holds
        assert sorted(memory.index.backend.live_ids().tolist()) == sorted(memory.table.ids.tolist())
        assert 3 not in memory.index.backend.live_ids() and 4 in memory.index.backend.live_ids()
        found, _ = memory.search(memory.exemplars.embeddings([5])[1], 1, labels=["renamed"])
        assert found.tolist() == [[5]]


def test_a_delete_on_a_damaged_snapshot_works_and_the_next_use_rebuilds_it(closed, caplog):
    path, _ = closed
    index_file = snapshot_file(path)
    data = index_file.read_bytes()
    index_file.write_bytes(data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:])
    result = vmem("delete", path, 3)
    assert result.returncode == 0, result.stderr
    assert "rebuilding" not in result.stderr  # the delete did not look at the snapshot ...
    assert index_file.read_bytes() != data  # ... nor rewrite it: it is still the damaged one
    with caplog.at_level(logging.WARNING, logger="vmem_core"), VisualMemory.open(path) as memory:
        live = sorted(memory.index.backend.live_ids().tolist())
        assert live == sorted(memory.table.ids.tolist()) and 3 not in live
    assert any("does not match its checksum" in r.getMessage() for r in caplog.records)


def test_near_duplicates_from_the_vault_equal_those_the_index_finds(closed):
    path, twin = closed
    with VisualMemory.open(path) as memory:
        memory.exemplars.delete([2, 7])
        ids = [7, 2, twin, 11]
        scanned = memory.exemplars.near_duplicates_of(ids, 0.5)
        with memory._index_if_open() as index:
            assert index is None
        memory.index.backend  # opened: the same question goes to the index (exact below 2,048 items)
        searched = memory.exemplars.near_duplicates_of(ids, 0.5)
    assert scanned.keys() == searched.keys() and scanned
    for item in scanned:
        assert [o for o, _ in scanned[item]] == [o for o, _ in searched[item]]
        assert np.allclose([d for _, d in scanned[item]], [d for _, d in searched[item]], atol=1e-5)


def test_warm_up_opens_the_index_in_the_background_and_close_waits_for_it(closed):
    path, _ = closed
    memory = VisualMemory.open(path)
    thread = memory.index.warm_up(settle_after=0)
    thread.join(60)
    assert not thread.is_alive()
    with memory._index_if_open() as index:
        assert index is not None and index.live_count == len(memory)
    memory.close()
    memory = VisualMemory.open(path)
    thread = memory.index.warm_up(settle_after=0)
    memory.close()  # at once: it waits for an open in progress, and the settling stops at its next step
    thread.join(60)
    assert not thread.is_alive()
