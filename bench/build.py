"""Bulk build speed against the encoder's own speed, in one process.

    flock /tmp/vmem-bench.lock python bench/build.py [--images 1000] [--batch 32] [--encoder efficientnet-lite0]

Writes --images Fashion-MNIST test images (28x28 PNG, from the Debian dataset) into an ImageFolder, then measures:
  encoder alone   encoder.encode on the already-decoded images (its own preprocessing included), --batch per pass;
  vmem build      VisualMemory.build on the folder: scan, decode + thumbnails (worker threads), encode, and commit
                  (vault, DuckDB through Arrow, hnswlib on every core) overlapped, plus the final index snapshot.
The encoder is timed before and after the build (machine load drifts); the build is compared with their mean.
Target (issue 6): the build within 5% of the encoder's images/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from vmem_core import VisualMemory, load_encoder  # noqa: E402

FASHION_LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
FASHION_TEST_LABELS = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")


def write_folder(root: Path, count: int) -> list[Path]:
    import gzip

    import numpy as np

    with gzip.open(FASHION_TEST, "rb") as f:
        pixels = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    with gzip.open(FASHION_TEST_LABELS, "rb") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)[:count]
    paths = []
    for i, (image, label) in enumerate(zip(pixels, labels)):
        folder = root / FASHION_LABELS[label]
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"{i:05d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def encoder_rate(encoder, images, batch: int) -> tuple[float, float]:
    """(images per second of wall clock, images per CPU-second of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    encoder.encode(images, batch_size=batch)
    return len(images) / (time.perf_counter() - start), len(images) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--encoder", default="efficientnet-lite0")
    args = parser.parse_args()

    encoder = load_encoder(args.encoder)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_folder(Path(tmp) / "data", args.images)
        images = [Image.open(p).convert("RGB") for p in paths]
        encoder.encode(images[: args.batch], batch_size=args.batch)  # warm-up: first-call allocations
        before = encoder_rate(encoder, images, args.batch)
        memory = VisualMemory.create(Path(tmp) / "memory", encoder=encoder)
        start, cpu = time.perf_counter(), time.process_time()
        with memory:
            report = memory.build(Path(tmp) / "data")
        build_seconds, build_cpu = time.perf_counter() - start, time.process_time() - cpu
        after = encoder_rate(encoder, images, args.batch)
    assert report.added == args.images, report
    build_rate = args.images / build_seconds
    encoder_mean = (before[0] + after[0]) / 2
    ratio = build_rate / encoder_mean
    cpu_ratio = (args.images / build_cpu) / ((before[1] + after[1]) / 2)
    print(f"machine: {os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.1f}); {args.images} "
          f"Fashion-MNIST PNGs; encoder {args.encoder} ({getattr(encoder, 'runtime', '')}), batch {args.batch}")
    print(f"encoder alone:  {before[0]:7.1f} images/s before the build, {after[0]:7.1f} after (mean "
          f"{encoder_mean:.1f}); {before[1]:.1f} / {after[1]:.1f} images per CPU-second")
    print(f"vmem build:     {build_rate:7.1f} images/s ({build_seconds:.1f} s for {args.images} images, "
          f"decode + encode + insert + snapshot); {args.images / build_cpu:.1f} images per CPU-second")
    print(f"build / encoder: {ratio:.3f} in images/s (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}); "
          f"{cpu_ratio:.3f} in images per CPU-second (the work added per image, whatever else the machine runs)")


if __name__ == "__main__":
    main()
