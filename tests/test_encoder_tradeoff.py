"""The compute-vs-memory trade-off on small synthetic embeddings: paired stratified subsets, accuracies checked against
a naive vote, overtakes on constructed curves, errors, and the figure."""

from collections import Counter

import numpy as np
import pytest

from vmem_core.analysis.encoder_tradeoff import EncoderEmbeddings, encoder_tradeoff, overtakes, stratified_order
from vmem_core.errors import VmemError
from vmem_core.voting import VoteSettings

CLASSES = 4


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered(name: str, noise: float, memory: int = 200, queries: int = 80, dim: int = 16, seed: int = 0):
    """Classes around orthogonal centres; more noise plays a weaker encoder of the same images."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:CLASSES] * 3

    def draw(n):
        labels = np.array([f"class{i % CLASSES}" for i in range(n)], dtype=object)
        classes = np.array([i % CLASSES for i in range(n)])
        return unit(centres[classes] + noise * rng.standard_normal((n, dim))), labels

    memory_vectors, memory_labels = draw(memory)
    query_vectors, query_labels = draw(queries)
    return EncoderEmbeddings(name, memory_vectors, memory_labels, query_vectors, query_labels)


def naive_rank_accuracy(encoder: EncoderEmbeddings, keep: np.ndarray, k: int) -> float:
    """RankVoting written out: the k nearest kept exemplars, each adding 1 / (rank + 2) to its class."""
    kept = np.flatnonzero(keep)
    correct = 0
    for vector, truth in zip(encoder.query_vectors, encoder.query_labels):
        nearest = kept[np.argsort(1 - encoder.memory_vectors[kept] @ vector, kind="stable")[:k]]
        scores = Counter()
        for rank, position in enumerate(nearest):
            scores[encoder.memory_labels[position]] += 1 / (rank + 2)
        correct += max(scores, key=scores.get) == truth
    return correct / len(encoder.query_labels)


def test_stratified_subsets_keep_each_class_share_and_are_nested():
    labels = ["a"] * 30 + ["b"] * 10  # a holds three quarters of the memory
    for seed in range(20):
        order = stratified_order(labels, seed)
        assert sorted(order.tolist()) == list(range(40))  # a prefix of one order: the subsets are nested
        for n in range(1, 41):
            count_a = sum(labels[i] == "a" for i in order[:n])
            assert -1.5 <= count_a - 0.75 * n <= 1, (seed, n, count_a)
    assert stratified_order(labels, 0).tolist() != stratified_order(labels, 1).tolist()


def test_equal_classes_are_drawn_exactly_evenly():
    labels = [name for name in "abcd" for _ in range(25)]
    for seed in range(5):
        order = stratified_order(labels, seed)
        for n in (4, 20, 40, 100):
            assert Counter(labels[i] for i in order[:n]) == {name: n // 4 for name in "abcd"}


def test_accuracies_match_a_naive_vote_over_the_same_subset():
    encoder = clustered("noisy", noise=2.0)
    result = encoder_tradeoff([encoder], sizes=[8, 40, 200], seeds=[0, 3], settings=VoteSettings(rule="rank", k=5))
    assert len(result.rows) == 3 * 2
    for row in result.rows:
        keep = np.zeros(200, dtype=bool)
        keep[stratified_order(encoder.memory_labels, row["seed"])[:row["size"]]] = True
        assert row["accuracy"] == pytest.approx(naive_rank_accuracy(encoder, keep, 5), abs=1e-6)
        assert row["best_accuracy"] >= row["accuracy"] and 1 <= row["best_k"] <= row["size"]


def test_encoders_of_the_same_images_vote_over_the_same_exemplars():
    twin = clustered("lite-a", noise=1.5)
    same = EncoderEmbeddings("lite-b", *twin[1:])
    result = encoder_tradeoff([twin, same], sizes=[10, 50], seeds=[0, 1])
    by_encoder = {name: [(r["size"], r["seed"], r["accuracy"], r["best_accuracy"]) for r in result.rows
                         if r["encoder"] == name] for name in ("lite-a", "lite-b")}
    assert by_encoder["lite-a"] == by_encoder["lite-b"]


def test_a_better_encoder_scores_higher_and_more_memory_helps():
    weak, strong = clustered("weak", noise=3.0), clustered("strong", noise=0.8, seed=1)
    result = encoder_tradeoff([weak, strong], sizes=[4, 20, 200], seeds=[0, 1, 2])
    curves = result.to_dict()["curves"]
    assert [point["size"] for point in curves["weak"]] == [4, 20, 200]
    assert curves["strong"][-1]["best_accuracy"] > curves["weak"][-1]["best_accuracy"]
    assert curves["weak"][-1]["best_accuracy"] > curves["weak"][0]["best_accuracy"]
    assert all(set(point) == {"size", "accuracy", "accuracy_std", "best_accuracy", "best_accuracy_std", "best_k"}
               for points in curves.values() for point in points)


def test_overtakes_on_constructed_curves():
    def curve(accuracies):
        return [{"size": size, "accuracy": a, "best_accuracy": a} for size, a in zip((100, 1000, 10000), accuracies)]

    curves = {"small": curve([0.50, 0.70, 0.90]), "mid": curve([0.60, 0.80, 0.92]), "large": curve([0.70, 0.85, 0.95])}
    rows = overtakes(curves, ["small", "mid", "large"])
    assert [(r["smaller"], r["larger"]) for r in rows[::3]] == [("small", "mid"), ("small", "large"), ("mid", "large")]
    small_vs_large = [(r["larger_size"], r["smaller_size"], r["memory_factor"]) for r in rows
                      if (r["smaller"], r["larger"]) == ("small", "large")]
    # large at 100 (0.70) is matched by small at 1,000; large at 1,000 (0.85) by small at 10,000; large at 10,000 never
    assert small_vs_large == [(100, 1000, 10.0), (1000, 10000, 10.0), (10000, None, None)]
    mid_vs_large = [r["smaller_size"] for r in rows if (r["smaller"], r["larger"]) == ("mid", "large")]
    assert mid_vs_large == [1000, 10000, None]
    # a "larger" encoder that is no better is matched at its own size or below
    assert overtakes({"a": curve([0.8, 0.9, 0.95]), "b": curve([0.7, 0.8, 0.9])}, ["a", "b"])[1]["smaller_size"] == 100


@pytest.mark.parametrize("change, message", [
    (lambda e: e._replace(query_vectors=e.query_vectors[:, :8]), "queries are 8-d but its memory is 16-d"),
    (lambda e: e._replace(memory_labels=e.memory_labels[:10]), "memory vectors of shape \\(200, 16\\) do not match "
                                                               "its 10 labels"),
    (lambda e: e._replace(query_labels=e.query_labels[:3]), "query vectors of shape \\(80, 16\\) do not match its 3"),
])
def test_mismatched_embeddings_are_refused(change, message):
    with pytest.raises(VmemError, match=message):
        encoder_tradeoff([clustered("ok", 1.0), change(clustered("bad", 1.0))], sizes=[10])


def test_bad_sizes_names_and_metrics_are_refused():
    encoder = clustered("one", 1.0)
    with pytest.raises(VmemError, match="memory size 500 is larger than the memory of 200 exemplars; accepted: "
                                        "sizes from 1 to 200"):
        encoder_tradeoff([encoder], sizes=[10, 500])
    with pytest.raises(VmemError, match="at least 1, got \\[0, 10\\]"):
        encoder_tradeoff([encoder], sizes=[0, 10])
    with pytest.raises(VmemError, match="encoder names must differ"):
        encoder_tradeoff([encoder, encoder], sizes=[10])
    with pytest.raises(VmemError, match="give at least one encoder"):
        encoder_tradeoff([], sizes=[10])
    with pytest.raises(VmemError, match="unknown metric 'top5'; accepted: accuracy, best_accuracy"):
        overtakes({}, [], metric="top5")


def test_figure_draws_each_encoder_on_a_log_memory_axis():
    from vmem_core.analysis.experiment_plots import encoder_tradeoff_figure

    result = encoder_tradeoff([clustered("small", 2.5), clustered("large", 1.0, seed=1)], sizes=[5, 20, 50, 200],
                              seeds=[0, 1]).to_dict()
    fig = encoder_tradeoff_figure(result)
    assert [trace.name for trace in fig.data] == ["small, best k", "small, k=10", "large, best k", "large, k=10"]
    assert list(fig.data[2].x) == [5, 20, 50, 200]
    assert list(fig.data[2].y) == [point["best_accuracy"] for point in result["curves"]["large"]]
    assert list(fig.data[1].y) == [point["accuracy"] for point in result["curves"]["small"]]
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [5, 10, 20, 50, 100, 200]
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text and "2 stratified" in fig.layout.title.text


def test_the_results_script_runs_the_section_and_its_verdict(tmp_path, monkeypatch):
    """scripts/results.py on tiny IDX files with the pixel encoders: the subset, the section and the verdict row."""
    import importlib.util

    from .helpers import REPO
    from .test_embedding_cache import write_idx

    monkeypatch.setenv("VMEM_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    files = {}
    for split, count in (("memory", 60), ("queries", 30)):
        classes = np.arange(count) % 3
        pixels = rng.integers(0, 60, (count, 8, 8))
        for row, label in enumerate(classes):
            pixels[row, 3 * label:3 * label + 2] += 190  # each class a bright band of its own, as the pixel encoder sees
        write_idx(tmp_path / f"{split}-images.gz", pixels)
        write_idx(tmp_path / f"{split}-labels.gz", classes)
        files[split] = (tmp_path / f"{split}-images.gz", tmp_path / f"{split}-labels.gz")
    spec = importlib.util.spec_from_file_location("results_script", REPO / "scripts" / "results.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "TRADEOFF_SIZES", (6, 15, 30, 60, 100))
    monkeypatch.setattr(script, "export", lambda fig, out, name: f"![{name}]")

    result = script.run_encoder_tradeoff(files, ["test-pixels", "test-pixels-other"], limit=45)
    assert (result["memory"], result["queries"]) == (45, 30) and result["sizes"] == [6, 15, 30]
    assert result["encoders"] == ["test-pixels", "test-pixels-other"]
    assert all(point["best_accuracy"] > 0.9 for point in result["curves"]["test-pixels"])

    section = "\n".join(script.section_encoders(result, tmp_path, {"memory": 60, "queries": 30}))
    assert "## Compute vs memory" in section and "![encoder_tradeoff]" in section
    assert "first 45 training images; queries: the first 30 test images (a subset" in section
