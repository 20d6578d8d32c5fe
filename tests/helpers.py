"""Helpers the tests share (fixtures live in conftest.py): paths, the stand-in pixel encoders, image bytes, the CLI
runner, and a memory's observable state. Importable as `tests.helpers` and, by crash-test subprocesses that put
tests/ on sys.path, as `helpers`; importing it registers the test encoders."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from vmem_core import VisualMemory, register_encoder
from vmem_core.encoders import BatchedEncoder

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "fashion-mnist"
TIMEOUT = 120  # seconds for an AppTest run
CAUGHT: list = []  # objects an AppTest script hands to its test (the script runs in this process)


def sample_folder(root: Path, labels=None, per_label: int = 4, split: str = "memory") -> Path:
    """An ImageFolder at `root`: the first `per_label` shipped sample images of each label (every label when None)
    of `split` ("memory" or "queries"). Returns `root`."""
    labels = sorted(p.name for p in (SAMPLE / split).iterdir()) if labels is None else labels
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for path in sorted((SAMPLE / split / label).glob("*.png"))[:per_label]:
            shutil.copy(path, root / label / path.name)
    return root


def new_memory(path, data=None, **options) -> VisualMemory:
    """A new test memory at `path` (the test-pixels encoder unless `encoder=` says otherwise; other options as
    `VisualMemory.create`), built from the ImageFolder or CSV `data` when given."""
    memory = VisualMemory.create(path, encoder=options.pop("encoder", "test-pixels"), **options)
    if data is not None:
        memory.exemplars.build(data)
    return memory


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


def grey_8x8_pixels(image):
    """PixelEncoder's resize as a pixel step (encoders.base): uint8 (8, 8, 3), the grey level in every channel."""
    return np.repeat(np.asarray(image.convert("L").resize((8, 8), Image.BILINEAR))[..., None], 3, axis=2)


class SplitPixelEncoder(PixelEncoder):
    """PixelEncoder with its resize split off as a pixel step, so that decoding workers can do it."""

    name = "test-pixels-split"

    def pixel_step(self):
        return grey_8x8_pixels

    def encode_pixel_batch(self, pixels):
        rows = np.asarray(pixels)[..., 0].reshape(len(pixels), -1).astype(np.float32) - 127.5
        rows[:, 0] += 1e-3
        return rows


class OtherPixelEncoder(PixelEncoder):
    name = "test-pixels-other"
    identity = "test-pixels-other:v1"


register_encoder("test-pixels", lambda rest, **kw: PixelEncoder())
register_encoder("test-pixels-other", lambda rest, **kw: OtherPixelEncoder())
register_encoder("test-pixels-split", lambda rest, **kw: SplitPixelEncoder())


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def memory_state(path: Path) -> dict:
    """Everything observable about a memory, read back from disk in a fresh handle."""
    with VisualMemory.open(path) as mem:
        frame = mem.exemplars.browse(include_deleted=True, limit=1_000_000)
        return {
            "rows": frame.drop(columns=["thumbnail"]).to_dict("records"),
            # ram_bytes is this handle's index in memory: an index built from the database on first use (a memory
            # that never had one saved) and one loaded from its snapshot differ by allocator pages, not by content
            "stats": {k: v for k, v in mem.stats().items() if k not in ("bytes", "bytes_per_exemplar", "ram_bytes")},
            "live": sorted(mem.index.backend.live_ids().tolist()),
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


@contextmanager
def held_by_a_host(path: Path):
    """Another process holding the memory open and serving `vmem` commands on it, as the app does (without
    Streamlit); it closes the memory when the block ends. Yields the process."""
    code = (
        "import sys; sys.path.insert(0, {tests!r}); import helpers; "
        "from vmem_core import VisualMemory, host; from vmem_core.cli import run_for_client; "
        "host.set_command_runner(run_for_client); memory = VisualMemory.open({path!r}); host.host_memory(memory); "
        "print('ready', flush=True); sys.stdin.read(); memory.close()"
    ).format(tests=str(REPO / "tests"), path=str(path))
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
        if holder.poll() is None:  # still running (a test may have killed it): it closes the memory cleanly
            holder.stdin.close()
            assert holder.wait(120) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def vmem(*args, cwd=None):
    # the checkout under test comes first on the path: from another folder, an installed vmem would answer instead
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "vmem_core.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO,
        timeout=600, env={**os.environ, "PYTHONPATH": path},
    )


def texts(at) -> str:
    parts = [e.value for kind in ("title", "subheader", "markdown", "caption", "success", "warning", "error", "info")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG whose header claims width x height (a decompression bomb needs no real pixels to test)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# a randomly initialised open_clip model small enough to build in a test (no weights can be downloaded here)
TINY_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


DIM = 64  # the test-pixels encoder's
LABELS = [f"class-{c}" for c in range(8)]


def clustered(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Unit vectors in 8 labelled clusters (a centre per label plus noise), like embeddings of 8 classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(LABELS), DIM))
    which = rng.integers(0, len(LABELS), n)
    vectors = centres[which] + 0.6 * rng.normal(size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), [LABELS[c] for c in which]


def freeze_reliability(memory, top_n: int, monkeypatch) -> None:
    """Hold reliability v at its present values across edits, as a counterfactual check assumes: the counts pruning
    reads, and the {id: v} made from them."""
    from vmem_core.memory.reliability import ReliabilityReads

    ids, counts = (array.copy() for array in memory.reliability.counts(top_n))
    v = dict(zip(ids.tolist(), counts.tolist()))
    counts_of, v_of = ReliabilityReads.counts, ReliabilityReads.__call__  # any other top_n: as it is
    monkeypatch.setattr(ReliabilityReads, "counts",
                        lambda self, n=top_n: (ids, counts) if n == top_n else counts_of(self, n))
    monkeypatch.setattr(ReliabilityReads, "__call__", lambda self, n=top_n: v if n == top_n else v_of(self, n))
