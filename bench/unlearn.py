"""Unlearning speed: tombstone (delete), restore and certified purge, beside the paper's 20 ms per deletion.

    python bench/unlearn.py [--exemplars 100000] [--dim 1280] [--repeats 20]

The memory holds clustered synthetic unit vectors (100 clusters, within-cluster spread like the Fashion-MNIST
embeddings' nearest-neighbour distances of 0.1-0.3) with a 28x28 PNG thumbnail each, built through the library's own
add_embeddings. Every figure is measured in this run; the purge is broken down into its steps.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from vmem_core import VisualMemory, register_encoder  # noqa: E402
from vmem_core.encoders import BatchedEncoder  # noqa: E402
from vmem_core.unlearn import purge  # noqa: E402

PAPER_MS = 20.0


def vectors_only_encoder(dim: int):
    class VectorsOnly(BatchedEncoder):
        name = f"bench-vectors-{dim}"
        identity = name

        def encode_batch(self, images):
            raise RuntimeError("this memory holds synthetic vectors only")

    VectorsOnly.dim = dim
    register_encoder(VectorsOnly.name, lambda rest, **kw: VectorsOnly())
    return VectorsOnly()


def build(path: Path, n: int, dim: int) -> VisualMemory:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, dim)).astype(np.float32)
    thumb = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(thumb, format="PNG")
    memory = VisualMemory.create(path, encoder=vectors_only_encoder(dim))
    for start in range(0, n, 10_000):
        count = min(10_000, n - start)
        which = rng.integers(0, 100, count)
        batch = centres[which] + 0.35 * rng.normal(size=(count, dim)).astype(np.float32)
        memory.exemplars.add_embeddings(batch, [f"c{c}" for c in which], thumbnails=[thumb.getvalue()] * count)
    memory.index.flush()
    return memory


def median_ms(samples) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exemplars", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        memory = build(Path(scratch) / "bench.vmem", args.exemplars, args.dim)
        print(f"memory: {args.exemplars:,} exemplars x {args.dim}-d, built in {time.perf_counter() - start:.0f} s, "
              f"{memory.stats()['bytes'] / 1e6:,.0f} MB on disk")
        rng = np.random.default_rng(1)
        ids = rng.choice(args.exemplars, args.repeats, replace=False).tolist()
        deletes, restores = [], []
        for exemplar_id in ids:
            t = time.perf_counter()
            memory.exemplars.delete([exemplar_id])
            deletes.append(time.perf_counter() - t)
            t = time.perf_counter()
            memory.exemplars.restore([exemplar_id])
            restores.append(time.perf_counter() - t)
        print(f"tombstone (delete one):  {median_ms(deletes):8.2f} ms median of {args.repeats}   "
              f"(paper: {PAPER_MS:.0f} ms; target < 5 ms)")
        print(f"restore one:             {median_ms(restores):8.2f} ms median of {args.repeats}")

        target = ids[0]
        steps = {}
        originals = {}
        from vmem_core.backends import hnsw as hnsw_backend_module
        from vmem_core.backends import hnsw_index as index_module
        from vmem_core.storage import store as store_module
        from vmem_core.storage import vault as vault_module

        def timed(owner, name):
            original = getattr(owner, name)
            originals[(owner, name)] = original

            def wrapper(*a, **kw):
                t = time.perf_counter()
                try:
                    return original(*a, **kw)
                finally:
                    steps[name] = steps.get(name, 0.0) + time.perf_counter() - t

            setattr(owner, name, wrapper)

        for owner, name in ((index_module.AnnIndex, "scrub"), (hnsw_backend_module, "patch_snapshot"),
                            (vault_module.Vault, "erase"), (store_module.Store, "rewrite")):
            timed(owner, name)
        t = time.perf_counter()
        certificate = purge(memory, [target])
        total = time.perf_counter() - t
        for (owner, name), original in originals.items():
            setattr(owner, name, original)
        print(f"purge one, physical part: {certificate.purge_seconds * 1000:8.0f} ms   (target < 1,000 ms)")
        print(f"    index scrub {steps['scrub'] * 1000:.0f} ms, snapshot patched in place "
              f"{steps['patch_snapshot'] * 1000:.0f} ms, vault bytes zeroed {steps['erase'] * 1000:.0f} ms, "
              f"database rewritten {steps['rewrite'] * 1000:.0f} ms")
        print(f"purge one, with digests and the three checks: {total:.1f} s; certificate "
              f"{'PASSED' if certificate.passed else 'FAILED'}")
        for check in certificate.checks:
            print(f"    {check.name}: {'passed' if check.passed else 'FAILED'}")
        start = time.perf_counter()
        memory.close()
        print(f"close afterwards (writes a full index snapshot): {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
