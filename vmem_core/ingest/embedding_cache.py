"""Embeddings of fixed image collections (IDX files such as Fashion-MNIST), encoded once and kept on disk.

An entry is keyed by the encoder's identity and the SHA-256 of the image file, so a different encoder or a changed file
never reuses stale vectors. Entries live in `<cache dir>/embeddings/` ($VMEM_CACHE_DIR or ~/.cache/vmem).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..encoders import Encoder
from ..encoders.efficientnet import cache_dir
from ..errors import DatasetError
from ..storage.atomic import sha256_file

Progress = Callable[[int, int], None]
ENCODE_CHUNK = 1024

# Fashion-MNIST's class indices 0..9, as the sample data names them.
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a uint8 array of its declared shape.

    Raises:
        DatasetError: the file is missing, not IDX, or shorter than its header says.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such IDX file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()!r}, expected 0000 08 nn)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise DatasetError(f"{path}: header declares shape {shape} but holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def cache_path(encoder: Encoder, images_file: Path, limit: Optional[int] = None) -> Path:
    """Where the embeddings of `images_file` under `encoder` are (or would be) cached: of every image, or of the
    first `limit` images (an entry of its own, `-first<limit>`, so a subset read once is not encoded again)."""
    return _entry(_entry_stem(encoder, images_file), limit)


def _entry_stem(encoder: Encoder, images_file: Path) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder.identity)
    return f"{safe}-{sha256_file(images_file)[:24]}"


def _entry(stem: str, limit: Optional[int]) -> Path:
    return cache_dir() / "embeddings" / (f"{stem}.npy" if limit is None else f"{stem}-first{limit}.npy")


def _cached(encoder: Encoder, images_file: Path, limit: Optional[int]) -> Optional[np.ndarray]:
    """The cached rows that cover the request: the whole file's entry, else the smallest entry of a prefix at least
    `limit` long; None when no entry covers it."""
    stem = _entry_stem(encoder, images_file)
    candidates = [_entry(stem, None)]
    if limit is not None:
        pattern = re.compile(re.escape(stem) + r"-first(\d+)\.npy")
        sizes = sorted(int(match.group(1)) for path in candidates[0].parent.glob(f"{stem}-first*.npy")
                       if (match := pattern.fullmatch(path.name)))
        candidates += [_entry(stem, size) for size in sizes if size >= limit]
    for path in candidates:
        if path.exists():
            cached = np.load(path, mmap_mode=None if limit is None else "r")
            if cached.ndim == 2 and cached.shape[1] == encoder.dim:
                return cached if limit is None else np.array(cached[:limit])
    return None


def idx_embeddings(
    encoder: Encoder, images_file: Path, progress: Optional[Progress] = None, limit: Optional[int] = None
) -> np.ndarray:
    """Unit embeddings (n, dim) of every image in an IDX image file, from the cache when present.

    Args:
        encoder: any registered encoder; greyscale images are converted to RGB by it.
        images_file: an IDX file of shape (n, height, width).
        progress: called as progress(done, total) while encoding.
        limit: only the first `limit` images. Served by the whole file's entry when there is one; otherwise encoded
            and cached as an entry of that prefix, which later requests of that many images or fewer reuse.

    Raises:
        DatasetError: the file is not IDX images, or `limit` is below 1.
    """
    from PIL import Image

    images_file = Path(images_file)
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be at least 1 image, got {limit}")
    cached = _cached(encoder, images_file, limit)
    if cached is not None:
        return cached
    pixels = read_idx(images_file)
    if pixels.ndim != 3:
        raise DatasetError(f"{images_file}: expected images of shape (n, height, width), got {pixels.shape}")
    if limit is not None and limit >= len(pixels):
        limit = None  # the whole file: cached as such
    if limit is not None:
        pixels = pixels[:limit]
    target = cache_path(encoder, images_file, limit)
    out = np.empty((len(pixels), encoder.dim), dtype=np.float32)
    for start in range(0, len(pixels), ENCODE_CHUNK):
        chunk = [Image.fromarray(p, mode="L") for p in pixels[start:start + ENCODE_CHUNK]]
        out[start:start + len(chunk)] = encoder.encode(chunk)
        if progress:
            progress(start + len(chunk), len(pixels))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.npy")
    np.save(partial, out)
    partial.replace(target)  # whole or absent: an interrupted run never leaves a short cache entry
    return out
