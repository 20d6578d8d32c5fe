"""One writer per memory, always: the lock file that no purge, migration or rewrite replaces."""

import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from vmem_core import VisualMemory
from vmem_core.errors import MemoryLockedError
from vmem_core.host import HOST_FILE
from vmem_core.storage.layout import HNSW_DIR, LOCK_FILE
from vmem_core.unlearn import purge

from .helpers import REPO, held_by_a_host, png_bytes, vmem
from .optional import require


def one_line_refusal(result, pid: int) -> str:
    """The message of a command refused because process `pid` holds the memory: one line, exit 2."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"is open in another process (pid {pid})" in lines[0]
    return lines[0]


def test_after_a_purge_the_holder_still_keeps_other_processes_out(memory, tmp_path):
    memory.exemplars.delete([0])
    purge(memory, [0])  # rewrites memory.duckdb: a new file that DuckDB's own lock does not cover
    image = tmp_path / "hat.png"
    image.write_bytes(png_bytes(np.full((28, 28), 90)))
    for command in (("add", memory.path, image, "--label", "hat"), ("delete", memory.path, 1),
                    ("stats", memory.path)):
        one_line_refusal(vmem(*command), os.getpid())
    assert len(memory) == 11 and "hat" not in list(memory.table.labels)  # nobody wrote beside this process
    # the holder's pid, in a fixed width: the folder's size (stats --json) does not change with the opener's pid
    assert (memory.path / LOCK_FILE).read_bytes() == f"{os.getpid():>10}\n".encode()
    memory.close()
    with VisualMemory.open(memory.path) as reopened:  # closing gave the memory back
        assert len(reopened) == 11


def test_handles_in_one_process_share_the_lock_and_the_last_close_releases_it(memory):
    with VisualMemory.open(memory.path) as second:
        assert len(second) == 12
    probe = [sys.executable, "-c", "import sys; sys.path.insert(0, 'tests'); import helpers; "
             f"from vmem_core import VisualMemory; VisualMemory.open({str(memory.path)!r}).close()"]
    refused = subprocess.run(probe, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert "MemoryLockedError" in refused.stderr  # the first handle still holds it
    memory.close()
    assert subprocess.run(probe, capture_output=True, text=True, cwd=REPO, timeout=120).returncode == 0


def test_a_holder_that_died_leaves_no_lock_and_its_stale_address_is_ignored(memory, tmp_path):
    path = memory.path
    memory.close()
    with held_by_a_host(path) as holder:
        assert (path / HOST_FILE).exists()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        stats = vmem("stats", path, "--json")  # host.json names a dead process; the kernel dropped its lock
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["exemplars"] == 12 and stats.stderr == ""


def vmem_with_test_encoders(*args):
    code = ("import sys; sys.path.insert(0, 'tests'); import helpers; from vmem_core.cli import main; "
            f"sys.exit(main({[str(a) for a in args]!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)


def _snapshot_files(path):
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted((path / HNSW_DIR).iterdir())}


def test_read_only_commands_write_no_index_snapshot(memory, tmp_path):
    path = memory.path
    memory.close()
    # a writer that died after a change: the snapshot on disk is behind the database, so a reader must replay it
    subprocess.run([sys.executable, "-c", "import os, sys; sys.path.insert(0, 'tests'); import helpers; "
                    f"from vmem_core import VisualMemory; m = VisualMemory.open({str(path)!r}); m.exemplars.delete([3]); "
                    "os._exit(0)"], check=True, cwd=REPO, timeout=120)
    before = _snapshot_files(path)
    image = REPO / "data" / "fashion-mnist" / "queries" / "bag"
    for command in (("stats", path, "--json"), ("classify", path, image, "--k", "3", "--json"), ("audit", path),
                    ("audit", "verify", path)):
        result = vmem_with_test_encoders(*command)
        assert result.returncode == 0, (command, result.stderr)
    assert _snapshot_files(path) == before
    assert json.loads(vmem("stats", path, "--json").stdout)["exemplars"] == 11  # they did see the delete
    assert vmem("restore", path, 3).returncode == 0  # a restore is logged in the database, replayed on open
    added = vmem_with_test_encoders("add", path, next(image.glob("*.png")), "--label", "bag")
    assert added.returncode == 0, added.stderr  # an add brings the snapshot up to date
    assert _snapshot_files(path) != before


@pytest.mark.slow
def test_purge_and_migrate_run_in_the_holder_and_every_later_command_follows(memory, tmp_path):
    require("milvus_lite")
    path = memory.path
    memory.close()
    image = tmp_path / "hat.png"
    image.write_bytes(png_bytes(np.full((28, 28), 90)))
    with held_by_a_host(path) as holder:
        def in_holder(*command):
            result = vmem(*command, cwd=tmp_path)
            assert result.returncode == 0, (command, result.stderr)
            assert f"is open in the vmem app (pid {holder.pid})" in result.stderr
            return result

        in_holder("delete", path, 0)
        certificate = json.loads(in_holder("purge", path, 0, "--json", "--certificate", "cert.json").stdout)
        assert certificate["passed"] and certificate["ids"] == [0]
        assert json.loads((tmp_path / "cert.json").read_text()) == certificate  # relative to the caller's folder
        verified = in_holder("purge", "verify", "cert.json", path)
        assert "certificate verified against" in verified.stdout
        with pytest.raises(MemoryLockedError, match=f"pid {holder.pid}"):  # the rewrite opened no window
            VisualMemory.open(path)
        moved = json.loads(in_holder("migrate", path, "--to", "milvus", "--json").stdout)
        assert moved["to"]["name"] == "milvus" and moved["exemplars"] == 11
        with pytest.raises(MemoryLockedError, match=f"pid {holder.pid}"):
            VisualMemory.open(path)

        added = json.loads(in_holder("add", path, image, "--label", "hat", "--json").stdout)
        in_holder("delete", path, 5)
        stats = json.loads(in_holder("stats", path, "--json").stdout)
        assert stats["exemplars"] == 11 and stats["labels"]["hat"] == 1
        classified = json.loads(in_holder("classify", path, image, "--k", "1", "--json").stdout)
        assert classified[0]["neighbors"][0]["id"] == added["ids"][0]
        assert (path / LOCK_FILE).exists()
    with VisualMemory.open(path) as reopened:  # the holder's changes are the memory's, on disk
        assert reopened.index.backend.describe()["name"] == "milvus"
        assert sorted(reopened.exemplars.browse(include_deleted=True, limit=100)["id"].tolist()) == [i for i in range(13) if i != 0]
        assert reopened.exemplars.tombstoned_ids() == [5] and reopened.table.label_of(added["ids"][0]) == "hat"


def test_the_holder_accepts_the_same_encoder_by_another_name_as_an_open_does(memory, small_folder):
    # a checkpoint by another path (timm:arch:/other/copy.pth) is the same encoder: it was refused only while the app
    # held the memory, because the holder compared names where an open compares the weights' fingerprints
    path = memory.path
    memory.close()
    alone = vmem_with_test_encoders("build", small_folder, "--memory", path, "--encoder", "test-pixels:copy")
    assert alone.returncode == 0, alone.stderr
    with held_by_a_host(path):
        held = vmem_with_test_encoders("build", small_folder, "--memory", path, "--encoder", "test-pixels:copy")
        assert held.returncode == 0, held.stderr
        assert "running the command there" in held.stderr and "0 exemplar(s)" in held.stdout
        other = vmem_with_test_encoders("build", small_folder, "--memory", path, "--encoder", "test-pixels-other")
        assert other.returncode == 2 and "it cannot be used with 'test-pixels-other'" in other.stderr
