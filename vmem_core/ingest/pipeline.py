"""The bulk build: decoding, encoding and inserting overlapped, so that a build runs at the encoder's speed.

Three stages work at once on a stream of chunks:

    decode   worker threads read, check and decode images and make their thumbnails (PIL and zlib release the GIL),
             at most `prefetch` chunks ahead, so memory stays bounded whatever the collection's size;
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
from typing import Callable, Optional, Sequence

from ..errors import BadImageError
from .datasets import LabelledImage
from .images import load_image, make_thumbnail

BUILD_CHUNK = 256
PREFETCH_CHUNKS = 2
SNAPSHOT_INTERVAL_S = 600.0

Progress = Callable[[int, int], None]


@dataclass
class BuildReport:
    added: int = 0
    skipped_existing: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class _Decoded:
    item: LabelledImage
    image: object = None  # PIL image
    sha256: str = ""
    thumbnail: Optional[bytes] = None
    error: Optional[BadImageError] = None


def _decode(item: LabelledImage) -> _Decoded:
    try:
        loaded = load_image(item.path, item.source)
    except BadImageError as exc:
        return _Decoded(item, error=exc)
    return _Decoded(item, loaded.image, loaded.sha256, make_thumbnail(loaded.image))


def run_build(
    memory,
    todo: Sequence[LabelledImage],
    report: BuildReport,
    total: int,
    progress: Optional[Progress] = None,
    strict: bool = False,
    workers: int = 2,
    chunk_size: int = BUILD_CHUNK,
    prefetch: int = PREFETCH_CHUNKS,
) -> BuildReport:
    """Decode, encode and add `todo` to `memory` in chunks, the three stages overlapped (see the module docstring).

    `report` already counts the items skipped as present; `total` is every item, for progress(done, total).
    Raises the first BadImageError with strict=True, after every chunk before it is committed.
    """
    chunks = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]
    done = total - len(todo)
    last_snapshot = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="vmem-decode") as decoders, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="vmem-insert") as writer:
        pending: deque[list[Future]] = deque()
        inserting: Optional[Future] = None
        next_chunk = 0

        def insert(good: list[_Decoded], embeddings, size: int) -> None:
            nonlocal done, last_snapshot
            if good:
                memory.add_embeddings(embeddings, [d.item.label for d in good], [d.item.source for d in good],
                                      [d.sha256 for d in good], [d.thumbnail for d in good])
                report.added += len(good)
            done += size
            if time.monotonic() - last_snapshot > SNAPSHOT_INTERVAL_S:
                memory.flush()
                last_snapshot = time.monotonic()
            if progress:
                progress(done, total)

        try:
            while next_chunk < len(chunks) or pending:
                while next_chunk < len(chunks) and len(pending) <= prefetch:
                    pending.append([decoders.submit(_decode, item) for item in chunks[next_chunk]])
                    next_chunk += 1
                decoded = [f.result() for f in pending.popleft()]
                good = []
                for d in decoded:
                    if d.error is None:
                        good.append(d)
                    elif strict:
                        raise d.error
                    else:
                        report.rejected.append((str(d.item.path), str(d.error)))
                embeddings = memory.encoder.encode([d.image for d in good]) if good else None
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
