"""Evaluation extras, curation suggestions, OOD flags and attribution, on memories with known geometry."""

import numpy as np
import pytest

from vmem_core import VoteSettings
from vmem_core.analysis.attribution import dependent_queries, winning_shares
from vmem_core.analysis.curate import near_duplicates, suspicious_exemplars
from vmem_core.analysis.evaluate import (
    accuracy_vs_memory_size,
    confusion_matrix,
    evaluate_embeddings,
    per_class_accuracy,
    predict_at_k,
)
from vmem_core.analysis.ood import judge, nearest_distance_threshold

from .helpers import new_memory


def clustered(n_per_class=20, classes=3, dim=64, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    vectors = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
    labels = [f"c{i}" for i in range(classes) for _ in range(n_per_class)]
    return centres, vectors, labels


@pytest.fixture
def clusters(tmp_path):
    centres, vectors, labels = clustered()
    mem = new_memory(tmp_path / "m")
    mem.exemplars.add_embeddings(vectors, labels)
    yield mem, centres
    mem.close()


def test_evaluation_on_separable_clusters_is_perfect(clusters):
    mem, centres = clusters
    result = evaluate_embeddings(mem, centres, ["c0", "c1", "c2"], k_max=30)
    assert result.k_max == 30 and all(np.all(curve == 1.0) for curve in result.accuracy.values())
    assert result.best()["rank"] == {"k": 1, "accuracy": 1.0}


def test_unknown_query_labels_are_reported_and_wrong(clusters):
    mem, centres = clusters
    result = evaluate_embeddings(mem, centres, ["c0", "c1", "nope"], k_max=5)
    assert result.unknown_labels == ["nope"]
    assert result.accuracy["rank"][0] == pytest.approx(2 / 3)


def test_confusion_matrix_and_per_class_accuracy():
    truth = ["a", "a", "b", "b", "b"]
    guess = ["a", "b", "b", "b", "a"]
    frame = confusion_matrix(truth, guess)
    assert frame.loc["a", "a"] == 1 and frame.loc["a", "b"] == 1 and frame.loc["b", "a"] == 1
    assert frame.values.sum() == 5
    assert per_class_accuracy(truth, guess) == {"a": 0.5, "b": pytest.approx(2 / 3)}


def test_predict_at_k_uses_prefix(clusters):
    mem, centres = clusters
    ids, distances = mem.search(centres, 10)
    assert predict_at_k(mem, ids, distances, VoteSettings(k=3)) == ["c0", "c1", "c2"]


def test_memory_size_curve_grows_and_is_exact_on_tiny_subsets(clusters):
    mem, centres = clusters
    _, vectors, labels = clustered(seed=0)
    noisy = vectors[::7] + 0.6 * np.random.default_rng(3).normal(size=vectors[::7].shape)
    frame = accuracy_vs_memory_size(mem, noisy / np.linalg.norm(noisy, axis=1, keepdims=True), labels[::7],
                                    per_class=[1, 5, 20, 500], seeds=[0, 1], settings=VoteSettings(k=3))
    assert sorted(frame["per_class"].unique()) == [1, 5, 20]  # 500 clamps to the largest class
    assert set(frame.loc[frame.per_class == 1, "exemplars"]) == {3}  # one per class, searched exactly
    assert frame.loc[frame.per_class == 20, "accuracy"].min() >= frame.loc[frame.per_class == 1, "accuracy"].mean()


def test_mislabelled_exemplar_is_suggested_first(clusters, tmp_path):
    mem, centres = clusters
    (wrong,) = mem.exemplars.add_embeddings(centres[0:1] + 0.01, ["c2"])  # sits inside c0's cluster with label c2
    suggestions = suspicious_exemplars(mem, VoteSettings(k=5, top_n=5))
    assert suggestions[0].id == wrong
    assert suggestions[0].label == "c2" and suggestions[0].suggested_label == "c0"
    assert suggestions[0].reliability > 0 and "vote 'c0'" in suggestions[0].reason


def test_near_duplicates_found_once(clusters):
    mem, centres = clusters
    a, b = mem.exemplars.add_embeddings(np.stack([centres[1], centres[1] * 1.0000001]), ["c1", "c0"])
    pairs = near_duplicates(mem, max_distance=1e-4)
    assert [(p.id, p.other_id, p.same_label) for p in pairs] == [(a, b, False)]


def test_ood_threshold_flags_far_queries(clusters):
    mem, centres = clusters
    threshold = nearest_distance_threshold(mem, 0.99)
    assert 0 < threshold < 0.5
    far = np.random.default_rng(9).normal(size=(1, 64))
    _, distances = mem.search(far, 1)
    assert judge(mem, distances[0, 0]).is_ood
    _, distances = mem.search(centres[:1], 1)
    verdict = judge(mem, distances[0, 0])
    assert not verdict.is_ood and "within the usual range" in verdict.explain()


def test_derived_values_are_recomputed_after_a_change(clusters):
    mem, centres = clusters
    before = nearest_distance_threshold(mem, 0.5)
    mem.exemplars.add_embeddings(np.repeat(centres, 30, axis=0), ["c0", "c1", "c2"] * 30)  # many exact duplicates
    assert nearest_distance_threshold(mem, 0.5) < before


def test_winning_shares_and_dependents(clusters):
    mem, centres = clusters
    result = mem.search.classify_embeddings(centres[:1], k=4)[0]
    shares = winning_shares(result)
    assert sum(shares) == pytest.approx(1.0) and shares[0] == pytest.approx(0.5 / (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5))
    nearest = result.neighbors[0].id
    assert dependent_queries(mem, centres, [nearest], k=4) == [0]
    assert dependent_queries(mem, centres, [], k=4) == []
