"""The bulk build pipeline: overlapped stages give the same memory as adding one by one; a killed build resumes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vmem_core import BadImageError, VisualMemory
from vmem_core.ingest.datasets import scan_dataset

from .helpers import PixelEncoder, REPO, new_memory

RECORD = PixelEncoder.dim * 4  # bytes per vector in the vault


def make_folder(root: Path, count: int, labels=("a", "b", "c"), seed: int = 0) -> Path:
    """`count` distinct random 12x12 PNGs spread over `labels` as an ImageFolder."""
    rng = np.random.default_rng(seed)
    for label in labels:
        (root / label).mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (12, 12), dtype=np.uint8)
        Image.fromarray(pixels).save(root / labels[i % len(labels)] / f"{i:05d}.png")
    return root


def expected_embeddings(root: Path) -> dict[str, np.ndarray]:
    items = scan_dataset(root)
    vectors = PixelEncoder().encode([Image.open(item.path).convert("RGB") for item in items])
    return {item.source: v for item, v in zip(items, vectors)}


def test_pipelined_build_stores_what_the_encoder_gives(tmp_path):
    root = make_folder(tmp_path / "data", 70)
    with new_memory(tmp_path / "m") as mem:
        calls = []
        report = mem.exemplars.build(root, chunk_size=16, workers=3, progress=lambda done, total: calls.append((done, total)))
        frame = mem.exemplars.browse(limit=1000, thumbnails=True)
        ids, vectors = mem.exemplars.embeddings(frame["id"].tolist())
    assert report.added == 70 and report.skipped_existing == 0
    assert calls[-1] == (70, 70) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    expected = expected_embeddings(root)
    by_id = dict(zip(ids.tolist(), vectors))
    for row in frame.itertuples():
        np.testing.assert_allclose(by_id[row.id], expected[row.source], atol=1e-6)
        assert row.label == row.source.split("/")[0]
        assert Image.open(io.BytesIO(row.thumbnail)).size == (12, 12)
    assert sorted(frame["source"]) == sorted(expected)


def test_strict_build_commits_the_chunks_before_the_bad_image(tmp_path):
    root = make_folder(tmp_path / "data", 40, labels=("a",))
    (root / "a" / "00025.png").write_bytes(b"not a png")  # sorted position 25: in the second chunk of 16
    with new_memory(tmp_path / "m") as mem:
        with pytest.raises(BadImageError, match="00025.png"):
            mem.exemplars.build(root, chunk_size=16, strict=True)
        assert len(mem) == 16  # the first chunk is committed, nothing of the second
        report = mem.exemplars.build(root, chunk_size=16)
        assert (report.added, report.skipped_existing, len(report.rejected)) == (23, 16, 1)
        assert len(mem) == 39


def test_strict_cli_build_removes_a_memory_it_created_and_left_empty(tmp_path, capsys):
    from vmem_core.cli import main

    root = make_folder(tmp_path / "data", 6, labels=("a",))
    (root / "a" / "00002.png").write_bytes(b"not a png")  # in the first (only) chunk: nothing is added
    assert main(["build", "--memory", str(tmp_path / "m"), "--encoder", "test-pixels", "--strict", str(root)]) == 2
    err = capsys.readouterr().err
    assert "00002.png" in err and f"--strict stopped the build before anything was added: the new memory " \
        f"{tmp_path / 'm'} was removed" in err
    assert not (tmp_path / "m").exists()

    (tmp_path / "empty").mkdir()  # an empty folder given as the memory stays an empty folder
    assert main(["build", "--memory", str(tmp_path / "empty"), "--encoder", "test-pixels", "--strict",
                 str(root)]) == 2
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_strict_cli_build_keeps_a_memory_with_exemplars_and_says_so(tmp_path, capsys):
    from vmem_core.cli import main

    root = make_folder(tmp_path / "data", 270, labels=("a",))
    (root / "a" / "00260.png").write_bytes(b"not a png")  # after the first chunk of 256, which is committed
    assert main(["build", "--memory", str(tmp_path / "m"), "--encoder", "test-pixels", "--strict", str(root)]) == 2
    err = capsys.readouterr().err
    assert "00260.png" in err and f"{tmp_path / 'm'} is kept with the 256 exemplar(s) it holds" in err
    assert "rerun the build to go on" in err
    with VisualMemory.open(tmp_path / "m") as mem:
        assert len(mem) == 256


SLOW_BUILD = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
import helpers  # registers the test encoder
original = helpers.PixelEncoder.encode_batch
def slow(self, images):
    time.sleep(0.02)  # keeps the build running long enough to be killed in the middle
    return original(self, images)
helpers.PixelEncoder.encode_batch = slow
from vmem_core.cli import main
sys.exit(main(["build", {data!r}, "--memory", {memory!r}, "--encoder", "test-pixels", "--json"]))
"""


@pytest.mark.slow
def test_build_killed_halfway_resumes_without_duplicates_or_loss(tmp_path):
    count = 3000
    root = make_folder(tmp_path / "data", count)
    memory = tmp_path / "m"
    script = SLOW_BUILD.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(root), memory=str(memory))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    vectors = memory / "vectors.f32"
    deadline = time.monotonic() + 120
    try:
        # vectors are written just before their chunk commits: kill once about a third of them are there
        while not (vectors.exists() and vectors.stat().st_size >= count // 3 * RECORD):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the build never got a third of the way"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL

    with VisualMemory.open(memory) as mem:
        committed = len(mem)
    assert 0 < committed < count, committed

    rerun = subprocess.run([sys.executable, "-c", script.replace("helpers.PixelEncoder.encode_batch = slow", "")],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert (report["skipped_existing"], report["added"], report["exemplars"]) == (committed, count - committed, count)

    expected = expected_embeddings(root)
    with VisualMemory.open(memory) as mem:
        frame = mem.exemplars.browse(include_deleted=True, limit=10 * count, thumbnails=False)
        assert sorted(frame["source"]) == sorted(expected)  # every image once: none lost, none twice
        assert sorted(frame["id"]) == list(range(count))  # the ids of the killed chunk were not burnt
        ids, stored = mem.exemplars.embeddings()
        by_source = dict(zip(frame.set_index("id").loc[ids, "source"], stored))
        assert all(np.allclose(by_source[s], v, atol=1e-6) for s, v in expected.items())
        assert sorted(mem.index.backend.live_ids().tolist()) == list(range(count))
        found, _ = mem.search(stored[::97], 1)
        assert found[:, 0].tolist() == ids[::97].tolist()
        assert mem.audit.verify().ok
    assert vectors.stat().st_size == count * RECORD  # no bytes of the killed chunk left behind
