"""Huge pages for the index: hnswlib's block is advised on creation and growth; after a load it is collapsed later, by
whoever asks (the app, in the background), never by the load itself."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from vmem_core.backends import hugepages
from vmem_core.backends.hnsw_index import AnnIndex, IndexParams

DIM = 512
THP_ON = hugepages.thp_mode() in ("always", "madvise")


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def kernel_gives_huge_pages() -> None:
    """Skip unless the kernel backs a madvised allocation with huge pages right now (numpy advises its large arrays):
    a memory too fragmented to give any says nothing about how vmem advises its index."""
    before = hugepages.huge_page_bytes()
    control = np.ones(64 << 20, dtype=np.uint8)
    got = hugepages.huge_page_bytes() - before
    del control
    if got < 32 * 1024 * 1024:
        pytest.skip(f"the kernel gave a 64 MiB numpy array only {got} bytes of huge pages: none to be had now")


def test_mode_is_read_from_the_kernel_setting(tmp_path, monkeypatch):
    setting = tmp_path / "enabled"
    setting.write_text("always [madvise] never\n")
    monkeypatch.setattr(hugepages, "THP_SETTING", setting)
    assert hugepages.thp_mode() == "madvise"
    setting.write_text("always madvise [never]\n")
    assert hugepages.thp_mode() == "never"
    everything = hugepages.anonymous_mappings()
    assert hugepages.advise_huge_pages(everything, collapse=True) == hugepages.Advice()  # switched off: untouched
    monkeypatch.setattr(hugepages, "THP_SETTING", tmp_path / "missing")
    assert hugepages.thp_mode() == "unavailable"


def test_mappings_are_cut_to_whole_huge_pages_and_small_ones_left_out():
    page = hugepages.HUGE_PAGE
    cut = hugepages.whole_huge_pages([(page + 4096, 40 * page + 8192), (0, 3 * page)], min_bytes=4 * page)
    assert cut == [(2 * page, 40 * page)]


def test_new_ranges_leave_out_what_existed_before():
    before = [(100, 200), (300, 400)]
    after = [(50, 250), (300, 500), (600, 700)]  # grown at both ends, merged with a new neighbour, brand new
    assert hugepages.new_address_ranges(before, after) == [(50, 100), (200, 250), (400, 500), (600, 700)]
    assert hugepages.new_address_ranges(before, before) == []


@pytest.mark.skipif(not THP_ON, reason="transparent huge pages are switched off on this machine")
def test_only_the_blocks_own_new_mapping_is_advised():
    import mmap

    other = mmap.mmap(-1, 64 * 1024 * 1024, flags=mmap.MAP_PRIVATE)  # made before the block: not advised
    with hugepages.huge_pages_for_new_mappings() as advice:
        mine = mmap.mmap(-1, 64 * 1024 * 1024, flags=mmap.MAP_PRIVATE)
    assert 60 * 1024 * 1024 <= advice[0].advised <= 64 * 1024 * 1024
    before = hugepages.huge_page_bytes()
    mine.write(b"x" * (48 * 1024 * 1024))
    gained = hugepages.huge_page_bytes() - before
    other.write(b"x" * (48 * 1024 * 1024))
    assert gained >= 32 * 1024 * 1024
    assert hugepages.huge_page_bytes() - before - gained < 8 * 1024 * 1024  # the other one stayed on small pages
    mine.close()
    other.close()


@pytest.mark.slow
@pytest.mark.skipif(not THP_ON, reason="transparent huge pages are switched off on this machine")
def test_index_built_and_loaded_sits_on_huge_pages(tmp_path):
    vectors = unit_vectors(30_000, seed=0)  # ~61 MB of vectors in hnswlib's block (numpy's own copy is advised by numpy)
    kernel_gives_huge_pages()
    before = hugepages.huge_page_bytes()
    index = AnnIndex(DIM, IndexParams(M=8, ef_construction=16, ef_search=32), capacity=len(vectors))
    index.add(np.arange(len(vectors)), vectors, threads=2)
    built = hugepages.huge_page_bytes() - before
    assert built >= 32 * 1024 * 1024, f"only {built} bytes of the new index are on huge pages"
    expected_ids, _ = index.search(vectors[:5], k=10)

    path = tmp_path / "index.bin"
    index._index.save_index(str(path))
    del index
    before = hugepages.huge_page_bytes()
    loaded = AnnIndex.load(path, DIM, IndexParams(M=8, ef_construction=16, ef_search=32))
    assert hugepages.huge_page_bytes() - before < 32 * 1024 * 1024  # the load did not wait for a collapse

    @contextmanager
    def stop():
        yield False

    assert loaded.collapse_huge_pages(stop) == 0  # a guard that says stop: nothing done, nothing lost
    found_ids, _ = loaded.search(vectors[:5], k=10)
    assert np.array_equal(found_ids, expected_ids)


@pytest.mark.slow
@pytest.mark.skipif(not THP_ON, reason="transparent huge pages are switched off on this machine")
def test_a_loaded_index_is_collapsed_in_steps_when_asked_and_only_once(tmp_path):
    vectors = unit_vectors(30_000, seed=0)
    index = AnnIndex(DIM, IndexParams(M=8, ef_construction=16, ef_search=32), capacity=len(vectors))
    index.add(np.arange(len(vectors)), vectors, threads=2)
    expected_ids, _ = index.search(vectors[:5], k=10)
    path = tmp_path / "index.bin"
    index._index.save_index(str(path))
    del index
    loaded = AnnIndex.load(path, DIM, IndexParams(M=8, ef_construction=16, ef_search=32))
    before, steps = hugepages.huge_page_bytes(), []

    @contextmanager
    def go_on():
        steps.append(1)
        yield True

    collapsed = loaded.collapse_huge_pages(go_on)
    assert collapsed >= 32 * 1024 * 1024 and len(steps) >= 2
    assert hugepages.huge_page_bytes() - before >= 32 * 1024 * 1024
    assert loaded.collapse_huge_pages(go_on) == 0  # once
    found_ids, _ = loaded.search(vectors[:5], k=10)
    assert np.array_equal(found_ids, expected_ids)


@pytest.mark.slow
@pytest.mark.skipif(not THP_ON, reason="transparent huge pages are switched off on this machine")
def test_growing_index_is_advised_after_resize():
    index = AnnIndex(DIM, IndexParams(M=8, ef_construction=16, ef_search=32), capacity=1024)
    vectors = unit_vectors(40_000, seed=1)
    before = hugepages.huge_page_bytes()
    for start in range(0, len(vectors), 5_000):
        index.add(np.arange(start, start + 5_000), vectors[start:start + 5_000], threads=2)
    assert hugepages.huge_page_bytes() - before >= 32 * 1024 * 1024
