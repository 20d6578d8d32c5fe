"""Memory per exemplar: bytes on disk by part and the RAM estimate of the index."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from vmem_core.backends.hnsw_index import AnnIndex, IndexParams

from .helpers import new_memory


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def allocated() -> int:
    """Bytes handed out by glibc's malloc (the resident set is blurred by reuse of pages numpy freed)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


@pytest.mark.parametrize("dim, M", [(96, 8), (256, 16)])
def test_index_ram_estimate_matches_what_hnswlib_allocates(dim, M):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10_000, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(10_000)
    before = allocated()
    index = AnnIndex(dim, IndexParams(M=M, ef_construction=16), capacity=10_000)
    index.add(ids, vectors)
    grown = allocated() - before
    assert 0.95 * grown < index.resident_bytes() < 1.05 * grown, (index.resident_bytes(), grown)


def test_stats_break_down_bytes_per_exemplar(memory):
    stats = memory.stats()
    parts = stats["bytes_per_exemplar_by_part"]
    assert parts["vectors"] == memory.dim * 4  # the vault holds exactly one float32 vector per exemplar
    assert parts["thumbnails"] > 0 and parts["database"] > 0 and parts["index"] > 0
    assert abs(sum(parts.values()) - stats["bytes_per_exemplar"]) < 1
    assert stats["ram_bytes_per_exemplar"] == round(stats["ram_bytes"] / stats["exemplars"], 1)
    assert stats["ram_bytes"] > stats["exemplars"] * memory.dim * 4  # every vector is held in RAM by the index


def test_an_empty_memory_has_no_per_exemplar_figures(tmp_path, capsys):
    from vmem_core import VisualMemory
    from vmem_core.cli import main

    new_memory(tmp_path / "empty").close()
    with VisualMemory.open(tmp_path / "empty") as memory:
        stats = memory.stats()
    assert stats["exemplars"] == 0 and stats["bytes"] > 0  # the fixed overhead is there, but divides by nothing
    assert stats["bytes_per_exemplar"] is None and stats["ram_bytes_per_exemplar"] is None
    assert set(stats["bytes_per_exemplar_by_part"]) == {"vectors", "thumbnails", "database", "index", "other"}
    assert all(v is None for v in stats["bytes_per_exemplar_by_part"].values())
    assert main(["stats", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert "per exemplar n/a (no exemplars)" in out and "bytes per exemplar" not in out
