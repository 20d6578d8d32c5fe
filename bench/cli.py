"""How fast `vmem` commands run as processes on a large memory, against a bare process doing the same work.

    python bench/cli.py MEMORY [--repeats 3] [--purge 1,200]

MEMORY is copied first (the bench deletes and purges in the copy): e.g. one built by bench/app.py's builders or
`vmem build`. Rows: `vmem classify IMG --json` and the text output, fresh and right after a `vmem delete`; a bare
onnxruntime + hnswlib + numpy process classifying the same image from the same index snapshot and cached ONNX export;
`vmem delete ID`; `vmem purge` of 1 and of 200 exemplars (with its certificate, then `vmem purge verify`); the peak
RSS of each process (its own, os.wait4). A memory without a neighbour table gets one first, as `vmem build` leaves it.
Modules are byte-compiled once into a scratch cache (PYTHONPYCACHEPREFIX), as an installed package is: with
PYTHONDONTWRITEBYTECODE set, every `vmem` process would compile ~80 modules again (~0.4 s) and the bare one none.
Targets (issue 25, 2 cores, real 60,000): text within 1.5x of --json, --json within 2.5x of the
bare process, delete <= 1 s, purge 200 <= 15 s and 1 <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUERY = sorted((REPO / "data" / "fashion-mnist" / "queries").glob("*/*.png"))[0] if (
    REPO / "data" / "fashion-mnist" / "queries").is_dir() else sorted((REPO / "data" / "fashion-mnist").rglob("*.png"))[0]

BARE = r"""
import glob, json, sys, time
import hnswlib, numpy as np, onnxruntime as ort
from PIL import Image
memory, image = sys.argv[1], sys.argv[2]
manifest = json.load(open(f"{memory}/index/manifest.json"))
index = hnswlib.Index(space="ip", dim=1280)
index.load_index(f"{memory}/index/{manifest['file']}")
index.set_ef(128)
export = sorted(glob.glob(sys.argv[3] + "/efficientnet-lite0-features-*.onnx"))[-1]
options = ort.SessionOptions()
session = ort.InferenceSession(export, options, providers=["CPUExecutionProvider"])
picture = Image.open(image).convert("RGB")
scale = 224 / min(picture.size)
picture = picture.resize((max(224, round(picture.width * scale)), max(224, round(picture.height * scale))),
                         Image.BICUBIC)
left, top = (picture.width - 224) // 2, (picture.height - 224) // 2
pixels = np.asarray(picture.crop((left, top, left + 224, top + 224)), dtype=np.float32)
batch = ((pixels - 127.0) / 128.0).transpose(2, 0, 1)[None]
features = session.run(["features"], {"images": batch})[0]
features /= np.linalg.norm(features, axis=1, keepdims=True)
found, distances = index.knn_query(features, k=50)
votes = np.bincount(found[0].astype(np.int64) % 10, weights=1.0 / (np.arange(50) + 2), minlength=10)
print(json.dumps({"prediction": int(votes.argmax())}))
"""


ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPATH": str(REPO),
       "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "vmem-bench-pycache")}


def run(command: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS MiB of this process alone, stdout) of one process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=REPO, env=ENV)
        _, status, usage = os.wait4(child.pid, 0)  # the rusage of this child, not the largest one so far
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({child.returncode}): {err.read()[-2000:]}")
        return seconds, usage.ru_maxrss // 1024, out.read()


def vmem(*args: str) -> list[str]:
    return [sys.executable, "-m", "vmem_core", *args]


def median_run(command: list[str], repeats: int) -> tuple[float, int]:
    """(median seconds, largest peak RSS MiB) over `repeats` runs."""
    runs = [run(command)[:2] for _ in range(repeats)]
    return statistics.median(s for s, _ in runs), max(r for _, r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("memory", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--purge", default="1,200", help="comma-separated purge sizes")
    args = parser.parse_args()
    from vmem_core.encoders.efficientnet import cache_dir

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.vmem"
        shutil.copytree(args.memory, path, ignore=shutil.ignore_patterns("memory.lock", "host.json"))
        os.sync()  # the copy's writeback (700 MB at 60,000) is the bench's own doing: not timed with the first rows
        mem = str(path)
        if not (path / "neighbours" / "table.npz").exists():
            from vmem_core import VisualMemory

            start = time.perf_counter()
            with VisualMemory.open(mem) as memory:  # what `vmem build` ends with
                memory.reliability.table()
            print(f"neighbour table built first (the memory had none) {time.perf_counter() - start:6.1f} s")
        run(vmem("classify", mem, str(QUERY), "--json"))  # warms the page cache and the bytecode cache
        (bare, bare_rss), (as_json, json_rss), (text, text_rss) = (median_run(command, args.repeats) for command in (
            [sys.executable, "-c", BARE, mem, str(QUERY), str(cache_dir())],
            vmem("classify", mem, str(QUERY), "--json"), vmem("classify", mem, str(QUERY))))
        print(f"bare onnxruntime + hnswlib + numpy process   {bare:6.2f} s, peak RSS {bare_rss:,} MiB")
        print(f"vmem classify IMG --json                     {as_json:6.2f} s ({as_json / bare:.2f}x bare), "
              f"peak RSS {json_rss:,} MiB ({json_rss / bare_rss:.2f}x)")
        print(f"vmem classify IMG (text)                     {text:6.2f} s ({text / as_json:.2f}x --json), "
              f"peak RSS {text_rss:,} MiB ({text_rss / bare_rss:.2f}x bare)")
        ids = json.loads(run(vmem("classify", mem, str(QUERY), "--json"))[2])
        first = ids[0]["neighbors"] if isinstance(ids, list) else ids["results"][0]["neighbors"]
        victims = [n["id"] for n in first]
        deletes = []
        for victim in victims[:args.repeats]:
            deletes.append(run(vmem("delete", mem, str(victim)))[0])
            after = run(vmem("classify", mem, str(QUERY)))[0]
            after_json = run(vmem("classify", mem, str(QUERY), "--json"))[0]
            print(f"vmem classify after a delete: text {after:6.2f} s, --json {after_json:6.2f} s "
                  f"({after / after_json:.2f}x)")
        print(f"vmem delete ID                               {statistics.median(deletes):6.2f} s")
        for size in [int(s) for s in args.purge.split(",") if s]:
            live = json.loads(run(vmem("stats", mem, "--json"))[2])
            del live
            from vmem_core import VisualMemory

            with VisualMemory.open(mem, read_only=True) as memory:
                chosen = [int(i) for i in memory.table.ids[:size]]
            certificate = Path(scratch) / f"purge-{size}.json"
            seconds = run(vmem("purge", mem, *map(str, chosen), "--live", "--certificate", str(certificate)))[0]
            verify = run(vmem("purge", "verify", str(certificate), mem))[0]
            print(f"vmem purge of {size:<5} exemplars                 {seconds:6.2f} s (verify {verify:.2f} s)")


if __name__ == "__main__":
    main()
