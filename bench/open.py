"""What opening a memory's hnswlib index costs, step by step, and what the huge pages collapsed after it buy.

    python bench/open.py MEMORY [--repeats 3] [--queries 2000]

For each repeat, in one process: the snapshot's checksums (as the manifest names them, and XXH3 against sha256 on
the same file), the header check, hnswlib's load, the collapse of the loaded block onto huge pages (what the app's
`memory.index.warm_up()` does in the background), and single-query searches (k = 50) before and after the collapse.
Read-only: MEMORY is not changed (nothing is opened through vmem's memory, so no lock is taken either).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vmem_core.backends import hnsw_index  # noqa: E402
from vmem_core.backends.hnsw_file import check_saved_file  # noqa: E402
from vmem_core.backends.hugepages import huge_page_bytes, thp_mode  # noqa: E402
from vmem_core.backends.hnsw_index import AnnIndex, IndexParams  # noqa: E402


def seconds(action) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def per_query_ms(index: AnnIndex, queries: np.ndarray) -> float:
    index.search(queries[:20], 50)
    start = time.perf_counter()
    for row in range(len(queries)):
        index.search(queries[row:row + 1], 50)
    return (time.perf_counter() - start) / len(queries) * 1e3


@contextmanager
def go_on():
    yield True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("memory", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    directory = args.memory / "index"
    manifest = json.loads((directory / "manifest.json").read_text())
    path, dim = directory / manifest["file"], int(manifest["dim"])
    params = IndexParams(**json.loads((args.memory / "vmem.json").read_text()).get("index", {}))
    queries = np.abs(np.random.default_rng(0).normal(size=(args.queries, dim))).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"{path} ({path.stat().st_size / 1e6:,.0f} MB, {manifest['count']:,} elements, checksum "
          f"{manifest.get('checksum', 'sha256')}); transparent huge pages: {thp_mode()}")
    rows: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        figures = {
            "find_snapshot (checksums + header)": seconds(lambda: hnsw_index.find_snapshot(directory, dim))[0],
            "checksums, XXH3-128": seconds(lambda: hnsw_index.chunk_digests(path, algorithm="xxh3_128"))[0],
            "checksums, sha256 (every core)": seconds(lambda: hnsw_index.chunk_digests(path, algorithm="sha256"))[0],
            "link lists walked (not done on open)": seconds(lambda: check_saved_file(path, dim, None))[0],
        }
        load, index = seconds(lambda: AnnIndex.load(path, dim, params))
        figures["hnswlib load (no collapse)"] = load
        figures["search ms/query, 4 KiB pages"] = per_query_ms(index, queries)
        before = huge_page_bytes()
        figures["collapse (app: background)"], done = seconds(lambda: index.collapse_huge_pages(go_on))
        figures["search ms/query, after the collapse"] = per_query_ms(index, queries)
        figures["MB collapsed"] = done / 1e6
        figures["MB more on huge pages"] = (huge_page_bytes() - before) / 1e6
        del index
        for name, value in figures.items():
            rows.setdefault(name, []).append(value)
    for name, values in rows.items():
        unit = "" if name.startswith(("MB", "search")) else " s"
        print(f"{name:<42}{statistics.median(values):10.3f}{unit}  (median of {len(values)}; "
              f"{', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
