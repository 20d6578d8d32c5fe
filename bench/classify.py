"""End-to-end latency of classifying one uploaded image at 100k exemplars: decode + encode + search + vote.

    flock /tmp/vmem-bench.lock python bench/classify.py [--exemplars 100000] [--repeats 30] [--k 50]

The memory uses the default encoder (efficientnet-lite0, 1280-d) and the default index parameters; it is filled
quickly through add_embeddings with vectors from bench/embedding_model.py (fitted to the encoder's Fashion-MNIST
embeddings; see bench/search.py), labelled by cluster into 10 classes. Queries are real uploads: the bytes of the
JPEG photos in data/ood and of Fashion-MNIST PNGs, classified one at a time with memory.classify (rank voting, k
neighbours). Each step is also timed on its own; medians over --repeats uploads. Target (issue 6): < 100 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
from embedding_model import model_for  # noqa: E402
from vmem_core import VisualMemory, load_encoder  # noqa: E402
from vmem_core.images import load_image  # noqa: E402


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exemplars", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--k", type=int, default=50)
    args = parser.parse_args()

    encoder = load_encoder("efficientnet-lite0")
    model, _, _ = model_for(encoder.dim)
    uploads = [p.read_bytes() for p in sorted((REPO / "data" / "ood").glob("*.jpg"))]
    uploads += [p.read_bytes() for p in sorted((REPO / "data" / "fashion-mnist" / "queries").glob("*/*.png"))[::20]]
    uploads = (uploads * (args.repeats // len(uploads) + 1))[: args.repeats]

    with tempfile.TemporaryDirectory() as tmp:
        memory = VisualMemory.create(Path(tmp) / "memory", encoder=encoder)
        start = time.perf_counter()
        vectors, clusters = model.sample(args.exemplars, seed=0, labels=True)
        for begin in range(0, args.exemplars, 10_000):
            part = slice(begin, begin + 10_000)
            memory.add_embeddings(vectors[part], [f"class-{c % 10}" for c in clusters[part]])
        fill_s = time.perf_counter() - start
        print(f"machine: {os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.1f}); memory of "
              f"{len(memory):,} exemplars x {encoder.dim}-d filled in {fill_s:.0f} s (index M={memory.index_params.M}"
              f", ef_construction={memory.index_params.ef_construction}, ef={memory.index_params.ef_search})")

        memory.classify([uploads[0]], k=args.k)  # warm-up: first-call allocations in onnxruntime and hnswlib
        steps = {"decode": [], "encode": [], "search": [], "vote": [], "end to end": []}
        for data in uploads:
            t0 = time.perf_counter()
            image = load_image(data).image
            t1 = time.perf_counter()
            embedding = encoder.encode([image])
            t2 = time.perf_counter()
            ids, distances = memory.neighbors(embedding, args.k)
            t3 = time.perf_counter()
            memory.vote(ids, distances)
            t4 = time.perf_counter()
            steps["decode"].append(t1 - t0)
            steps["encode"].append(t2 - t1)
            steps["search"].append(t3 - t2)
            steps["vote"].append(t4 - t3)
            start = time.perf_counter()
            result = memory.classify([data], k=args.k)[0]
            steps["end to end"].append(time.perf_counter() - start)
            assert len(result.neighbors) == args.k
        memory.close()

    print(f"one upload at a time, median of {args.repeats} (JPEG photos 256 px and Fashion-MNIST PNGs), k={args.k}:")
    for name, samples in steps.items():
        print(f"  {name:<11} {median_ms(samples):8.2f} ms   (90th percentile "
              f"{np.quantile(samples, 0.9) * 1000:.2f} ms)")
    total = median_ms(steps["end to end"])
    print(f"memory.classify end to end: {total:.1f} ms (target < 100 ms: {'met' if total < 100 else 'NOT met'})")


if __name__ == "__main__":
    main()
