"""How fast the app answers on a memory of the size users bring: every page's first visit, revisit and visit after an
edit, the first load and the first soft pruning, and one classification against a bare hnswlib + numpy vote.

    python bench/app.py [--data fashion-mnist|mixture|jitter] [--exemplars 60000] [--repeats 3] [--memory PATH]
                        [--map-first] [--profile FOLDER]

--data fashion-mnist (the default) holds the real EfficientNet-Lite0 embeddings of Fashion-MNIST's training images
(the first --exemplars of them; the test split with --split t10k), read through the shared embedding cache
(`vmem_core.ingest.embedding_cache.idx_embeddings`; encoded there first if not cached, which takes long on a CPU).
--data mixture is a synthetic Gaussian mixture of the same dimension (10 classes, overlapping); --data jitter is the
old memory: the 1,000 shipped exemplars repeated with small Gaussian jitter, whose neighbourhoods are far cheaper to
search than real ones (2.3 s against 33.1 s for the leave-one-out pass at 60,000). --memory PATH uses an existing
memory (copied first: the bench edits it).

Each figure is AppTest's full script run (the server-side work of a rerun; the browser adds its rendering).
Targets (issue 25, 2 cores, real 60,000): first load <= 5 s; any page after one delete, relabel or add <= 0.5 s;
first soft pruning <= 1 s; Map first visit <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from vmem_core import VisualMemory  # noqa: E402

PAGES = ["classify", "memory", "map", "unlearning", "evaluate", "curate"]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist(exemplars: int, split: str, encoder) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(embeddings, labels, 28x28 pixels) of the first `exemplars` images of a Fashion-MNIST split."""
    from vmem_core.ingest.embedding_cache import FASHION_MNIST_CLASSES, idx_embeddings, read_idx

    prefix = "train" if split == "train" else "t10k"
    images = FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz"
    labels = read_idx(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz")[:exemplars]
    vectors = idx_embeddings(encoder, images, limit=exemplars)
    return vectors, [FASHION_MNIST_CLASSES[i] for i in labels], read_idx(images)[:exemplars]


def mixture(exemplars: int, dim: int) -> tuple[np.ndarray, list[str], None]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, dim)).astype(np.float32)
    classes = rng.integers(10, size=exemplars)
    vectors = np.abs(centres[classes] + 1.2 * rng.normal(size=(exemplars, dim)).astype(np.float32))
    return vectors, [f"class{c}" for c in classes], None


def jitter(exemplars: int, encoder) -> tuple[np.ndarray, list[str], None]:
    from vmem_core.ingest.images import load_image

    paths = sorted((REPO / "data" / "fashion-mnist" / "memory").glob("*/*.png"))
    vectors = encoder.encode([load_image(p).image for p in paths])
    rng = np.random.default_rng(0)
    index = np.arange(exemplars) % len(paths)
    noise = 0.01 * rng.normal(size=(exemplars, vectors.shape[1])) * (np.arange(exemplars) >= len(paths))[:, None]
    return vectors[index] + noise, [paths[i].parent.name for i in index], None


def build(path: Path, data: str, exemplars: int, split: str) -> None:
    from PIL import Image

    from vmem_core.ingest.images import make_thumbnail

    with VisualMemory.create(path) as memory:
        if data == "fashion-mnist":
            vectors, labels, pixels = fashion_mnist(exemplars, split, memory.encoder)
        elif data == "mixture":
            vectors, labels, pixels = mixture(exemplars, memory.dim)
        else:
            vectors, labels, pixels = jitter(exemplars, memory.encoder)
        for start in range(0, len(vectors), 5000):
            stop = min(start + 5000, len(vectors))
            thumbs = None if pixels is None else [make_thumbnail(Image.fromarray(p)) for p in pixels[start:stop]]
            memory.exemplars.add_embeddings(vectors[start:stop], labels[start:stop],
                                  [f"{data}/{i}" for i in range(start, stop)], None, thumbs)


PROFILES: dict = {}  # --profile: where to write each run's profile, and the run's name


def run_ms(at, name: str = "") -> float:
    start = time.perf_counter()
    at.run()
    assert not at.exception, at.exception
    elapsed = (time.perf_counter() - start) * 1000
    profile = PROFILES.pop("last", None)
    if profile is not None and name:
        folder = PROFILES["folder"]
        (folder / f"{name.replace(' ', '-')}.txt").write_text(profile.output_text(unicode=False, color=False))
    return elapsed


def profile_script_runs(folder: Path) -> None:
    """Profile every AppTest run with pyinstrument (pip install pyinstrument) where it runs: in the script's thread,
    which a profiler started in the main thread does not see."""
    from pyinstrument import Profiler
    from streamlit.testing.v1 import local_script_runner

    folder.mkdir(parents=True, exist_ok=True)
    PROFILES["folder"] = folder
    run_thread = local_script_runner.LocalScriptRunner._run_script_thread

    def profiled(self) -> None:
        profiler = Profiler(interval=0.002)
        profiler.start()
        try:
            run_thread(self)
        finally:
            profiler.stop()
            PROFILES["last"] = profiler

    local_script_runner.LocalScriptRunner._run_script_thread = profiled


def bare_vote_ratio(memory, repeats: int) -> str:
    """One query classified through the library against hnswlib's search of the same index plus a numpy vote."""
    from vmem_core.voting import DEFAULT_K

    ids, vectors = memory.exemplars.embeddings(memory.table.ids[:64])
    index = memory.index.backend.index._index  # the same graph, searched bare
    classes = memory.table.class_indices(np.arange(int(memory.table.ids.max()) + 1))

    def bare(i):
        found, distances = index.knn_query(vectors[i % 64:i % 64 + 1], k=DEFAULT_K, num_threads=1)
        votes = np.bincount(classes[found[0].astype(np.int64)], weights=1.0 / (np.arange(DEFAULT_K) + 2),
                            minlength=len(list(memory.table.labels)))
        return int(votes.argmax())

    library = statistics.median(_times(lambda i: memory.search.classify_embeddings(vectors[i % 64]), repeats * 20))
    plain = statistics.median(_times(bare, repeats * 20))
    return f"{library:.2f} ms vs bare hnswlib + numpy vote {plain:.2f} ms: {library / plain:.2f}x"


def _times(action, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        start = time.perf_counter()
        action(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["fashion-mnist", "mixture", "jitter"], default="fashion-mnist")
    parser.add_argument("--split", choices=["train", "t10k"], default="train")
    parser.add_argument("--exemplars", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", type=Path, help="an existing memory to copy and use instead of building one")
    parser.add_argument("--map-first", action="store_true",
                        help="visit the Map right after the first load, before any other page (the map is fitted in "
                             "the background from the open: this is the visit that waits longest for it)")
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile of every run into this folder")
    args = parser.parse_args()
    if args.profile:
        profile_script_runs(args.profile)
    from streamlit.testing.v1 import AppTest

    from vmem_core.ui import _open_memory

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.vmem"
        start = time.perf_counter()
        if args.memory:
            shutil.copytree(args.memory, path, ignore=shutil.ignore_patterns("memory.lock", "host.json"))
            print(f"memory: copy of {args.memory} in {time.perf_counter() - start:.1f} s")
        else:
            build(path, args.data, args.exemplars, args.split)
            print(f"memory: {args.exemplars:,} exemplars ({args.data}) built in {time.perf_counter() - start:.1f} s")
        os.environ["VMEM_MEMORY"] = str(path)
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=900)
        print(f"{'first load (Classify; opens the memory)':<46}{run_ms(at, 'first load'):8.0f} ms")
        memory = _open_memory(str(path))
        if args.map_first:
            at.switch_page("pages/map.py")
            print(f"{'page map, right after the first load':<46}{run_ms(at, 'map right after open'):8.0f} ms")
            at.switch_page("pages/classify.py")
            run_ms(at)
        print(f"{'   (memory: ' + str(len(memory)) + ' live exemplars)':<46}")
        at.radio(key="pruning").set_value("soft")
        print(f"{'first soft pruning':<46}{run_ms(at, 'first soft pruning'):8.0f} ms")
        at.radio(key="pruning").set_value("none")
        run_ms(at)
        for page in PAGES:
            at.switch_page(f"pages/{page}.py")
            first = run_ms(at, f"{page} first visit")
            again = statistics.median(run_ms(at, f"{page} revisit") for _ in range(args.repeats))
            print(f"{'page ' + page:<46}{first:8.0f} ms first visit, {again:6.0f} ms revisit")
        rng = np.random.default_rng(1)
        live = memory.table.ids
        picks = iter(rng.permutation(live).tolist())  # a different exemplar for every edit
        edits = {
            "delete": lambda: memory.exemplars.delete([next(picks)]),
            "relabel": lambda: memory.exemplars.relabel([next(picks)], list(memory.table.labels)[0]),
            "add": lambda: memory.exemplars.add_embeddings(np.abs(rng.normal(size=(1, memory.dim))), [list(memory.table.labels)[1]]),
        }
        for name, edit in edits.items():
            for page in PAGES:
                edit()
                at.switch_page(f"pages/{page}.py")
                print(f"{'page ' + page + ' after one ' + name:<46}{run_ms(at, f'{page} after {name}'):8.0f} ms")
        print(f"{'one query, k=50, classify_embeddings':<46}{bare_vote_ratio(memory, args.repeats)}")


if __name__ == "__main__":
    main()
