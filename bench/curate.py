"""How well Curate's ranking finds mislabelled exemplars: labels flipped at random at 5% and 10%, precision and recall
of the first N suggestions, beside simpler scores (v alone, the disagreement of its own neighbours alone).

    python bench/curate.py [--memory sample.vmem | --idx-dir /usr/share/datasets/fashion-mnist] [--top 50 100]
                           [--seeds 5] [--top-n 10]

Default memory: the shipped sample (1,000 Fashion-MNIST exemplars, efficientnet-lite0; built on first use).
`--idx-dir` takes Fashion-MNIST's 60,000 training images instead (Debian's dataset-fashion-mnist; embeddings from
vmem's embedding cache, encoded on first use: about half an hour on two cores), searched exactly. The neighbour graph
is searched once; each flip only changes labels on it, as `check_ranking` does in the app.

Where cleanlab is installed (`pip install cleanlab`: for this bench only, never a dependency of vmem), its
`find_label_issues` runs beside the others on the same graph: its predicted probabilities are each item's
leave-one-out vote shares under rank voting (smoothed), the only out-of-sample predictions a memory has without
training anything.

Measured here (3 seeds; precision of the first 100 / 1,000 / 3,000 suggestions): on the 60,000, at 5% flipped,
Curate's score 0.96 / 0.87 / 0.76, v alone 0.86 / 0.56 / 0.39, own-neighbour disagreement 0.76 / 0.77 / 0.76, cleanlab
0.77 / 0.78 / 0.76; at 10%, 0.97 / 0.94 / 0.90 against cleanlab's 0.89 / 0.87 / 0.87. On the 1,000-exemplar sample the
first 50 at 5%: Curate 0.64, disagreement 0.69, cleanlab 0.71 (a small memory's v is too sparse to help).
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


def vote_probabilities(classes: np.ndarray, graph: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, num_classes): each item's leave-one-out rank-vote shares over its neighbours' (noisy) labels, with a little
    mass on every class so that cleanlab never sees a zero probability."""
    weights = 1.0 / (np.arange(graph.shape[1]) + 2.0)
    votes = np.full((len(classes), num_classes), 1e-3)
    present = graph >= 0
    rows = np.repeat(np.arange(len(classes)), graph.shape[1]).reshape(graph.shape)
    np.add.at(votes, (rows[present], classes[np.where(present, graph, 0)][present]),
              np.broadcast_to(weights, graph.shape)[present])
    return votes / votes.sum(axis=1, keepdims=True)


def cleanlab_ranking(classes: np.ndarray, graph: np.ndarray, num_classes: int) -> np.ndarray:
    """Positions ranked by cleanlab: its found issues first (most likely wrong first), then the rest by self-confidence,
    so that the first N is defined for every N."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probabilities = vote_probabilities(classes, graph, num_classes)
    found = find_label_issues(classes, probabilities, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(classes, probabilities, method="self_confidence")
    rest = np.setdiff1d(np.argsort(quality, kind="stable"), found, assume_unique=True)
    rest = rest[np.argsort(quality[rest], kind="stable")]
    return np.concatenate([found, rest])


SCORES = {
    "v + rank-weighted disagreement (Curate)": label_issue_scores,
    "reliability v alone": reliability_only,
    "share of own neighbours disagreeing": disagreement_only,
}


def memory_graph(path, top_n: int) -> tuple[np.ndarray, np.ndarray, int, str]:
    if path is None:
        from vmem_core.sample_memory import build_sample_memory
        from vmem_core.resources import default_memory

        path = default_memory()
        if not (path / "vmem.json").exists():
            build_sample_memory(path)
    with VisualMemory.open(path) as memory:
        _, classes, graph = neighbor_graph(memory, top_n)
        return classes, graph, len(memory.table.labels), str(path)


def idx_graph(idx_dir: Path, top_n: int) -> tuple[np.ndarray, np.ndarray, int, str]:
    from vmem_core.backends.exact import exact_top_k
    from vmem_core.encoders import DEFAULT_ENCODER, load_encoder
    from vmem_core.ingest.embedding_cache import FASHION_MNIST_CLASSES, idx_embeddings, read_idx

    images, labels = idx_dir / "train-images-idx3-ubyte.gz", idx_dir / "train-labels-idx1-ubyte.gz"
    for path in (images, labels):
        if not path.exists():
            sys.exit(f"curate bench: {path} is missing; install Debian's dataset-fashion-mnist or pass --idx-dir")
    vectors = idx_embeddings(load_encoder(DEFAULT_ENCODER), images)
    classes = read_idx(labels)[: len(vectors)].astype(np.int64)
    graph, _ = exact_top_k(vectors, vectors, top_n, exclude=np.arange(len(vectors)))
    return classes, graph, len(FASHION_MNIST_CLASSES), f"{idx_dir} (training split)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--memory", type=Path, default=None)
    source.add_argument("--idx-dir", type=Path, default=None,
                        help="Fashion-MNIST's IDX folder: its 60,000 training images instead of a memory")
    parser.add_argument("--top", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--top-n", type=int, default=10)
    args = parser.parse_args()
    if args.idx_dir is not None:
        classes, graph, num_classes, what = idx_graph(args.idx_dir, args.top_n)
    else:
        classes, graph, num_classes, what = memory_graph(args.memory, args.top_n)
    rankings = {name: (lambda noisy, score=score: np.argsort(-score(noisy, graph), kind="stable"))
                for name, score in SCORES.items()}
    try:
        import cleanlab  # noqa: F401

        rankings["cleanlab find_label_issues (kNN vote shares)"] = (
            lambda noisy: cleanlab_ranking(noisy, graph, num_classes))
    except ImportError:
        print("(cleanlab is not installed: pip install cleanlab to compare with its find_label_issues)")
    print(f"{what}: {len(classes):,} exemplars, {num_classes} classes, leave-one-out top-{args.top_n}; "
          f"mean over {args.seeds} seeds (precision / recall)")
    for noise in (0.05, 0.10):
        print(f"\nlabels flipped: {noise:.0%}")
        print(f"  {'score':<46}" + "".join(f"{'@' + str(top):>16}" for top in args.top))
        for name, rank in rankings.items():
            precision = {top: [] for top in args.top}
            recall = {top: [] for top in args.top}
            for seed in range(args.seeds):
                noisy, flipped = flip_labels(classes, num_classes, noise, seed)
                order = rank(noisy)
                for top in args.top:
                    hits = np.isin(order[:top], flipped).sum()
                    precision[top].append(hits / top)
                    recall[top].append(hits / len(flipped))
            print(f"  {name:<46}" + "".join(f"{np.mean(precision[t]):.2f} / {np.mean(recall[t]):.2f}".rjust(16)
                                             for t in args.top))
    print("\n(the sample's own labels count as right: a flipped-back or already-confusable exemplar near the top "
          "counts against the precision)")


if __name__ == "__main__":
    main()
