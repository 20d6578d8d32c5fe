"""Peak RSS of `vmem classify` as a process on a large memory, against a bare process holding the same index and
encoder.

    python bench/rss.py [--exemplars 100000] [--memory PATH] [--keep PATH]

Without --memory a synthetic Gaussian-mixture memory of --exemplars x 1280 is built first (bench/app.py's
`mixture`, in a temporary folder, or at --keep PATH to reuse it), with its neighbour table (what `vmem build` leaves).
Rows: a bare onnxruntime + hnswlib + numpy process that loads the same index snapshot and cached ONNX export and
classifies one image (bench/cli.py's BARE); `vmem classify IMG --json`; `vmem classify IMG` (text: the OOD
threshold reads the neighbour table). Each figure is that process's own peak RSS (os.wait4), not the largest child
so far. Target (issue 25): `vmem classify` <= 1.4x the bare process at 100,000 x 1280.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cli import BARE, QUERY, run  # noqa: E402


def peak(command: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS MiB) of one process, measured on that process alone."""
    return run(command)[:2]


def build(path: Path, exemplars: int) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_app", REPO / "bench" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    start = time.perf_counter()
    app.build(path, "mixture", exemplars, "train")
    from vmem_core import VisualMemory

    with VisualMemory.open(path) as memory:  # what `vmem build` ends with: the neighbour table, saved on close
        memory.reliability.table()
    print(f"built {exemplars:,} x 1280 at {path} in {time.perf_counter() - start:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exemplars", type=int, default=100_000)
    parser.add_argument("--memory", type=Path, help="an existing memory (read only: classify never writes)")
    parser.add_argument("--keep", type=Path, help="build the synthetic memory here, or reuse it if it exists")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)  # the child process that builds
    args = parser.parse_args()
    if args.build_into:
        build(args.build_into, args.exemplars)
        return
    from vmem_core.encoders.efficientnet import cache_dir

    with tempfile.TemporaryDirectory() as scratch:
        memory = args.memory or args.keep or Path(scratch) / "rss.vmem"
        if args.memory is None and not (memory / "vmem.json").exists():
            # built by a child: a child's peak RSS starts from this process's at the fork (Linux keeps the high
            # water mark across exec), so a build in this process (2 GB at 100,000) would be every row's peak
            subprocess.run([sys.executable, __file__, "--exemplars", str(args.exemplars), "--build-into",
                            str(memory)], check=True)
        mem = str(memory)
        vmem = [sys.executable, "-m", "vmem_core", "classify", mem, str(QUERY)]
        rows = {"bare onnxruntime + hnswlib + numpy": [sys.executable, "-c", BARE, mem, str(QUERY), str(cache_dir())],
                "vmem classify IMG --json": vmem + ["--json"], "vmem classify IMG (text)": vmem}
        peak(rows["vmem classify IMG --json"])  # the page cache warm for every row
        figures = {name: [peak(command) for _ in range(args.repeats)] for name, command in rows.items()}
        bare = min(rss for _, rss in figures["bare onnxruntime + hnswlib + numpy"])
        for name, runs in figures.items():
            rss = min(r for _, r in runs)
            print(f"{name:<36} peak RSS {rss:6,} MiB ({rss / bare:.2f}x bare), {min(s for s, _ in runs):5.2f} s")
    if args.keep is None and args.memory is None:
        shutil.rmtree(memory, ignore_errors=True)


if __name__ == "__main__":
    main()
