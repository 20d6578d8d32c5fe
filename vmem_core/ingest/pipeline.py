"""The bulk build: decoding, encoding and inserting overlapped, so that a build runs at the encoder's speed.

Three stages work at once on a stream of chunks:

    decode   workers read, check and decode images and make their thumbnails, at most `prefetch` chunks ahead, so
             memory stays bounded whatever the collection's size: processes for a large build, each also doing the
             encoder's resize and crop (ingest.decode_workers), threads for a small one; on a GPU, plain JPEGs
             are decoded there in one batch per chunk (ingest.jpeg_batch);
    encode   the calling thread runs the encoder on a chunk (onnxruntime uses every core and releases the GIL);
    insert   one writer thread commits the previous chunk (vault append, one DuckDB transaction through Arrow,
             hnswlib add_items on every core) while the next chunk is being encoded.

Every chunk is committed on its own, so a build killed at any moment keeps every chunk committed before, and a rerun
skips the sources already present (resumable by source). The index is snapshotted every SNAPSHOT_INTERVAL_S seconds
during a long build, so that a resumed build replays a few minutes of rows rather than rebuilding the whole index.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence, Union
from pathlib import Path

import numpy as np

from ..errors import BadImageError
from . import jpeg_batch
from .datasets import LabelledImage
from .decode_workers import DecodedImage, decode_many, default_workers, open_decoders, slices
from .images import load_image

BUILD_CHUNK = 256
PREFETCH_CHUNKS = 2
SNAPSHOT_INTERVAL_S = 600.0
AUTO = "auto"  # jpeg_device: the encoder's device when it is a GPU that can take the JPEGs, else none

Progress = Callable[[int, int], None]


@dataclass
class BuildReport:
    added: int = 0
    skipped_existing: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class BuildExemplars(Protocol):
    def plan_build(self, data: Union[str, Path, Sequence[LabelledImage]]) -> tuple[int, list, "BuildReport"]: ...

    def add_embeddings(self, embeddings: np.ndarray, labels: Sequence[str], sources: Optional[Sequence[str]] = None,
                       sha256: Optional[Sequence[str]] = None, thumbnails: Optional[Sequence] = None) -> list[int]: ...


class BuildIndex(Protocol):
    def flush(self) -> None: ...


class BuildTarget(Protocol):
    """What a build writes into (a VisualMemory: its exemplars and index): reading images knows no memory, only
    this."""

    config: dict
    encoder: object
    exemplars: BuildExemplars
    index: BuildIndex


def batch_jpeg_device(encoder, requested: Optional[str] = AUTO) -> Optional[str]:
    """Where a build decodes plain JPEGs in batches (ingest.jpeg_batch): `requested` ("cpu" is the CPU twin of the
    GPU path, None never), or with AUTO the encoder's CUDA device when the encoder has a pixel step with the
    geometry that path reproduces and torchvision imports; None: every image is decoded by PIL."""
    if requested != AUTO:
        return requested
    device = getattr(encoder, "device", None)
    if device is None or not getattr(device, "is_cuda", False) or not getattr(encoder, "input_size", None):
        return None
    if getattr(encoder, "pixel_step", lambda: None)() is None or not jpeg_batch.available():
        return None
    return device.name


def _decode_jpegs_where_encoding(decoded: list[DecodedImage], pixel_step, size: int, device: str) -> None:
    """Fill in the pixels of the chunk's plain JPEGs, decoded in one batch on `device`; one the batch decoder
    refuses is decoded by PIL, and marked with its BadImageError if PIL refuses it too."""
    waiting = [d for d in decoded if d.jpeg is not None]
    if not waiting:
        return
    for d, pixels in zip(waiting, jpeg_batch.decode_and_crop([d.jpeg for d in waiting], size, device)):
        if pixels is None:
            try:
                pixels = pixel_step(load_image(d.jpeg, d.item.source).image)
            except BadImageError as exc:
                d.error = exc
        d.pixels, d.jpeg = pixels, None


def _pixel_batch(good: list[DecodedImage], device: Optional[str]):
    """The chunk's pixels as one uint8 (n, h, w, 3) batch: numpy, or a tensor on `device` when JPEGs were decoded
    there (the host's pixels are copied over to join them)."""
    if device is None:
        return np.stack([d.pixels for d in good])
    return jpeg_batch.stack_on(device, [d.pixels for d in good])


def run_build(
    memory: BuildTarget,
    todo: Sequence[LabelledImage],
    report: BuildReport,
    total: int,
    progress: Optional[Progress] = None,
    strict: bool = False,
    workers: Optional[int] = None,
    chunk_size: int = BUILD_CHUNK,
    prefetch: int = PREFETCH_CHUNKS,
    jpeg_device: Optional[str] = AUTO,
    decode_processes: Optional[bool] = None,
) -> BuildReport:
    """Decode, encode and add `todo` to `memory` in chunks, the three stages overlapped (see the module docstring).

    `report` already counts the items skipped as present; `total` is every item, for progress(done, total).
    `workers` decoding workers (default: one per core), in processes for a large build on a GPU or where
    `decode_processes` says so (ingest.decode_workers);
    `jpeg_device` where plain JPEGs are decoded in batches (see `batch_jpeg_device`).
    Raises the first BadImageError with strict=True, after every chunk before it is committed.
    """
    chunks = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]
    done = total - len(todo)
    last_snapshot = time.monotonic()
    encoder = memory.encoder
    workers = default_workers() if workers is None else workers
    on_gpu = bool(getattr(getattr(encoder, "device", None), "is_cuda", False))
    decoders, in_processes = open_decoders(len(todo), workers, on_gpu, decode_processes)
    jpeg_device = batch_jpeg_device(encoder, jpeg_device)
    # in this process the encoder takes the decoded images, as it always did; workers in other processes (or a
    # batched JPEG decode) hand over the pixels of the encoder's pixel step instead, a quarter of the bytes
    pixel_step = getattr(encoder, "pixel_step", lambda: None)() if in_processes or jpeg_device else None
    if jpeg_device is not None and pixel_step is None:
        raise ValueError(f"jpeg_device {jpeg_device!r} needs an encoder with a pixel step; {encoder!r} has none")
    with decoders, ThreadPoolExecutor(max_workers=1, thread_name_prefix="vmem-insert") as writer:
        pending: deque[list[Future]] = deque()
        inserting: Optional[Future] = None
        next_chunk = 0

        def insert(good: list[DecodedImage], embeddings, size: int) -> None:
            nonlocal done, last_snapshot
            if good:
                memory.exemplars.add_embeddings(embeddings, [d.item.label for d in good], [d.item.source for d in good],
                                      [d.sha256 for d in good], [d.thumbnail for d in good])
                report.added += len(good)
            done += size
            if time.monotonic() - last_snapshot > SNAPSHOT_INTERVAL_S:
                memory.index.flush()
                last_snapshot = time.monotonic()
            if progress:
                progress(done, total)

        def encode(good: list[DecodedImage]):
            if not good:
                return None
            if good[0].image is not None:
                return encoder.encode([d.image for d in good])
            return encoder.encode_pixels(_pixel_batch(good, jpeg_device))

        try:
            while next_chunk < len(chunks) or pending:
                while next_chunk < len(chunks) and len(pending) <= prefetch:
                    pending.append([decoders.submit(decode_many, part, pixel_step, jpeg_device is not None)
                                    for part in slices(chunks[next_chunk], workers)])
                    next_chunk += 1
                decoded = [d for f in pending.popleft() for d in f.result()]
                if jpeg_device is not None:
                    _decode_jpegs_where_encoding(decoded, pixel_step, encoder.input_size, jpeg_device)
                good = []
                for d in decoded:
                    if d.error is None:
                        good.append(d)
                    elif strict:
                        raise d.error
                    else:
                        report.rejected.append((str(d.item.path), str(d.error)))
                embeddings = encode(good)
                if inserting is not None:
                    inserting.result()  # one chunk in flight: the writer never falls more than a chunk behind
                inserting = writer.submit(insert, good, embeddings, len(decoded))
            if inserting is not None:
                inserting.result()
        finally:
            for futures in pending:
                for f in futures:
                    f.cancel()
            if inserting is not None:
                inserting.exception()  # a failing build still waits for the chunk in flight: committed or not, whole
    return report
