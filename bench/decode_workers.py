"""Decoding for a build: threads of this process (the old way) against worker processes (ingest.decode_workers).

    python bench/decode_workers.py [--count 1000] [--workers N] [--device cpu|cuda]

For 28x28 PNGs (Fashion-MNIST-like) and ~500x375 photo JPEGs, each decoded, thumbnailed and resized + cropped to
EfficientNet-Lite0's 224 px (its pixel step): images/s in threads, in a process pool (its start-up included, and
timed apart; the first pool of a process also starts the fork server), and the ratio of the two in the same run,
so that other load on the machine cancels out. With
--device, also the batched JPEG decode there (ingest.jpeg_batch). Prints `uptime` first: the load to read them by.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vmem_core.encoders.efficientnet import crop_pixels  # noqa: E402
from vmem_core.ingest import decode_workers, jpeg_batch  # noqa: E402
from vmem_core.ingest.datasets import LabelledImage  # noqa: E402


def make_images(folder: Path, count: int, kind: str) -> list[LabelledImage]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        if kind == "png":
            array = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        else:  # photo-like: smooth gradients with some texture, so that the JPEG is ~photo-sized
            y, x = np.mgrid[0:375, 0:500]
            base = np.stack([x * 0.4 + i, y * 0.5, (x + y) * 0.25], axis=2)
            array = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{kind}-{i:05d}.{'png' if kind == 'png' else 'jpg'}"
        Image.fromarray(array).save(path, **({} if kind == "png" else {"quality": 90}))
        items.append(LabelledImage(path, "x", path.name))
    return items


def decode_all(items, workers: int, processes: bool, chunk: int = 256) -> tuple[float, float]:
    """(seconds to start the pool and get its first chunk back, seconds for everything)."""
    started = time.perf_counter()
    executor, _ = decode_workers.open_decoders(len(items), workers, processes=processes)
    first = None
    with executor:
        for start in range(0, len(items), chunk):
            parts = decode_workers.slices(items[start:start + chunk], workers)
            futures = [executor.submit(decode_workers.decode_many, part, crop_pixels) for part in parts]
            [f.result() for f in futures]
            first = first or time.perf_counter() - started
    return first, time.perf_counter() - started


def main() -> None:  # run under `if __name__ == "__main__"`: the workers import this module
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default=None, help="also time the batched JPEG decode on this device")
    args = parser.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("png", "jpeg"):
            items = make_images(Path(tmp), args.count, kind)
            size = sum(item.path.stat().st_size for item in items) / len(items)
            _, threads = decode_all(items, args.workers, processes=False)
            first, processes = decode_all(items, args.workers, processes=True)
            print(f"{kind} ({size / 1024:.0f} KB): threads {len(items) / threads:,.0f} img/s, {args.workers} processes "
                  f"{len(items) / processes:,.0f} img/s (pool start + first chunk {first:.2f} s), "
                  f"processes / threads {threads / processes:.2f}x")
            if kind == "jpeg" and args.device:
                datas = [item.path.read_bytes() for item in items]
                jpeg_batch.decode_and_crop(datas[:8], 224, args.device)  # warm-up (CUDA context, nvJPEG handles)
                started = time.perf_counter()
                for start in range(0, len(datas), 256):
                    out = jpeg_batch.decode_and_crop(datas[start:start + 256], 224, args.device)
                    jpeg_batch.stack_on(args.device, out).cpu()
                seconds = time.perf_counter() - started
                print(f"jpeg batched decode + resize on {args.device}: {len(datas) / seconds:,.0f} img/s "
                      f"({threads / seconds:.2f}x the threads)")


if __name__ == "__main__":
    main()
