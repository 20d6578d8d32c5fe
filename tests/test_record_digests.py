"""The embeddings' digests a purge takes in a helper process: the same as hashing here, and hashing here whenever the
helper cannot start, fails or answers with the wrong length."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

import vmem_core.storage.record_digests as record_digests_module
from vmem_core.memory.erasure import Erasure
from vmem_core.purge_proof import StoredRows, memory_digest
from vmem_core.storage.record_digests import PendingDigests, record_digests
from vmem_core.unlearn import purge


def vault_file(tmp_path, rows=37, dim=24):
    records = np.random.default_rng(0).random((rows, dim)).astype("<f4")
    path = tmp_path / "vectors.f32"
    path.write_bytes(records.tobytes())
    return path, records


def sha256_of(records, ids):
    return np.array([list(hashlib.sha256(records[i].tobytes()).digest()) for i in ids], dtype=np.uint8)


def test_the_helper_gives_each_records_sha256(tmp_path):
    path, records = vault_file(tmp_path)
    ids = np.array([0, 5, 36, 5, 12])
    pending = PendingDigests(path, records.shape[1] * 4, len(records))
    assert pending._process is not None  # the helper really ran
    digests = pending.of(ids, lambda: pytest.fail("computed here although the helper answered"))
    assert np.array_equal(digests, sha256_of(records, ids))
    assert np.array_equal(record_digests(records, ids), digests)


@pytest.mark.parametrize("broken", ["no interpreter", "exits 1", "short answer"])
def test_a_broken_helper_leaves_the_digests_to_this_process(tmp_path, monkeypatch, caplog, broken):
    path, records = vault_file(tmp_path)
    if broken == "no interpreter":
        monkeypatch.setattr(record_digests_module.sys, "executable", str(tmp_path / "no-python"))
    elif broken == "exits 1":
        monkeypatch.setattr(record_digests_module, "_HELPER", "import sys; sys.exit(1)")
    else:
        monkeypatch.setattr(record_digests_module, "_HELPER", "import sys; sys.stdout.buffer.write(bytes(32))")
    computed_here = []

    def mapped():
        computed_here.append(True)
        return records

    with caplog.at_level(logging.INFO, logger=record_digests_module.__name__):
        digests = PendingDigests(path, records.shape[1] * 4, len(records)).of(np.arange(len(records)), mapped)
    assert computed_here and np.array_equal(digests, sha256_of(records, range(len(records))))
    assert "computed in this process" in caplog.text


def test_a_purge_certifies_the_same_with_or_without_the_helper(memory, monkeypatch):
    with_helper = memory_digest(memory, StoredRows(memory, Erasure(memory).start_record_digests()))
    assert with_helper == memory_digest(memory)  # hashed here
    monkeypatch.setattr(record_digests_module, "_HELPER", "import sys; sys.exit(3)")
    certificate = purge(memory, [2])
    assert certificate.passed, certificate.explain()
    assert certificate.digest_before == with_helper


def test_an_interrupted_collection_leaves_no_helper_running(tmp_path, monkeypatch):
    path, records = vault_file(tmp_path, rows=4000)  # more than a pipe holds: an uncollected helper would block
    pending = PendingDigests(path, records.shape[1] * 4, len(records))
    process = pending._process

    communicate = process.communicate
    calls = []

    def interrupted_once(*args, **kwargs):
        calls.append(True)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return communicate(*args, **kwargs)

    monkeypatch.setattr(process, "communicate", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        pending.of(np.arange(3), lambda: records)
    assert pending._process is None and process.wait(timeout=30) == -9  # killed, not left blocked on its pipe

