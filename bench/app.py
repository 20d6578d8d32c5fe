"""How fast the app answers at 10k exemplars: the first load, switching rule or k, changing page.

    python bench/app.py [--exemplars 10000] [--repeats 5]

The memory holds the real EfficientNet-Lite0 embeddings of the 1,000 shipped Fashion-MNIST exemplars, each repeated
with small Gaussian jitter (sigma 0.01 per dimension, then renormalised) until it reaches --exemplars: real neighbour
structure at the target size. Each figure is the median time of AppTest's full script run for that interaction (the
server-side work of a rerun; the browser adds its rendering on top). Target: under 1 s each.
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
sys.path.insert(0, str(REPO))
from vmem_core import VisualMemory  # noqa: E402
from vmem_core.ingest.images import load_image, make_thumbnail  # noqa: E402


def build(path: Path, size: int) -> None:
    with VisualMemory.create(path) as memory:
        paths = sorted((REPO / "data" / "fashion-mnist" / "memory").glob("*/*.png"))
        loaded = [load_image(p) for p in paths]
        vectors = memory.encoder.encode([item.image for item in loaded])
        labels = [p.parent.name for p in paths]
        thumbs = [make_thumbnail(item.image) for item in loaded]
        rng = np.random.default_rng(0)
        added = 0
        while added < size:
            n = min(len(paths), size - added)
            jitter = vectors[:n] + (0.01 * rng.normal(size=vectors[:n].shape) if added else 0)
            memory.exemplars.add_embeddings(jitter, labels[:n], [f"copy{added}/{p.name}" for p in paths[:n]],
                                  [item.sha256 for item in loaded[:n]], thumbs[:n])
            added += n


def timed(action, repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        action(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exemplars", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.vmem"
        start = time.perf_counter()
        build(path, args.exemplars)
        print(f"memory: {args.exemplars:,} exemplars built in {time.perf_counter() - start:.1f} s")
        os.environ["VMEM_MEMORY"] = str(path)
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
        start = time.perf_counter()
        at.run()
        print(f"first load (opens memory, loads encoder): {(time.perf_counter() - start) * 1000:8.0f} ms")
        rules = ["plurality", "distance", "softmax", "rank"]
        rows = {
            "switch voting rule": lambda i: at.selectbox(key="voting").set_value(rules[i % 4]).run(),
            "change k": lambda i: at.slider(key="k").set_value(5 + (i % 2) * 45).run(),
            "soft pruning on/off": lambda i: at.radio(key="pruning").set_value(["soft", "none"][i % 2]).run(),
        }
        for name, action in rows.items():
            print(f"{name:<42}{timed(action, args.repeats):8.0f} ms (median of {args.repeats})")
        for page in ["memory", "unlearning", "evaluate", "curate", "classify"]:
            first = timed(lambda i: at.switch_page(f"pages/{page}.py").run(), 1)  # fills that page's caches
            ms = timed(lambda i: at.switch_page(f"pages/{page}.py").run(), args.repeats)
            print(f"{'change page to ' + page:<42}{ms:8.0f} ms (median of {args.repeats}; first visit {first:.0f} ms)")
        assert not at.exception, at.exception


if __name__ == "__main__":
    main()
