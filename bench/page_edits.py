"""One page's rerun after repeated edits of each kind, on a copy of a memory: what a curator working down a list
meets (bench/app.py times one edit of each kind per page).

    python bench/page_edits.py --memory PATH [--page curate] [--repeats 5] [--settle 15] [--profile FOLDER]

Per round: a rerun with no edit, then after one delete, one add of a random vector, and one add of a near-copy of an
exemplar (which enters many exemplars' neighbour rows). Prints every time and the median per kind (AppTest's full
rerun: server time). Target (issue 25): <= 0.5 s after any single edit.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", type=Path, required=True, help="a memory to copy (the bench edits the copy)")
    parser.add_argument("--page", default="curate", help="a file in pages/, without .py")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds to wait after opening, for the app's background work (table, map, huge pages)")
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile of each rerun to this folder")
    args = parser.parse_args()
    from streamlit.testing.v1 import AppTest

    if args.profile:  # the script runs in its own thread, which a profiler in this one does not see
        sys.path.insert(0, str(REPO / "bench"))
        from app import PROFILES, profile_script_runs

        profile_script_runs(args.profile)

    from vmem_core.ui import _open_memory

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.vmem"
        shutil.copytree(args.memory, path, ignore=shutil.ignore_patterns("memory.lock", "host.json"))
        os.environ["VMEM_MEMORY"] = str(path)
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=900)
        at.run()
        memory = _open_memory(str(path))
        at.switch_page(f"pages/{args.page}.py")
        at.run()
        time.sleep(args.settle)
        rng = np.random.default_rng(1)
        picks = iter(rng.permutation(memory.table.ids).tolist())
        label = list(memory.table.labels)[0]

        def rerun_ms(name: str) -> float:
            start = time.perf_counter()
            at.run()
            assert not at.exception, at.exception
            elapsed = (time.perf_counter() - start) * 1000
            profile = PROFILES.pop("last", None) if args.profile else None
            if profile is not None:
                slug = name.replace(" ", "-").replace("(", "").replace(")", "")
                (args.profile / f"{slug}-{len(times[name])}.txt").write_text(
                    profile.output_text(unicode=False, color=False))
            return elapsed

        edits = {
            "no edit": lambda: None,
            "delete": lambda: memory.exemplars.delete([next(picks)]),
            "add (random vector)": lambda: memory.exemplars.add_embeddings(
                np.abs(rng.normal(size=(1, memory.dim))), [label]),
            "add (near-copy)": lambda: memory.exemplars.add_embeddings(
                memory.exemplars.embeddings([next(picks)])[1] + 1e-3, [label]),
        }
        times: dict[str, list[float]] = {name: [] for name in edits}
        for _ in range(args.repeats):
            for name, edit in edits.items():
                edit()
                times[name].append(rerun_ms(name))
        print(f"page {args.page}, {len(memory):,} live exemplars, {args.repeats} rounds")
        for name, values in times.items():
            print(f"  after {name:<22} median {statistics.median(values):6.0f} ms   "
                  f"({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
