"""Encoding and exact search on this machine's device (a GPU where torch sees one), beside numpy and hnswlib.

    python bench/gpu.py [--device auto|cpu|cuda[:N]] [--shapes 1000000x512,1000000x1280,10000000x512]
        [--sizes 20000 --dims 512] [--queries 1,64,1024] [--k 50] [--hnsw-max 200000] [--repeats 5]

One run prints, with the device's name:
- the encoder (EfficientNet-Lite0 as vmem runs it on that device: bf16 autocast + channels_last on CUDA, onnxruntime
  on the CPU): images/s of the network alone on a preprocessed batch, and end to end from decoded PIL images
  (resize, crop, scale, forward, normalise);
- a build from files, storage left out (the build pipeline with a memory that stores nothing): photo-sized JPEGs and
  28x28 PNGs read, decoded (worker processes on CUDA; plain JPEGs by nvJPEG on the GPU), encoded: images/s, and
  as a share of the network alone (issue 14's target: >= 5,000 img/s on an H200);
- for each shape N x D of random unit vectors (clustered, generated on the device), the exact search of
  vmem_core.backends.exact (float16 + float32 re-scoring on CUDA, float32 on the CPU): ms per call and per query for
  each batch of queries; numpy's float32 matmul + argpartition on the same data in the same process
  (bench/search.py's baseline, batches up to --numpy-max-queries) with the ratio; and hnswlib (M 16,
  ef_construction 64, ef 256, this machine's cores) where N <= --hnsw-max, with its recall@k against exact.
Figures are medians of --repeats runs after one warm-up; CUDA timings include the copy of the answers back to the host.

Defaults: on CUDA the shapes of issue 14 (1M x 512, 1M x 1280, 10M x 512); on the CPU 20,000 x 512.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from search import exact_top_k as numpy_top_k  # noqa: E402

from vmem_core.backends.exact import DeviceMatrix  # noqa: E402
from vmem_core.devices import resolve_device  # noqa: E402

CUDA_SHAPES = "1000000x512,1000000x1280,10000000x512"
CPU_SHAPES = "20000x512"


def median_seconds(run, repeats: int, device) -> float:
    run()  # warm-up: kernels chosen, caches filled
    times = []
    for _ in range(repeats):
        if device.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unit_vectors(n: int, dim: int, device, seed: int = 0, clusters: int = 1000) -> torch.Tensor:
    """Clustered unit vectors made on the device in chunks (10M x 512 in seconds on a GPU)."""
    generator = torch.Generator(device=device.torch()).manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator, device=device.torch())
    out = torch.empty(n, dim, device=device.torch())
    for start in range(0, n, 1 << 20):
        stop = min(start + (1 << 20), n)
        which = torch.randint(0, clusters, (stop - start,), generator=generator, device=device.torch())
        chunk = centres[which] + 0.7 * torch.randn(stop - start, dim, generator=generator, device=device.torch())
        out[start:stop] = chunk / chunk.norm(dim=1, keepdim=True)
    return out


def bench_encoder(device, repeats: int) -> None:
    from PIL import Image

    from vmem_core.encoders.efficientnet import EfficientNetLite0Encoder, preprocess

    encoder = EfficientNetLite0Encoder(device=device.name)
    batch = encoder.batch_size
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (batch, 256, 320, 3), dtype=np.uint8)
    images = [Image.fromarray(p) for p in pixels]
    tensor = preprocess(images)
    alone = median_seconds(lambda: encoder.forward(tensor), repeats, device)
    whole = median_seconds(lambda: encoder.encode(images), max(1, repeats // 2), device)
    print(f"encoder efficientnet-lite0 ({encoder.runtime} on {device.name}, batch {batch}): network alone "
          f"{batch / alone:,.0f} img/s; end to end from decoded 320x256 images {batch / whole:,.0f} img/s")
    return batch / alone


class EncodeOnly:
    """What the build pipeline needs of a memory, storing nothing: it times reading, decoding and encoding files."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder

    def add_embeddings(self, embeddings, *rest) -> None:
        pass

    def flush(self) -> None:
        pass


def bench_from_files(device, count: int, network_rate: float) -> None:
    """Images/s of a build from files (vmem_core.ingest.pipeline: decoding workers, plain JPEGs decoded on the
    device, the encoder), storage left out, for photo-sized JPEGs and 28x28 PNGs."""
    import tempfile

    from decode_workers import make_images

    from vmem_core.encoders.efficientnet import EfficientNetLite0Encoder
    from vmem_core.ingest.pipeline import BuildReport, batch_jpeg_device, run_build

    stand_in = EncodeOnly(EfficientNetLite0Encoder(device=device.name))
    jpeg_where = batch_jpeg_device(stand_in.encoder) or "PIL in the workers"
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("jpeg", "png"):
            items = make_images(Path(tmp), count, kind)
            run_build(stand_in, items[:256], BuildReport(), 256, decode_processes=device.is_cuda)  # warm-up
            if device.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            run_build(stand_in, items, BuildReport(), len(items))
            seconds = time.perf_counter() - start
            print(f"build from {count:,} {kind.upper()} files ({'500x375' if kind == 'jpeg' else '28x28'}), storage "
                  f"left out: {count / seconds:,.0f} img/s ({count / seconds / network_rate:.2f} of the network "
                  f"alone); JPEGs decoded by {jpeg_where}", flush=True)


def bench_search(n: int, dim: int, device, args) -> None:
    vectors = unit_vectors(n, dim, device)
    queries = unit_vectors(max(args.queries), dim, device, seed=1).cpu().numpy()
    matrix = DeviceMatrix(vectors, device)
    host = vectors.cpu().numpy() if not device.is_cuda else None
    print(f"\n{n:,} x {dim} ({n * dim * 4 / 1e9:.2f} GB float32), k {args.k}")
    truth = None
    for count in args.queries:
        batch = queries[:count]
        ours = median_seconds(lambda: matrix.top_k(batch, args.k), args.repeats, device)
        line = f"  {count:>5} queries: exact ({device.name}) {ours * 1e3:9.3f} ms, {ours * 1e3 / count:8.4f} ms/query"
        if count <= args.numpy_max_queries:
            if host is None:
                host = vectors.cpu().numpy()
            theirs = median_seconds(lambda: numpy_top_k(host, batch, args.k), max(1, args.repeats // 2), device)
            line += f" | numpy {theirs * 1e3 / count:8.3f} ms/query; exact is {theirs / ours:,.2f}x numpy's speed"
        print(line, flush=True)
        if count == max(args.queries):
            truth = matrix.top_k(batch, args.k)[0]
    if n > args.hnsw_max:
        print(f"  hnswlib: skipped (N > --hnsw-max {args.hnsw_max:,}: its build takes minutes)")
        return
    import hnswlib

    if host is None:
        host = vectors.cpu().numpy()
    threads = os.cpu_count() or 1
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=64)
    start = time.perf_counter()
    index.add_items(host, np.arange(n), num_threads=threads)
    build = time.perf_counter() - start
    index.set_ef(256)
    for count in args.queries:
        batch = queries[:count]
        took = median_seconds(lambda: index.knn_query(batch, k=args.k, num_threads=1 if count == 1 else threads),
                              args.repeats, resolve_device("cpu"))
        ours = median_seconds(lambda: matrix.top_k(batch, args.k), args.repeats, device)
        print(f"  {count:>5} queries: hnswlib ef 256 ({threads} threads) {took * 1e3 / count:8.4f} ms/query; exact "
              f"{device.name} is {took / ours:,.2f}x its speed")
    found = index.knn_query(queries[: len(truth)], k=args.k, num_threads=threads)[0]
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth))
    print(f"  hnswlib build {build:.1f} s on {threads} threads; recall@{args.k} {hits / truth.size:.3f} "
          "(exact: 1.000 by construction)")


def shapes(args, device) -> list[tuple[int, int]]:
    if args.sizes:
        return [(int(n), int(d)) for n in args.sizes.split(",") for d in args.dims.split(",")]
    text = args.shapes or (CUDA_SHAPES if device.is_cuda else CPU_SHAPES)
    try:
        return [(int(n), int(d)) for n, d in (shape.lower().split("x") for shape in text.split(","))]
    except ValueError:
        raise SystemExit(f"--shapes {text!r}: expected NxD[,NxD...], e.g. 1000000x512") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: $VMEM_DEVICE or auto)")
    parser.add_argument("--shapes", default=None, help=f"NxD,... (default: {CUDA_SHAPES} on CUDA, {CPU_SHAPES} on CPU)")
    parser.add_argument("--sizes", default=None, help="N,...: with --dims, instead of --shapes")
    parser.add_argument("--dims", default="512")
    parser.add_argument("--queries", default="1,64,1024", help="batch sizes of queries")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--numpy-max-queries", type=int, default=64, help="largest batch numpy is timed on")
    parser.add_argument("--hnsw-max", type=int, default=200000, help="largest N hnswlib is built for")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-encoder", action="store_true")
    parser.add_argument("--file-images", type=int, default=None,
                        help="images per kind for the build from files (default: 4096 on CUDA, 256 on the CPU; 0: none)")
    args = parser.parse_args()
    args.queries = [int(q) for q in args.queries.split(",")]
    device = resolve_device(args.device)
    print(f"device: {device.name} ({device.description}); torch {torch.__version__}, {torch.get_num_threads()} CPU "
          f"threads, {os.cpu_count()} cores")
    if not args.skip_encoder:
        network_rate = bench_encoder(device, args.repeats)
        file_images = args.file_images if args.file_images is not None else (4096 if device.is_cuda else 256)
        if file_images:
            bench_from_files(device, file_images, network_rate)
    for n, dim in shapes(args, device):
        bench_search(n, dim, device, args)


if __name__ == "__main__":
    main()
