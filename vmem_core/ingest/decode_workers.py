"""Decoding images in worker processes, so that a build on a GPU decodes on every core while the encoder runs.

Once the encoder runs on a GPU, decoding on the host is the bottleneck (RESEARCH.md: an H200 encodes 26,700 images/s,
16 cores decode ~3,000 photo JPEGs/s), and PIL holds the GIL for part of each decode and resize, so processes rather
than threads (RESEARCH.md: 2 processes decode 2.1x the JPEGs per second of one; processes against threads on a
many-core GPU machine is still to be measured: `bench/decode_workers.py` prints both). A worker reads, checks and decodes
an image with `images.load_image` (the same limits, the same errors naming the file), makes its thumbnail, and, when
the encoder has a pixel step (encoders.base), resizes and crops it too, sending back uint8 pixels rather than the
image. With `jpeg_batch=True` a plain JPEG is only read, checked from its header and thumbnailed (from a reduced-size
draft decode): its bytes go back to be decoded in a batch where the encoder runs (ingest.jpeg_batch, nvJPEG on a GPU).

On the CPU a build keeps its decoding threads: there the encoder is the bottleneck by far (~100 images/s on 2 cores
against ~800 28x28 PNGs/s decoded, bench/decode_workers.py), and processes only add the cost of sending pixels
between them (on 2 cores at load 4-5, decoding alone ran in processes at 0.67x the threads' rate for 28x28 PNGs and
0.87x for 500x375 JPEGs). A build also
keeps threads below PROCESS_POOL_MIN_IMAGES images, where starting a pool (~0.6 s for 2 workers, the first time in
a process) costs more than it saves. `processes=True` or False overrides the choice.

Worker processes fork from a server that imported this module once (multiprocessing's forkserver): no worker is
forked from a process whose other threads (the encoder's, the app's, CUDA's) may hold locks, and none re-imports
vmem. As with every start method but fork, the script that builds must guard its top level with
`if __name__ == "__main__":` (the workers import the main module); `vmem`, the app and pytest do.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import BadImageError
from .datasets import LabelledImage
from .images import THUMBNAIL_SIZE, check_image_header, load_image, make_thumbnail, read_image_bytes

# bench/decode_workers.py on 2 loaded cores: a warm pool of 2 started and returned its first 256 PNGs in ~0.6 s,
# while a thread decodes (and resizes to 224) a 28x28 PNG in ~1 ms: some hundreds of images pay for the start
PROCESS_POOL_MIN_IMAGES = 512
# spawn where there is no fork server (Windows): slower to start, the same results
_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


@dataclass
class DecodedImage:
    """One image as a worker hands it back: exactly one of image, pixels and jpeg is set, or error is."""

    item: LabelledImage
    image: Optional[Image.Image] = None  # the RGB image (decoded in this process, or for an encoder without pixels)
    pixels: Optional[np.ndarray] = None  # uint8 (h, w, 3): the encoder's pixel step, done in the worker
    jpeg: Optional[bytes] = None  # a plain JPEG's bytes, left to be decoded in a batch where the encoder runs
    sha256: str = ""
    thumbnail: Optional[bytes] = None
    error: Optional[BadImageError] = None


def decode(item: LabelledImage, pixel_step=None, jpeg_batch: bool = False) -> DecodedImage:
    """Read, check and decode one image; a BadImageError is returned in the result, never raised."""
    try:
        if jpeg_batch:
            data = read_image_bytes(item.path, item.source)
            plain = _plain_jpeg(data, item.source)
            if plain is not None:
                return DecodedImage(item, jpeg=data, sha256=plain[0], thumbnail=plain[1])
            loaded = load_image(data, item.source)
        else:
            loaded = load_image(item.path, item.source)
    except BadImageError as exc:
        return DecodedImage(item, error=exc)
    thumbnail = make_thumbnail(loaded.image)
    if pixel_step is not None:
        return DecodedImage(item, pixels=pixel_step(loaded.image), sha256=loaded.sha256, thumbnail=thumbnail)
    return DecodedImage(item, image=loaded.image, sha256=loaded.sha256, thumbnail=thumbnail)


def decode_many(items: Sequence[LabelledImage], pixel_step=None, jpeg_batch: bool = False) -> list[DecodedImage]:
    """`decode` over a slice of items: one task per slice keeps the traffic between processes to a few messages."""
    return [decode(item, pixel_step, jpeg_batch) for item in items]


def _plain_jpeg(data: bytes, name: str) -> Optional[tuple[str, bytes]]:
    """(sha256, thumbnail) of a JPEG that a batched decoder gives as PIL would (baseline, RGB or greyscale, no EXIF
    rotation), checked against the size limits from its header; None for anything else, which PIL decodes."""
    import hashlib

    from .jpeg_batch import batch_decodable

    opened = check_image_header(data, name)
    if opened is None or not batch_decodable(opened):
        return None
    try:
        opened.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))  # DCT scaling: decodes only what the thumbnail needs
        opened.load()
        thumbnail = make_thumbnail(opened.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError):
        return None  # damaged: the PIL path decodes it again and reports it as it always does
    return hashlib.sha256(data).hexdigest(), thumbnail


def default_workers() -> int:
    """Decoding processes: one per core (the encoder's own threads overlap with them, as they did with threads)."""
    return max(1, os.cpu_count() or 1)


def open_decoders(count: int, workers: Optional[int] = None, encoder_on_gpu: bool = False,
                  processes: Optional[bool] = None) -> tuple[Executor, bool]:
    """An executor to decode `count` images with, and whether it runs in processes: with `processes` None, when the
    encoder runs on a GPU, the build has PROCESS_POOL_MIN_IMAGES images or more and there are 2 workers or more
    (see the module docstring for why not otherwise)."""
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"decoding workers must be >= 1, got {workers}")
    if processes is None:
        processes = encoder_on_gpu and count >= PROCESS_POOL_MIN_IMAGES and workers > 1
    if not processes:
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vmem-decode"), False
    context = multiprocessing.get_context(_START_METHOD)
    if _START_METHOD == "forkserver":
        context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context), True


def slices(items: Sequence, parts: int) -> list[Sequence]:
    """`items` cut into at most `parts` consecutive slices of near-equal length, in order.

    >>> slices(list(range(5)), 2)
    [[0, 1, 2], [3, 4]]
    """
    size = -(-len(items) // max(1, parts))
    return [items[i:i + size] for i in range(0, len(items), size)] if items else []


def decode_in_processes(items: Sequence[LabelledImage], pixel_step, workers: Optional[int] = None) -> list[DecodedImage]:
    """Every item decoded (with `pixel_step`) by a process pool, in order: for adding many files at once."""
    workers = default_workers() if workers is None else workers
    executor, _ = open_decoders(len(items), workers, processes=True)
    with executor:
        futures = [executor.submit(decode_many, part, pixel_step) for part in slices(items, 4 * workers)]
        return [decoded for future in futures for decoded in future.result()]
