"""Search speed at scale: hnswlib against exact top-k by matrix multiplication, on embedding-like unit vectors.

    flock /tmp/vmem-bench.lock python bench/search.py [--sizes 10000,100000,1000000] [--dims 512,1280]
        [--M 24] [--ef-construction 64] [--ef 50,64,...] [--passes 3] [--threads 2] [--queries 1000] [--k 50]

Data: unit vectors from bench/embedding_model.py, a two-level Gaussian mixture in the principal basis of the default
encoder's Fashion-MNIST embeddings, fitted so that its neighbour-distance profile (1st/10th/50th nearest neighbour)
matches theirs; both profiles are printed. Queries are fresh draws from the same clusters (not in the collection).

Per size and dimension, all in this process: the exact baseline (numpy float32 matmul + argpartition: ms per single
query, batched queries per second), the hnswlib build (M, ef_construction, `--threads` threads: seconds, memory
allocated (malloc), file size), and for each ef the recall@k against exact, ms per single query (one thread) and batched
queries per second (`--threads` threads). The operating point is the smallest ef with recall >= --target-recall,
quoted as a speed-up over exact search. Targets (issue 6): at 1M x 512, <= 2 ms per query at recall@50 >= 0.95;
1M build < 300 s on both cores.

1M x 1280 float32 is 5.1 GB of vectors plus a 5.3 GB index: pass it explicitly (--sizes 1000000 --dims 1280) on a
machine with that much memory to spare; the default run skips it (see --skip).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import hnswlib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from embedding_model import model_for  # noqa: E402

from vmem_core.backends.hugepages import huge_page_bytes, huge_pages_for_new_mappings, thp_mode  # noqa: E402


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def allocated_bytes() -> int:
    """Bytes malloc has handed out (glibc mallinfo2): unlike the resident set, not lowered by the allocator reusing
    pages that numpy freed, so the growth across the build is what hnswlib holds."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int, batch: int = 64) -> np.ndarray:
    """Ids of the k largest inner products of each query, nearest first (numpy matmul + argpartition)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch):
        sims = queries[start:start + batch] @ data.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out[start:start + batch] = np.take_along_axis(part, order, axis=1)
    return out


def per_query_ms(search, queries: np.ndarray) -> tuple[float, float]:
    """(wall-clock ms per query, CPU ms per query of the whole process): on a shared machine the CPU time is what a
    query costs, the wall time also what it waited for a core."""
    search(queries[:1])  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for q in queries:
        search(q[None, :])
    return (time.perf_counter() - start) * 1000 / len(queries), (time.process_time() - cpu) * 1000 / len(queries)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f, t, assume_unique=True)) for f, t in zip(found, truth))
    return hits / truth.size


def build_index(data: np.ndarray, args, huge: bool):
    """Build the hnswlib index (with or without huge pages), measure it, save and reload it; (index, figures)."""
    n, dim = data.shape
    index = hnswlib.Index(space="ip", dim=dim)
    before = allocated_bytes()
    huge_before = huge_page_bytes()
    started, cpu = time.perf_counter(), time.process_time()
    with huge_pages_for_new_mappings() if huge else contextlib.nullcontext():  # as vmem_core.backends.hnsw_index.AnnIndex does
        index.init_index(max_elements=n, M=args.M, ef_construction=args.ef_construction)
    index.add_items(data, np.arange(n), num_threads=args.threads)
    build_s, build_cpu = time.perf_counter() - started, time.process_time() - cpu
    index_ram = allocated_bytes() - before
    huge_share = (huge_page_bytes() - huge_before) / max(index_ram, 1)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = os.path.join(tmp, "index.hnsw")
        index.save_index(path)
        file_bytes = os.path.getsize(path)
        # opening a memory loads its index: with huge pages the load also collapses the pages it touched
        reloaded = hnswlib.Index(space="ip", dim=dim)
        started = time.perf_counter()
        with huge_pages_for_new_mappings(collapse=huge) as advice:
            reloaded.load_index(path)
        load_s = time.perf_counter() - started
        del reloaded
    print(f"hnswlib M={args.M} ef_construction={args.ef_construction}, {'huge' if huge else '4 KiB'} pages: build "
          f"{build_s:7.1f} s on {args.threads} threads ({n / build_s:,.0f} vectors/s; {build_cpu:.0f} CPU-s, i.e. "
          f"{build_cpu / args.threads:.0f} s on {args.threads} idle cores); memory +{index_ram / 1e6:,.0f} MB "
          f"({index_ram / n:,.0f} B/vector); file {file_bytes / 1e6:,.0f} MB ({file_bytes / n:,.0f} B/vector); "
          f"{min(huge_share, 1):.0%} of it on huge pages; reloaded from the file in {load_s:.1f} s"
          f"{f' ({advice[0].collapsed / 1e6:,.0f} MB collapsed onto huge pages)' if huge else ''}", flush=True)
    return index, {"build_s": build_s, "build_cpu": build_cpu}


def run(n: int, dim: int, model, args) -> dict:
    k = args.k
    started = time.perf_counter()
    data = model.sample(n, seed=0)
    queries = model.sample(args.queries, seed=1, clusters=max(1, n // model.cluster_size))
    print(f"\n=== N = {n:,} x d = {dim} (generated in {time.perf_counter() - started:.1f} s; "
          f"{data.nbytes / 1e9:.2f} GB of float32 vectors) ===", flush=True)

    exact_single, exact_cpu = per_query_ms(lambda q: exact_top_k(data, q, k), queries[: args.exact_single])
    started = time.perf_counter()
    truth = exact_top_k(data, queries, k)
    exact_qps = len(queries) / (time.perf_counter() - started)
    print(f"exact numpy matmul: {exact_single:8.2f} ms/query single ({exact_cpu:.2f} ms CPU on all cores), "
          f"{exact_qps:8.1f} queries/s batched (64/batch)")

    variants = {"huge pages": True, "4 KiB pages": False}
    if not args.compare_huge_pages:
        variants = {name: huge for name, huge in variants.items() if huge == args.huge_pages}
    built = {name: build_index(data, args, huge) for name, huge in variants.items()}
    efs = [ef for ef in args.ef if ef >= k]
    timings = {(name, ef): [] for name in built for ef in efs}
    # each pass sweeps every ef (of every variant) in turn, so a slow spell of the shared machine lands on all of them
    for _ in range(args.passes):
        for name, (index, _) in built.items():
            for ef in efs:
                index.set_ef(ef)
                timings[name, ef].append(
                    per_query_ms(lambda q: index.knn_query(q, k=k, num_threads=1), queries[: args.single]))
    curves = {}
    for name, (index, _) in built.items():
        print(f"{name}: {'ef':>4} {'recall@' + str(k):>10} {'ms/query':>9} {'CPU ms/q':>9} {'x faster':>9} "
              f"{'QPS batched':>12}   (ms/query: median of {args.passes} passes of {args.single} single queries)")
        curve = curves[name] = []
        for ef in efs:
            index.set_ef(ef)
            ms = statistics.median(t[0] for t in timings[name, ef])
            ms_cpu = statistics.median(t[1] for t in timings[name, ef])
            started = time.perf_counter()
            found, _ = index.knn_query(queries, k=k, num_threads=args.threads)
            qps = len(queries) / (time.perf_counter() - started)
            r = recall(found, truth)
            curve.append((ef, r, ms, qps, ms_cpu))
            print(f"{'':>{len(name) + 2}}{ef:>4} {r:>10.4f} {ms:>9.3f} {ms_cpu:>9.3f} {exact_single / ms:>8.0f}x "
                  f"{qps:>12.0f}   passes: {' '.join(f'{t[0]:.2f}' for t in timings[name, ef])}", flush=True)
    if len(built) == 2:
        print("huge pages vs 4 KiB pages, same process: build "
              f"{built['4 KiB pages'][1]['build_s'] / built['huge pages'][1]['build_s']:.2f}x faster; per ef, single "
              "query " + ", ".join(f"ef {a[0]}: {b[2] / a[2]:.2f}x" for a, b in zip(curves["huge pages"],
                                                                                curves["4 KiB pages"])))
    name = next(iter(built))
    curve, stats = curves[name], built[name][1]
    build_s, build_cpu = stats["build_s"], stats["build_cpu"]
    good = [c for c in curve if c[1] >= args.target_recall]
    if good:
        ef, r, ms, qps, ms_cpu = good[0]
        print(f"operating point ({name}): ef={ef}, recall@{k} {r:.3f}, {ms:.2f} ms/query ({ms_cpu:.2f} ms CPU) = "
              f"1/{exact_single / ms:.0f} of exact ({exact_single:.1f} ms), {qps / exact_qps:.0f}x exact's batched QPS")
    else:
        print(f"no ef reached recall@{k} >= {args.target_recall}")
    return {"n": n, "dim": dim, "build_s": build_s, "build_cpu": build_cpu, "exact_ms": exact_single,
            "point": good[0] if good else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=ints, default=[512, 1280])
    parser.add_argument("--skip", default="1000000x1280",
                        help="size x dim pairs not to run (comma-separated; '' runs all); default: 1M x 1280")
    parser.add_argument("--M", type=int, default=24)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef", type=ints, default=[50, 64, 96, 128, 192, 224, 256, 288, 320, 384, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall and batched QPS")
    parser.add_argument("--single", type=int, default=300, help="queries timed one by one (hnswlib), per pass")
    parser.add_argument("--passes", type=int, default=3, help="sweeps over the ef values; each ef's median is shown")
    parser.add_argument("--exact-single", type=int, default=20, help="queries timed one by one (exact)")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--tmp", default=None, help="where to write the index file to measure its size")
    parser.add_argument("--no-huge-pages", dest="huge_pages", action="store_false",
                        help="leave hnswlib's memory on 4 KiB pages (the baseline vmem_core.backends.hugepages improves on)")
    parser.add_argument("--compare-huge-pages", action="store_true",
                        help="build the index twice, with and without huge pages, and time both in the same passes")
    args = parser.parse_args()
    skip = {tuple(int(x) for x in pair.split("x")) for pair in args.skip.split(",") if pair}

    print(f"machine: {os.cpu_count()} cores, shared with other work (load average at start "
          f"{os.getloadavg()[0]:.1f}); numpy {np.__version__}; k={args.k}, {args.queries} queries; transparent huge "
          f"pages: kernel mode {thp_mode()}, {'asked for' if args.huge_pages else 'not asked for (--no-huge-pages)'}")
    results = []
    for dim in args.dims:
        model, real, synthetic = model_for(dim)
        print(f"\nd = {dim}: generator fitted to the Fashion-MNIST embeddings (efficientnet-lite0"
              f"{'' if dim == 1280 else ', randomly projected to ' + str(dim) + '-d'}): clusters of "
              f"{model.cluster_size}, between-cluster share {model.between}, tightness spread {model.spread}")
        print("  distance to r-th neighbour at N=2000 (10% / median / 90%):")
        for r in real:
            print(f"    r={r:<3} real {' / '.join(f'{x:.3f}' for x in real[r])}   "
                  f"synthetic {' / '.join(f'{x:.3f}' for x in synthetic[r])}")
        for n in args.sizes:
            if (n, dim) in skip:
                print(f"\n=== N = {n:,} x d = {dim}: skipped (--skip) ===")
                continue
            results.append(run(n, dim, model, args))

    print(f"\nsummary ({os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}; ms/query "
          f"single-threaded; build on {args.threads} threads):")
    for res in results:
        point = res["point"]
        text = (f"ef={point[0]} recall {point[1]:.3f} {point[2]:.2f} ms/query ({point[4]:.2f} CPU) vs exact "
                f"{res['exact_ms']:.1f} ms (1/{res['exact_ms'] / point[2]:.0f})" if point else "target recall not reached")
        print(f"  {res['n']:>9,} x {res['dim']:<5} build {res['build_s']:7.1f} s ({res['build_cpu']:.0f} CPU-s)   {text}")
        if res["n"] == 1_000_000 and res["dim"] == 512:
            met_latency = bool(point) and point[2] <= 2.0
            print(f"  target 1M x 512 <= 2 ms at recall@50 >= 0.95: {'met' if met_latency else 'NOT met'} (CPU ms: "
                  f"{'met' if point and point[4] <= 2.0 else 'NOT met'}); build < 300 s: "
                  f"{'met' if res['build_s'] < 300 else 'NOT met'} (CPU-s / threads: "
                  f"{'met' if res['build_cpu'] / args.threads < 300 else 'NOT met'})")


if __name__ == "__main__":
    main()
