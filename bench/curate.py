"""How well Curate's ranking finds mislabelled exemplars: labels flipped at random at 5% and 10%, precision and recall
of the first N suggestions, beside simpler scores (v alone, the disagreement of its own neighbours alone).

    python bench/curate.py [--memory sample.vmem] [--top 50 100] [--seeds 5] [--top-n 10]

Default memory: the shipped sample (1,000 Fashion-MNIST exemplars, efficientnet-lite0; built on first use). The
neighbour graph is searched once; each flip only changes labels on it, as `check_ranking` does in the app.
../shared/RESEARCH.md has the same measurement on Fashion-MNIST's 60,000 (precision@100 0.97 for the combined score).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from vmem_core import VisualMemory  # noqa: E402
from vmem_core.analysis.curate import flip_labels, label_issue_scores, neighbor_graph  # noqa: E402


def reliability_only(classes: np.ndarray, graph: np.ndarray) -> np.ndarray:
    present = graph >= 0
    disagree = present & (classes[np.where(present, graph, 0)] != classes[:, None])
    return np.bincount(graph[disagree], minlength=len(classes)).astype(float)


def disagreement_only(classes: np.ndarray, graph: np.ndarray) -> np.ndarray:
    present = graph >= 0
    disagree = present & (classes[np.where(present, graph, 0)] != classes[:, None])
    return disagree.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


SCORES = {
    "v + rank-weighted disagreement (Curate)": label_issue_scores,
    "reliability v alone": reliability_only,
    "share of own neighbours disagreeing": disagreement_only,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", type=Path, default=None)
    parser.add_argument("--top", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--top-n", type=int, default=10)
    args = parser.parse_args()
    if args.memory is None:
        from vmem_core.ingest.sample import build_sample_memory
        from vmem_core.resources import default_memory

        args.memory = default_memory()
        if not (args.memory / "vmem.json").exists():
            build_sample_memory(args.memory)
    with VisualMemory.open(args.memory) as memory:
        _, classes, graph = neighbor_graph(memory, args.top_n)
        num_classes = len(memory.table.labels)
        print(f"{args.memory}: {len(classes)} exemplars, {num_classes} classes, leave-one-out top-{args.top_n}; "
              f"mean over {args.seeds} seeds (precision / recall)")
        for noise in (0.05, 0.10):
            print(f"\nlabels flipped: {noise:.0%}")
            print(f"  {'score':<42}" + "".join(f"{'@' + str(top):>16}" for top in args.top))
            for name, score in SCORES.items():
                cells = []
                for top in args.top:
                    precision, recall = [], []
                    for seed in range(args.seeds):
                        noisy, flipped = flip_labels(classes, num_classes, noise, seed)
                        first = np.argsort(-score(noisy, graph), kind="stable")[:top]
                        hits = np.isin(first, flipped).sum()
                        precision.append(hits / top)
                        recall.append(hits / len(flipped))
                    cells.append(f"{np.mean(precision):.2f} / {np.mean(recall):.2f}")
                print(f"  {name:<42}" + "".join(f"{c:>16}" for c in cells))
    print("\n(the sample's own labels count as right: a flipped-back or already-confusable exemplar near the top "
          "counts against the precision)")


if __name__ == "__main__":
    main()
