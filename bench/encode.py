"""Images per second of an EfficientNet-Lite encoder (the default, lite0, or the larger lite1 and lite2: the compute
side of the compute-vs-memory trade-off): the fast path (onnxruntime) beside the torch reference, in one run.

    python bench/encode.py [--encoder efficientnet-lite0] [--images 512] [--batch 32] [--reference-images 128]

Images are the shipped Fashion-MNIST sample (28x28, upscaled to 224, 240 or 260 px by the encoder's own
preprocessing), decoded beforehand, so the figure is the encoder alone. Both runtimes use every core; each is warmed
up with one batch.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vmem_core import load_encoder  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist" / "memory"


def images_per_second(encoder, images, batch: int) -> float:
    encoder.encode(images[:batch], batch_size=batch)  # warm-up: first-call allocations and graph optimisation
    start = time.perf_counter()
    encoder.encode(images, batch_size=batch)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="efficientnet-lite0",
                        choices=("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--reference-images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    paths = sorted(SAMPLE.glob("*/*.png"))
    images = [Image.open(p).convert("RGB") for p in (paths * (args.images // len(paths) + 1))[: args.images]]
    fast = load_encoder(args.encoder, runtime="onnx")
    reference = load_encoder(args.encoder, runtime="torch")
    fast_rate = images_per_second(fast, images, args.batch)
    reference_rate = images_per_second(reference, images[: args.reference_images], args.batch)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, batch {args.batch}")
    print(f"{args.encoder} onnxruntime (fast path): {fast_rate:7.1f} images/s over {len(images)} images")
    print(f"{args.encoder} torch (reference):        {reference_rate:7.1f} images/s over "
          f"{args.reference_images} images")
    print(f"fast path / reference: {fast_rate / reference_rate:.1f}x; target >= 50 images/s: "
          f"{'met' if fast_rate >= 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
