"""The exact backend and the device choice: exact search against a numpy reference, device specs, and CPU/GPU
agreement (the CUDA tests skip without a GPU; tests/test_backends.py runs the backend contract on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem_core import VisualMemory
from vmem_core.devices import (
    DeviceError,
    default_device,
    devices_in_use,
    parse_device,
    resolve_device,
    set_default_device,
)

from .helpers import DIM, clustered, new_memory

cuda = pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")


def reference(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The naive exact search: a full float64 sort, equal similarities by position."""
    similarities = queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(len(vectors)), similarities.shape), -similarities), axis=1)[:, :k]
    return order, 1.0 - np.take_along_axis(similarities, order, axis=1)


@pytest.fixture
def device_reset():
    yield
    set_default_device(None)


# --- the one exact search ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 10, 500])
def test_exact_top_k_matches_a_full_sort(k):
    from vmem_core.backends.exact import exact_top_k

    vectors, _ = clustered(3000)
    queries, _ = clustered(40, seed=1)
    positions, distances = exact_top_k(queries, vectors, k)
    truth, true_distances = reference(queries, vectors, k + 1)
    assert positions.dtype == np.int64 and distances.dtype == np.float32
    assert np.allclose(distances, true_distances[:, :k], atol=1e-6)
    # the same item at every rank, except where float32 rounding can swap neighbours closer than 1e-6
    gaps = np.diff(true_distances, axis=1)
    clear = np.concatenate([gaps[:, :1], np.minimum(gaps[:, :-1], gaps[:, 1:])], axis=1) > 1e-6
    assert clear.mean() > 0.9 and np.array_equal(positions[clear], truth[:, :k][clear])


def test_ties_are_broken_by_position_and_exclude_skips_one_row():
    from vmem_core.backends.exact import exact_top_k

    vectors = np.tile(np.eye(4, dtype=np.float32)[:1], (6, 1))  # six identical rows
    positions, _ = exact_top_k(vectors[:1], vectors, 4)
    assert positions.tolist() == [[0, 1, 2, 3]]
    positions, _ = exact_top_k(vectors[:2], vectors, 10, exclude=np.array([0, -1]))
    assert positions.tolist() == [[1, 2, 3, 4, 5], [0, 1, 2, 3, 4]]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 700), st.integers(1, 60), st.integers(0, 2**32 - 1), st.booleans(),
       st.booleans())
def test_top_k_of_a_similarity_matrix_is_that_of_a_full_sort(rows, columns, k, seed, coarse, narrow):
    """The purge's exact check takes each probe's top k from a floor over column-block maxima, not from a sort: on
    any matrix, ties included (coarse values repeat, and -inf marks columns left out, also all but a narrow stretch,
    which leaves fewer than k blocks with a value), it returns a full sort's."""
    from vmem_core.backends.hnsw_index import top_k_of

    rng = np.random.default_rng(seed)
    similarities = rng.normal(size=(rows, columns)).astype(np.float32)
    if coarse:
        similarities = np.round(similarities, 0)
    similarities[:, rng.random(columns) < 0.1] = -np.inf
    if narrow:
        start = int(rng.integers(columns))
        similarities[:, :start] = similarities[:, start + 5:] = -np.inf
    order, distances = top_k_of(similarities, k)
    truth = np.lexsort((np.broadcast_to(np.arange(columns), similarities.shape), -similarities), axis=1)
    truth = truth[:, :min(k, columns)]
    assert np.array_equal(order, truth)
    assert np.array_equal(distances, 1.0 - np.take_along_axis(similarities, truth, axis=1))


def test_the_backend_search_is_the_reference_order(tmp_path):
    vectors, labels = clustered(2600)
    queries, _ = clustered(30, seed=2)
    with new_memory(tmp_path / "mem", backend="exact") as memory:
        memory.exemplars.add_embeddings(vectors, labels)
        memory.exemplars.delete(list(range(0, 2600, 3)))
        live = np.setdiff1d(np.arange(2600), np.arange(0, 2600, 3))
        found, distances = memory.search(queries, 25)
        positions, true_distances = reference(queries, vectors[live], 25)
        assert np.array_equal(found, live[positions])
        assert np.allclose(distances, true_distances, atol=1e-6)
        # a narrow id filter (scored on the allowed rows alone) and a wide one (a mask) give the reference too
        for allowed in (live[:40], live[::2]):
            found, _ = memory.search(queries, 10, allowed_ids=allowed)
            assert np.array_equal(found, allowed[reference(queries, vectors[allowed], 10)[0]])


def test_tuning_the_beam_changes_nothing_on_the_exact_backend(tmp_path):
    vectors, labels = clustered(500)
    with new_memory(tmp_path / "mem", backend="exact") as memory:
        memory.exemplars.add_embeddings(vectors, labels)
        before = memory.search(vectors[:5], 20)
        assert memory.index.set_search_ef(1) == {"from": 128, "to": 1}
        after = memory.search(vectors[:5], 20)
        assert np.array_equal(before[0], after[0]) and after[0].shape == (5, 20)


def test_adds_out_of_id_order_and_growth_keep_rows_and_ids_paired(tmp_path):
    from vmem_core.backends.exact import ExactBackend

    backend = ExactBackend(DIM, lambda labels: np.zeros(0, np.int64), device="cpu")
    vectors, _ = clustered(3000)
    backend.add(np.arange(1000, 3000), vectors[1000:])  # grows past the first capacity
    backend.add(np.arange(0, 1000)[::-1], vectors[:1000][::-1])  # lower ids, out of order: rows re-sorted
    backend.add(np.array([5]), vectors[6:7])  # an overwrite
    assert backend.live_count == 3000 and np.array_equal(backend.live_ids(), np.arange(3000))
    found, distances = backend.search(vectors[[0, 2999, 6]], 2)
    assert found[:, 0].tolist() == [0, 2999, 5] and np.allclose(distances[:, 0], 0, atol=1e-6)
    assert found[2, 1] == 6


def test_purge_leaves_zeros_and_the_evidence_says_so(tmp_path):
    vectors, labels = clustered(300)
    with new_memory(tmp_path / "mem", backend="exact") as memory:
        memory.exemplars.add_embeddings(vectors, labels)
        _, stored = memory.exemplars.stored_embeddings([3, 4])
        evidence = memory.index.backend.purge([3, 4], stored, 99)
        assert [e.passed for e in evidence] == [True] and "overwritten with zeros" in evidence[0].detail
        assert all(not row.any() for row in memory.index.backend.held_vectors([3, 4]).values())
        assert not {3, 4} & set(memory.search(vectors[[3, 4]], 10)[0].ravel().tolist())


# --- device specs -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, spec", [("auto", "auto"), ("CPU", "cpu"), (" cuda ", "cuda"), ("cuda:3", "cuda:3")])
def test_device_specs_are_parsed_to_one_spelling(text, spec):
    assert parse_device(text) == spec


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:-1", "cuda:a", "mps", ""])
def test_a_bad_device_names_the_value_and_what_is_accepted(bad):
    with pytest.raises(DeviceError) as error:
        parse_device(bad)
    assert repr(bad) in str(error.value) and "auto, cpu, cuda, cuda:N" in str(error.value)


def test_the_process_device_comes_from_the_option_then_the_environment(monkeypatch, device_reset):
    monkeypatch.delenv("VMEM_DEVICE", raising=False)
    assert default_device() == "auto"
    monkeypatch.setenv("VMEM_DEVICE", "cpu")
    assert default_device() == "cpu" and resolve_device().name == "cpu"
    set_default_device("cuda:0")
    assert default_device() == "cuda:0"
    monkeypatch.setenv("VMEM_DEVICE", "tpu")
    set_default_device(None)
    with pytest.raises(DeviceError, match=r"\$VMEM_DEVICE 'tpu'"):
        default_device()


def test_auto_is_the_cpu_without_cuda_and_a_missing_gpu_is_an_error():
    import torch

    if torch.cuda.is_available():
        assert resolve_device("auto").name == "cuda:0"
    else:
        assert resolve_device("auto").name == "cpu"
        with pytest.raises(DeviceError, match="torch sees no CUDA device; accepted here: auto, cpu"):
            resolve_device("cuda")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DeviceError, match=f"'cuda:{count}' requested"):
        resolve_device(f"cuda:{count}")


def test_cli_refuses_a_bad_device_and_stats_names_the_devices(tmp_path, capsys):
    from vmem_core.cli import main

    path = tmp_path / "mem"
    new_memory(path, backend="exact").close()
    with pytest.raises(SystemExit):
        main(["classify", str(path), "x.png", "--device", "gpu"])
    assert "argument --device: device 'gpu' is not one vmem knows; accepted: auto, cpu" in capsys.readouterr().err
    assert main(["stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert "every query is scored against every live exemplar (float32)" in out
    assert "devices: encodes on cpu, searches on cpu" in out or "cuda" in out


def test_devices_in_use_names_where_each_backend_searches():
    cpu = resolve_device("cpu")

    class OnDevice:
        device = cpu

    assert devices_in_use(OnDevice(), {"name": "hnswlib"})["search"] == {"device": "cpu", "name": "cpu"}
    assert devices_in_use(object(), {"name": "milvus", "location": "http://host:19530"})["search"] == {
        "device": "server", "name": "http://host:19530"}
    assert devices_in_use(OnDevice(), {"name": "exact", "device": "cuda:1", "device_name": "H200"}) == {
        "encode": {"device": "cpu", "name": "cpu"}, "search": {"device": "cuda:1", "name": "H200"}}


# --- CPU and GPU agree (CUDA only) ------------------------------------------------------------------------------
@cuda
def test_gpu_exact_search_orders_as_the_cpu_does():
    from vmem_core.backends.exact import exact_top_k

    vectors, _ = clustered(20000)
    queries, _ = clustered(200, seed=3)
    on_cpu = exact_top_k(queries, vectors, 50, device="cpu")
    on_gpu = exact_top_k(queries, vectors, 50, device="cuda")
    assert np.array_equal(on_gpu[0], on_cpu[0])
    assert np.allclose(on_gpu[1], on_cpu[1], atol=1e-6)


@cuda
def test_a_memory_searched_on_the_gpu_finds_what_the_cpu_finds(tmp_path, device_reset):
    vectors, labels = clustered(5000)
    queries, _ = clustered(50, seed=4)
    path = tmp_path / "mem"
    set_default_device("cuda")
    with new_memory(path, backend="exact") as memory:
        memory.exemplars.add_embeddings(vectors, labels)
        memory.exemplars.delete([1, 2, 3])
        assert memory.stats()["devices"]["search"]["device"] == "cuda:0"
        on_gpu = memory.search(queries, 30, labels=["class-1", "class-4"])
    set_default_device("cpu")
    with VisualMemory.open(path) as memory:
        assert memory.index.backend.describe()["device"] == "cpu"
        on_cpu = memory.search(queries, 30, labels=["class-1", "class-4"])
    assert np.array_equal(on_gpu[0], on_cpu[0]) and np.allclose(on_gpu[1], on_cpu[1], atol=1e-6)


@cuda
@pytest.mark.slow
def test_gpu_encodings_agree_with_the_cpu_reference():
    from PIL import Image

    from vmem_core.encoders.efficientnet import EfficientNetLite0Encoder

    from .helpers import SAMPLE

    images = [Image.open(p) for p in sorted((SAMPLE / "queries").glob("*/*.png"))[::10]]
    images += [Image.open(p) for p in sorted((SAMPLE.parent / "ood").glob("*.jpg"))]
    on_cpu = EfficientNetLite0Encoder(runtime="torch", device="cpu").encode(images)
    gpu = EfficientNetLite0Encoder(device="cuda")
    on_gpu = gpu.encode(images)
    assert gpu.runtime == "torch" and gpu.batch_size == 256 and on_gpu.dtype == np.float32
    assert np.min(np.sum(on_cpu * on_gpu, axis=1)) >= 0.999
