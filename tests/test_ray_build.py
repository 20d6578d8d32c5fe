"""`vmem build --engine ray`: Ray Data gives exactly the memory a single-process build gives, and resumes like it.

One local Ray instance (2 CPUs) serves the whole module: starting Ray takes seconds.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from vmem_core import VisualMemory

from .helpers import SAMPLE, new_memory
from .optional import require


@pytest.fixture(scope="module")
def ray_instance():
    ray = require("ray")
    from vmem_core.ingest.ray_build import start

    start(num_cpus=2)  # workers get the driver's sys.path: they can import the tests' pixel encoder
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The shipped sample memory split (1,000 images, 10 classes) plus one corrupt image."""
    root = tmp_path_factory.mktemp("collection") / "memory"
    shutil.copytree(SAMPLE / "memory", root)
    (root / "bag" / "zz-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return root


def everything(memory: VisualMemory) -> dict:
    rows = memory.exemplars.browse(include_deleted=True, limit=10**6)
    ids, vectors = memory.exemplars.stored_embeddings(rows["id"].tolist())
    return {
        "ids": rows["id"].tolist(),
        "labels": rows["label"].tolist(),
        "sources": rows["source"].tolist(),
        "sha256": rows["sha256"].tolist(),
        "thumbnails": [bytes(t) for t in rows["thumbnail"]],
        "vectors": vectors,
        "vector_ids": ids.tolist(),
    }


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, collection):
    path = tmp_path_factory.mktemp("single") / "mem"
    with new_memory(path) as memory:
        report = memory.exemplars.build(collection)
        return report, everything(memory)


@pytest.mark.slow
def test_ray_build_equals_the_single_process_build(ray_instance, tmp_path, collection, single_process):
    from vmem_core.ingest.ray_build import build_with_ray

    expected_report, expected = single_process
    progress = []
    with new_memory(tmp_path / "mem") as memory:
        report = build_with_ray(memory, collection, progress=lambda done, total: progress.append((done, total)))
        got = everything(memory)
        assert memory.index.backend.live_count == 1000
        found, distances = memory.search(got["vectors"][:5], 1)
        assert found[:, 0].tolist() == got["ids"][:5] and np.allclose(distances, 0, atol=1e-5)
    assert report.added == expected_report.added == 1000
    assert [p for p, _ in report.rejected] == [p for p, _ in expected_report.rejected] == [
        str(collection / "bag" / "zz-corrupt.png")]
    assert progress[-1] == (1001, 1001) and [d for d, _ in progress] == sorted(d for d, _ in progress)
    for key in ("ids", "labels", "sources", "sha256", "thumbnails", "vector_ids"):
        assert got[key] == expected[key], key
    assert np.array_equal(got["vectors"], expected["vectors"])  # bit for bit


@pytest.mark.slow
def test_ray_build_resumes_and_writes_to_milvus(ray_instance, tmp_path, collection, single_process):
    """An interrupted build (here: the first 300 images) is finished by Ray, into a Milvus-backed memory."""
    require("pymilvus")
    require("milvus_lite")
    from vmem_core.ingest.datasets import scan_dataset
    from vmem_core.ingest.ray_build import build_with_ray

    _, expected = single_process
    items = scan_dataset(collection)
    with new_memory(tmp_path / "mem", backend="milvus") as memory:
        first = memory.exemplars.build(items[:300])
        report = build_with_ray(memory, collection)
        assert report.skipped_existing == first.added > 0 and report.added == 1000 - first.added
        got = everything(memory)
        assert memory.index.backend.name == "milvus" and memory.index.backend.live_count == 1000
        again = build_with_ray(memory, collection)
        assert again.added == 0 and again.skipped_existing == 1000
    for key in ("ids", "labels", "sources", "sha256", "thumbnails"):
        assert got[key] == expected[key], key
    assert np.array_equal(got["vectors"], expected["vectors"])


@pytest.mark.slow
def test_cli_build_with_ray_into_milvus(ray_instance, tmp_path, small_folder, capsys):
    require("pymilvus")
    require("milvus_lite")
    import json

    from vmem_core.cli import main

    path = tmp_path / "mem"
    assert main(["build", str(small_folder), "--memory", str(path), "--encoder", "test-pixels", "--engine", "ray",
                 "--backend", "milvus", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == 12 and out["exemplars"] == 12 and out["rejected"] == []
    with VisualMemory.open(path) as memory:
        assert memory.index.backend.name == "milvus" and memory.index.backend.live_count == 12
    assert main(["build", str(small_folder), "--memory", str(path), "--ray-address", "auto"]) == 2
    assert "--ray-address and --ray-cpus go with --engine ray" in capsys.readouterr().err
