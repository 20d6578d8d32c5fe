"""The app's first start on a machine with no memory: the sample is built completely, or not at all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vmem_core import VisualMemory
from vmem_core.ingest.datasets import scan_dataset
from vmem_core.sample_memory import build_sample_memory, completeness

from .helpers import REPO, SAMPLE, new_memory

PAGES = sorted(p.name for p in (REPO / "pages").glob("*.py"))


@pytest.fixture
def fresh_copy(tmp_path, monkeypatch) -> Path:
    """The repository's app in a folder of its own, and a vmem home with no memory in it."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    shutil.copy(REPO / "app.py", copy / "app.py")
    shutil.copytree(REPO / "pages", copy / "pages")
    shutil.copytree(REPO / ".streamlit", copy / ".streamlit")
    monkeypatch.setenv("VMEM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VMEM_MEMORY", raising=False)
    return copy


@pytest.mark.slow
def test_first_start_builds_the_whole_sample_and_renders_every_page(fresh_copy, tmp_path):
    at = AppTest.from_file(str(fresh_copy / "app.py"), default_timeout=600)
    at.run()
    assert not at.exception, at.exception
    for page in PAGES:
        at.switch_page(f"pages/{page}").run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
    shipped = scan_dataset(SAMPLE / "memory")
    with VisualMemory.open(tmp_path / "home" / "sample.vmem") as memory:
        assert len(memory) == len(shipped) == 1000
        assert sorted(list(memory.table.labels)) == sorted({item.label for item in shipped})
        assert completeness(memory).complete
    assert not list((tmp_path / "home").glob(".sample.vmem.building-*"))  # the staging folder is gone


def _first_items(count: int):
    return scan_dataset(SAMPLE / "memory")[:count]


def test_an_interrupted_build_leaves_no_memory_and_the_next_one_completes(tmp_path, small_folder):
    target = tmp_path / "home" / "sample.vmem"

    def stop_after_first_chunk(done, total):
        if done < total:
            raise KeyboardInterrupt  # the user pressed Ctrl+C (or the page went away) mid-build

    with pytest.raises(KeyboardInterrupt):
        build_sample_memory(target, progress=stop_after_first_chunk, source=SAMPLE / "memory")
    assert not target.exists()
    assert not list(target.parent.glob(".sample.vmem.building-*"))

    report = build_sample_memory(target, source=small_folder)
    assert report is not None and report.added == 12
    with VisualMemory.open(target) as memory:
        assert len(memory) == 12
    assert build_sample_memory(target, source=small_folder) is None  # a memory is there: nothing is rebuilt


def test_a_killed_builders_staging_folder_is_removed_and_a_live_ones_kept(tmp_path, small_folder):
    target = tmp_path / "sample.vmem"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".sample.vmem.building-{int(dead.stdout)}-deadbeef"
    (abandoned / "junk").mkdir(parents=True)
    alive = tmp_path / f".sample.vmem.building-{os.getppid()}-cafecafe"  # another process's build in progress
    alive.mkdir()
    build_sample_memory(target, source=small_folder)
    assert not abandoned.exists() and alive.exists()
    assert (target / "vmem.json").exists()


def test_purged_sample_exemplars_do_not_make_the_memory_look_unfinished(tmp_path, small_folder):
    from vmem_core.unlearn import purge

    with new_memory(tmp_path / "m") as memory:
        memory.exemplars.build(small_folder)
        assert completeness(memory, small_folder).complete
        memory.exemplars.delete([0, 1])
        assert completeness(memory, small_folder).complete  # deleted rows keep their sources
        purge(memory, [0, 1])
        status = completeness(memory, small_folder)
        assert status.complete and status.purged == 2  # the Unlearning demo's purge is no unfinished build
    first = scan_dataset(small_folder)[0]  # a real gap besides: one more image in the collection
    extra = small_folder / first.label / "extra.png"
    shutil.copy(first.path, extra)
    with VisualMemory.open(tmp_path / "m") as memory:
        status = completeness(memory, small_folder)
        assert (status.missing, status.purged) == (1, 2) and "2 purged since" in status.explain(tmp_path / "m")


def test_a_partial_sample_memory_says_so_on_the_page(fresh_copy, tmp_path):
    # an old vmem's interrupted build: vmem.json exists, 256 of the 1,000 shipped exemplars
    with new_memory(tmp_path / "home" / "sample.vmem") as memory:
        memory.exemplars.build(_first_items(256))
        status = completeness(memory)
    assert (status.shipped, status.missing) == (1000, 744)
    at = AppTest.from_file(str(fresh_copy / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    assert any("holds 256 of the 1000 shipped sample exemplars" in w.value for w in at.warning)
