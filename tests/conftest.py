"""Shared fixtures. Most tests use a tiny pixel encoder (fast, no torch); the real encoder has its own tests."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vmem_core import VisualMemory, register_encoder
from vmem_core.encoders import BatchedEncoder

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "fashion-mnist"


class PixelEncoder(BatchedEncoder):
    """8x8 greyscale pixels, centred: a deterministic stand-in encoder for storage and CLI tests."""

    name = "test-pixels"
    identity = "test-pixels:v1"
    dim = 64

    def encode_batch(self, images):
        rows = [np.asarray(im.convert("L").resize((8, 8), Image.BILINEAR), np.float32).ravel() for im in images]
        rows = np.stack(rows) - 127.5
        rows[:, 0] += 1e-3  # never a zero vector, even for a flat grey image
        return rows


class OtherPixelEncoder(PixelEncoder):
    name = "test-pixels-other"
    identity = "test-pixels-other:v1"


register_encoder("test-pixels", lambda rest, **kw: PixelEncoder())
register_encoder("test-pixels-other", lambda rest, **kw: OtherPixelEncoder())


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """An ImageFolder of 3 labels x 4 images, from the shipped Fashion-MNIST sample."""
    root = tmp_path / "small"
    for label in ("bag", "sneaker", "trouser"):
        (root / label).mkdir(parents=True)
        for path in sorted((SAMPLE / "memory" / label).glob("*.png"))[:4]:
            shutil.copy(path, root / label / path.name)
    return root


@pytest.fixture
def memory(tmp_path: Path, small_folder: Path):
    mem = VisualMemory.create(tmp_path / "mem", encoder="test-pixels")
    mem.build(small_folder)
    yield mem
    try:
        mem.close()
    except Exception:
        pass


def memory_state(path: Path) -> dict:
    """Everything observable about a memory, read back from disk in a fresh handle."""
    with VisualMemory.open(path) as mem:
        frame = mem.browse(include_deleted=True, limit=1_000_000)
        return {
            "rows": frame.drop(columns=["thumbnail"]).to_dict("records"),
            "stats": {k: v for k, v in mem.stats().items() if k not in ("bytes", "bytes_per_exemplar")},
            "live": sorted(mem._index.live_ids().tolist()),
        }


@contextmanager
def database_held_elsewhere(path: Path):
    """Another process (not a vmem app: it serves no commands) holding the memory's database open."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(path / 'memory.duckdb')!r}); print('ready', flush=True);"
         " time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.kill()
        holder.wait()
