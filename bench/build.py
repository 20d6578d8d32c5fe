"""Bulk build speed against the encoder's own speed, in one process.

    flock /tmp/vmem-bench.lock python bench/build.py [--images 1000] [--batch 32] [--encoder efficientnet-lite0]

Writes --images Fashion-MNIST test images (28x28 PNG, from the Debian dataset) into an ImageFolder, then measures:
  encoder alone   encoder.encode on the already-decoded images (its own preprocessing included), --batch per pass;
  vmem build      VisualMemory.build on the folder: scan, decode + thumbnails (worker threads), encode, and commit
                  (vault, DuckDB through Arrow, hnswlib on every core) overlapped, plus the final index snapshot.
Machine load drifts, so the two alternate for --rounds rounds (encoder, build into a fresh memory, encoder, ...);
each build is compared with the mean of the encoder runs either side of it, and the median of those ratios is the
figure. Target (issue 6): the build within 5% of the encoder's images/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def build_rate(encoder, data: Path, memory_dir: Path, count: int) -> tuple[float, float]:
    """(images per second, images per CPU-second) of one VisualMemory.build of `data` into a new memory."""
    memory = VisualMemory.create(memory_dir, encoder=encoder)
    start, cpu = time.perf_counter(), time.process_time()
    with memory:
        report = memory.exemplars.build(data)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    assert report.added == count, report
    return count / seconds, count / cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="build runs, each between two encoder runs")
    parser.add_argument("--encoder", default="efficientnet-lite0")
    args = parser.parse_args()

    encoder = load_encoder(args.encoder)
    print(f"machine: {os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.1f} at the start); "
          f"{args.images} Fashion-MNIST PNGs; encoder {args.encoder} ({getattr(encoder, 'runtime', '')}), "
          f"batch {args.batch}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_folder(Path(tmp) / "data", args.images)
        images = [Image.open(p).convert("RGB") for p in paths]
        encoder.encode(images[: args.batch], batch_size=args.batch)  # warm-up: first-call allocations
        encoder_runs = [encoder_rate(encoder, images, args.batch)]
        ratios, cpu_ratios = [], []
        for round_number in range(args.rounds):
            build = build_rate(encoder, Path(tmp) / "data", Path(tmp) / f"memory{round_number}", args.images)
            encoder_runs.append(encoder_rate(encoder, images, args.batch))
            around = [encoder_runs[-2], encoder_runs[-1]]
            wall = sum(r[0] for r in around) / 2
            per_cpu = sum(r[1] for r in around) / 2
            ratios.append(build[0] / wall)
            cpu_ratios.append(build[1] / per_cpu)
            print(f"round {round_number + 1}: encoder {around[0][0]:6.1f} / {around[1][0]:6.1f} images/s either side, "
                  f"build {build[0]:6.1f} images/s: {ratios[-1]:.3f} of the encoder ({cpu_ratios[-1]:.3f} per "
                  f"CPU-second; build {build[1]:.1f}, encoder {per_cpu:.1f} images per CPU-second)", flush=True)
    ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu_ratios)
    print(f"build / encoder, median of {args.rounds} rounds: {ratio:.3f} in images/s (target >= 0.95: "
          f"{'met' if ratio >= 0.95 else 'NOT met'}); {cpu_ratio:.3f} in images per CPU-second (the work added per "
          f"image, whatever else the machine runs); load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
