"""The paper's experiments over a neighbour cache, checked against references (scikit-learn, DINOv2's kNN rule,
fresh exact searches) on data with known geometry."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier

from vmem_core.analysis.experiments import (
    accuracy_and_hit_rate,
    auroc,
    fit_log_error,
    flip_labels,
    held_out_class_levels,
    label_noise,
    load_taxonomy,
    matched_threshold,
    memory_size_sweep,
    new_classes,
    new_classes_each,
    ood_auroc,
    ood_auroc_of_images,
    paper_hard_pruning_curves,
    predictions_every_k,
    pruning_comparison,
    pruning_threshold_sweep,
    reliability_from_loo,
    rule_parameter_sweep,
    taxonomy_accuracy,
    taxonomy_every_class,
)
from vmem_core.analysis.neighbor_cache import NeighborCache, build_cache, exact_top_k
from vmem_core.errors import DatasetError, VmemError
from vmem_core.voting import SOFTMAX_TEMPERATURE, VoteSettings

from .helpers import freeze_reliability, new_memory


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(per_class=30, classes=4, dim=16, spread=1.8, seed=0, queries_per_class=15):
    """Overlapping Gaussian classes: accuracy is neither 0 nor 1, so comparisons mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    names = np.asarray([f"c{i}" for i in range(classes)], dtype=object)

    def draw(n):
        vectors = np.concatenate([c + spread * rng.normal(size=(n, dim)) for c in centres])
        return unit(vectors), np.repeat(names, n)

    memory, labels = draw(per_class)
    queries, query_labels = draw(queries_per_class)
    return memory, labels, queries, query_labels


@pytest.fixture
def data():
    return blobs()


@pytest.fixture
def cache(data):
    memory, labels, queries, query_labels = data
    return build_cache(memory, labels, queries, query_labels, k=40)


def test_exact_top_k_matches_a_full_sort_and_leave_one_out_skips_self(data):
    memory, _, queries, _ = data
    positions, distances = exact_top_k(queries, memory, 7)
    reference = np.argsort(-(queries @ memory.T), axis=1, kind="stable")[:, :7]
    assert np.array_equal(positions, reference)
    assert np.allclose(distances, 1 - np.take_along_axis(queries @ memory.T, reference, axis=1), atol=1e-6)
    loo = build_cache(memory, data[1], k=5)
    assert not (loo.positions == np.arange(len(memory))[:, None]).any() and loo.depth == 5


@pytest.mark.parametrize("seed", range(4))
def test_restricted_neighbors_equal_a_fresh_search_of_the_subset(data, cache, seed):
    memory, _, queries, _ = data
    keep = np.random.default_rng(seed).random(len(memory)) < [0.05, 0.3, 0.7, 0.95][seed]
    positions, distances = cache.restricted(keep, 10)
    kept = np.flatnonzero(keep)
    fresh, fresh_d = exact_top_k(queries, memory[kept], 10)
    assert np.array_equal(positions, kept[fresh]) and np.allclose(distances, fresh_d, atol=1e-6)


def test_restricted_leave_one_out_never_returns_the_item_itself(data):
    memory, labels, _, _ = data
    loo = build_cache(memory, labels, k=3)
    keep = np.arange(len(memory)) % 4 == 0  # forces searches again (3 cached neighbours rarely hold 10 kept)
    positions, _ = loo.restricted(keep, 10)
    assert not (positions == np.arange(len(memory))[:, None]).any()
    assert keep[positions].all()


def _no_tie(scores, atol=1e-9):
    top2 = np.sort(scores, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0] > atol


@pytest.mark.parametrize("rule,weights", [("plurality", "uniform"), ("distance", lambda d: np.exp(-d))])
def test_plurality_and_distance_voting_agree_with_scikit_learn(data, cache, rule, weights):
    memory, labels, queries, query_labels = data
    predictions, _ = predictions_every_k(cache.positions, cache.distances, labels, query_labels, rule)
    classes = np.asarray(sorted(set(labels)))
    checked = 0
    for k in (1, 4, 7, 15):
        knn = KNeighborsClassifier(n_neighbors=k, weights=weights, metric="cosine", algorithm="brute")
        knn.fit(memory, labels.astype(str))
        proba = knn.predict_proba(queries)
        clear = _no_tie(proba)  # ties are broken differently (sklearn: lowest class index): excluded
        assert clear.sum() > len(queries) // 2
        assert np.array_equal(classes[predictions[clear, k - 1]], knn.classes_[proba[clear].argmax(axis=1)])
        checked += clear.sum()
    assert checked > 100


def dinov2_knn_probabilities(queries, memory, memory_classes, num_classes, ks, temperature):
    """DINOv2's kNN evaluation rule (eval/knn.py), written out by hand: top-max(k) cosine similarities, softmax of
    similarity / T over those neighbours, one-hot labels weighted by it, summed over the first k."""
    max_k = max(ks)
    similarity = queries.astype(np.float64) @ memory.T.astype(np.float64)
    top = np.argsort(-similarity, axis=1)[:, :max_k]
    top_sims = np.take_along_axis(similarity, top, axis=1)
    transformed = np.exp(top_sims / temperature)
    transformed /= transformed.sum(axis=1, keepdims=True)
    one_hot = np.eye(num_classes)[memory_classes[top]]
    weighted = one_hot * transformed[:, :, None]
    return {k: weighted[:, :k, :].sum(axis=1) for k in ks}


def test_softmax_voting_agrees_with_dinov2_knn_rule(data, cache):
    memory, labels, queries, query_labels = data
    classes = np.asarray(sorted(set(labels)))
    memory_classes = np.searchsorted(classes, labels.astype(str))
    ks = (1, 5, 10, 20, 40)
    reference = dinov2_knn_probabilities(queries, memory, memory_classes, len(classes), ks, SOFTMAX_TEMPERATURE)
    predictions, _ = predictions_every_k(cache.positions, cache.distances, labels, query_labels, "softmax")
    for k in ks:
        clear = _no_tie(reference[k], 1e-12)
        assert clear.sum() > 0.9 * len(queries)
        assert np.array_equal(predictions[clear, k - 1], reference[k][clear].argmax(axis=1))


def test_accuracy_and_hit_rate_curves(cache, data):
    result = accuracy_and_hit_rate(cache)
    assert set(result.accuracy) == {"rank", "plurality", "distance", "softmax"}
    assert np.all(np.diff(result.hit_rate) >= 0)  # the true label, once among the first k, stays there
    for curve in result.accuracy.values():
        assert len(curve) == 40 and np.all(curve <= result.hit_rate + 1e-12)  # a prediction needs a voter
    assert result.accuracy["plurality"][0] == result.hit_rate[0]  # at k = 1 both ask about the nearest one
    assert 0.3 < result.accuracy["rank"][9] < 1.0


def test_memory_size_sweep_grows_with_memory_and_fits_a_falling_line():
    memory, labels, queries, query_labels = blobs(per_class=200, classes=5, spread=1.1, queries_per_class=40)
    cache = build_cache(memory, labels, queries, query_labels, k=30)
    frame = memory_size_sweep(cache, per_class=[1, 5, 20, 200, 999], seeds=[0, 1, 2], rules=["rank"],
                              settings=VoteSettings(k=5))
    assert sorted(frame["per_class"].unique()) == [1, 5, 20, 200]  # 999 clamps to the largest class
    assert set(frame.loc[frame.per_class == 1, "exemplars"]) == {5}
    assert frame.loc[frame.per_class == 1, "accuracy"].nunique() > 1  # seeds draw different subsets
    means = frame.groupby("per_class")["accuracy"].mean()
    assert means[200] > means[1]
    fit = fit_log_error(frame, "rank")
    assert fit.slope < 0 and fit.points == 4
    # the full memory reproduces the plain cache's accuracy exactly
    full = accuracy_and_hit_rate(cache, ["rank"]).accuracy["rank"][4]
    assert frame.loc[frame.per_class == 200, "accuracy"].iloc[0] == pytest.approx(full)


def test_fit_recovers_a_known_power_law():
    import pandas as pd

    sizes = np.array([10, 100, 1000, 10000])
    frame = pd.DataFrame({"rule": "rank", "exemplars": sizes, "accuracy": 1 - 0.5 * sizes ** -0.3})
    fit = fit_log_error(frame, "rank")
    assert fit.slope == pytest.approx(-0.3) and fit.intercept == pytest.approx(np.log10(0.5))
    assert fit.r_squared == pytest.approx(1.0)


def test_new_classes_before_after_and_forgetting(cache, data):
    result = new_classes(cache, ["c3"], settings=VoteSettings(k=5))
    assert result.old_queries == 45 and result.new_queries == 15
    # before: c3 queries excluded, memory without c3; recomputed here by hand from a fresh search
    memory, labels, queries, query_labels = data
    old_memory = labels != "c3"
    old_queries = query_labels != "c3"
    fresh = build_cache(memory[old_memory], labels[old_memory], queries[old_queries], query_labels[old_queries], 5)
    assert result.old_before["rank"] == pytest.approx(accuracy_and_hit_rate(fresh, ["rank"]).accuracy["rank"][4])
    assert result.new_after["rank"] > 0.3
    assert result.to_dict()["old_delta_pp"]["rank"] == pytest.approx(
        100 * (result.old_after["rank"] - result.old_before["rank"]))
    with pytest.raises(VmemError, match="'nope'"):
        new_classes(cache, ["nope"])
    with pytest.raises(VmemError, match="at least one"):
        new_classes(cache, ["c0", "c1", "c2", "c3"])


def test_reliability_matches_the_memory_definition(data, tmp_path):
    memory, labels, _, _ = data
    loo = build_cache(memory, labels, k=20)
    v = reliability_from_loo(loo, top_n=10)
    mem = new_memory(tmp_path / "m")
    ids = mem.exemplars.add_embeddings(np.pad(memory, ((0, 0), (0, 48))), list(labels))
    expected = mem.reliability(10)
    assert [expected[i] for i in ids] == v.tolist()
    mem.close()


def test_pruning_modes_differ_and_hard_pruning_equals_a_pruned_memory(data, cache):
    memory, labels, queries, query_labels = data
    noisy = flip_labels(labels, 0.2, seed=1)  # mislabelled exemplars for pruning to find
    cache.memory_labels = noisy
    v = reliability_from_loo(build_cache(memory, noisy, k=10))
    threshold = float(np.quantile(v, 0.7))
    result = pruning_comparison(cache, v, settings=VoteSettings(threshold=threshold))
    assert result.pruned == int((v >= threshold).sum()) > 0 and result.soft_weighted == int((v > 0).sum())
    kept = v < threshold
    fresh = build_cache(memory[kept], noisy[kept], queries, query_labels, k=10)
    assert np.allclose(result.accuracy["hard"]["rank"][:10], accuracy_and_hit_rate(fresh, ["rank"]).accuracy["rank"])
    assert not np.allclose(result.accuracy["soft"]["rank"], result.accuracy["none"]["rank"])
    with pytest.raises(VmemError, match="one value per memory item"):
        pruning_comparison(cache, v[:-1])


def test_flip_labels_changes_exactly_the_fraction():
    labels = np.asarray(["a", "b", "c", "d"] * 25, dtype=object)
    flipped = flip_labels(labels, 0.4, seed=3)
    assert (flipped != labels).sum() == 40 and set(flipped) <= set(labels)
    assert np.array_equal(flip_labels(labels, 0.0), labels)
    with pytest.raises(VmemError, match="1.5"):
        flip_labels(labels, 1.5)


def test_label_noise_hurts_and_plurality_at_large_k_resists(cache):
    frame = label_noise(cache, [0.0, 0.4, 0.8], settings=VoteSettings(k=20))
    at = frame.set_index(["noise", "rule"])["accuracy"]
    assert at[(0.8, "rank")] < at[(0.0, "rank")]
    assert at[(0.4, "plurality")] > at[(0.8, "plurality")]


TAXONOMY = "class,group,supergroup\nc0,g01,all\nc1,g01,all\nc2,g23,all\nc3,g23,all\n"


def test_taxonomy_levels_get_easier_and_held_out_class_rises_with_exemplars(cache, tmp_path):
    path = tmp_path / "taxonomy.csv"
    path.write_text(TAXONOMY)
    taxonomy = load_taxonomy(path)
    levels = taxonomy_accuracy(cache, taxonomy, settings=VoteSettings(k=5))
    assert list(levels) == ["class", "group", "supergroup"]
    assert levels["class"]["rank"] <= levels["group"]["rank"] <= levels["supergroup"]["rank"] == 1.0
    frame = held_out_class_levels(cache, taxonomy, "c3", added=[0, 1, 5, 30], seeds=[0, 1])
    cls = frame[frame.level == "class"].groupby("added")["accuracy"].mean()
    assert cls[0] == 0.0 and cls[30] > cls[1] > 0.0  # none in memory: never named; all 30: often
    assert frame[(frame.level == "supergroup")]["accuracy"].min() == 1.0
    assert set(held_out_class_levels(cache, taxonomy, "c3", added=[31, 99], seeds=[0])["added"]) == {30}
    with pytest.raises(VmemError, match="-1"):
        held_out_class_levels(cache, taxonomy, "c3", added=[-1])


@pytest.mark.parametrize("text,message", [("class\nc0\n", "at least two levels"),
                                          ("class,group\nc0,g\nc0,h\n", "listed twice"),
                                          ("class,group\nc0,\n", "non-empty")])
def test_bad_taxonomy_files_are_named(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_taxonomy(path)


def test_taxonomy_missing_a_memory_label_is_an_error(cache, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("class,group\nc0,g\n")
    with pytest.raises(VmemError, match="c1, c2, c3"):
        taxonomy_accuracy(cache, load_taxonomy(path))


def test_auroc_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    inside, outside = rng.normal(size=200).round(1), rng.normal(0.7, size=150).round(1)  # rounding makes ties
    expected = roc_auc_score(np.r_[np.zeros(200), np.ones(150)], np.r_[inside, outside])
    assert auroc(inside, outside) == pytest.approx(expected)


def test_held_out_classes_are_detected_as_out_of_distribution():
    memory, labels, queries, query_labels = blobs(spread=0.4)
    cache = build_cache(memory, labels, queries, query_labels, k=5)
    result = ood_auroc(cache, ["c3"])
    assert result.auroc > 0.95 and len(result.out_scores) == 15 and len(result.in_scores) == 45


@pytest.mark.parametrize("rule,pruning", [("rank", "none"), ("plurality", "none"), ("softmax", "soft")])
def test_counterfactuals_equal_deleting_the_exemplar(tmp_path, rule, pruning, monkeypatch):
    """The counterfactual from k + 1 cached neighbours is what the memory predicts once the exemplar is gone
    (reliability held fixed: soft pruning recomputes v after a delete, so that case compares with v frozen)."""
    from vmem_core.analysis.attribution import attribute, exemplar_influence

    memory, labels, queries, query_labels = blobs(per_class=12, classes=3, dim=64, spread=4.0)
    mem = new_memory(tmp_path / "m")
    mem.exemplars.add_embeddings(memory, list(labels))
    queries, query_labels = queries[:12], query_labels[:12]
    explained = attribute(mem, queries, VoteSettings(k=4, rule=rule, pruning=pruning))
    freeze_reliability(mem, 10, monkeypatch)  # as the counterfactual assumes
    flips_seen = 0
    for row, neighbors in enumerate(explained):
        assert sum(n.share for n in neighbors) == pytest.approx(1.0)
        for n in neighbors:
            mem.exemplars.delete([n.id])
            [after] = mem.search.classify_embeddings(queries[row:row + 1], VoteSettings(k=4, rule=rule, pruning=pruning))
            assert after.label == n.without, (row, n)
            flips_seen += n.flips
            mem.exemplars.restore([n.id])
    assert flips_seen > 0  # some exemplar mattered, so the comparison tested something
    frame = exemplar_influence(mem, queries, list(query_labels), VoteSettings(k=4, rule=rule, pruning=pruning))
    assert frame["flips"].sum() == flips_seen
    by_id = {n.id for neighbors in explained for n in neighbors}
    assert set(frame["id"]) == by_id
    mem.close()


# --- the paper's protocols ------------------------------------------------------------------------------------------
def test_paper_hard_pruning_votes_among_the_unpruned_of_the_first_k_or_all_of_them(data, cache):
    rng = np.random.default_rng(3)
    reliability = rng.integers(0, 6, size=len(cache.memory_labels))
    threshold = 3
    curves = paper_hard_pruning_curves(cache, reliability, threshold, ["plurality", "rank"])
    for rule, weight in (("plurality", lambda i: 1.0), ("rank", lambda i: 1.0 / (i + 2))):
        for k in (1, 3, 10):
            correct = 0
            for row, truth in zip(cache.positions[:, :k], cache.query_labels):
                # all pruned: none is
                kept = [i for i, p in enumerate(row) if reliability[p] < threshold] or list(range(k))
                scores, winner = {}, None
                for i in kept:  # each keeps its rank among the k; a tie stays with the class that got there first
                    label = cache.memory_labels[row[i]]
                    scores[label] = scores.get(label, 0) + weight(i)
                    winner = label if winner is None or scores[label] > scores[winner] else winner
                correct += winner == truth
            assert curves[rule][k - 1] == pytest.approx(correct / len(cache)), (rule, k)
    # every exemplar pruned: every query votes unpruned
    unpruned = accuracy_and_hit_rate(cache, ["rank"]).accuracy["rank"]
    assert np.allclose(paper_hard_pruning_curves(cache, np.full(len(reliability), 9), 1, ["rank"])["rank"], unpruned)


def test_pruning_sweep_prunes_less_as_the_threshold_rises_and_ends_unpruned(cache):
    reliability = np.random.default_rng(0).integers(0, 40, size=len(cache.memory_labels))
    sweep = pruning_threshold_sweep(cache, reliability, [1, 8, 32, 128], ["rank"])
    assert [row["threshold"] for row in sweep] == [1.0, 8.0, 32.0, 128.0, None]
    fractions = [row["fraction_pruned"] for row in sweep]
    assert fractions == sorted(fractions, reverse=True) and fractions[-1] == 0.0 and fractions[0] > 0.9
    assert sweep[2]["pruned"] == int((reliability >= 32).sum())
    unpruned = accuracy_and_hit_rate(cache, ["rank"]).to_dict()
    assert sweep[-1]["accuracy"]["rank"] == pytest.approx(unpruned["accuracy"]["rank"][9])
    assert sweep[-1]["best_over_k"]["rank"] == unpruned["best_over_k"]["rank"]
    # the threshold whose fraction pruned is nearest the paper's 2%
    rows = [{"threshold": 4.0, "fraction_pruned": 0.3}, {"threshold": 64.0, "fraction_pruned": 0.025},
            {"threshold": 128.0, "fraction_pruned": 0.001}, {"threshold": None, "fraction_pruned": 0.0}]
    assert matched_threshold(rows) == 64.0 and matched_threshold(rows[-1:]) is None


def test_loglog_fit_recovers_the_papers_law_and_the_power_law_fits_it_worse():
    import pandas as pd

    sizes = np.array([10, 30, 100, 300, 1000, 3000, 10000, 60000])
    error = 10 ** (-0.5 - 1.7 * np.log10(np.log10(sizes)))
    frame = pd.DataFrame({"exemplars": sizes, "rule": "rank", "accuracy": 1 - error})
    fit = fit_log_error(frame, "rank", loglog=True)
    assert fit.slope == pytest.approx(-1.7) and fit.intercept == pytest.approx(-0.5)
    assert fit.r_squared == pytest.approx(1)
    assert fit_log_error(frame, "rank").r_squared < 0.99


def test_taxonomy_every_class_holds_out_each_class_and_caps_the_others(tmp_path, monkeypatch):
    memory, labels, queries, query_labels = blobs(per_class=70, queries_per_class=8)
    cache = build_cache(memory, labels, queries, query_labels, k=30)
    path = tmp_path / "taxonomy.csv"
    path.write_text(TAXONOMY)
    seen = []
    restricted = NeighborCache.restricted

    def spy(self, keep, depth=None):
        seen.append((set(self.query_labels.tolist()), dict(zip(*np.unique(self.memory_labels[keep],
                                                                           return_counts=True))), depth))
        return restricted(self, keep, depth)

    monkeypatch.setattr(NeighborCache, "restricted", spy)
    frame = taxonomy_every_class(cache, load_taxonomy(path), 50, added=[0, 5, 50], seeds=[0, 1])
    assert sorted(frame["held_out"].unique()) == ["c0", "c1", "c2", "c3"]
    assert len(seen) == 4 * 3 * 2  # classes x added x seeds (sampling the others makes n = 0 differ by seed)
    for (query_classes, counts, depth) in seen:
        [held] = query_classes  # the queries are the held-out class's only
        assert depth == 1  # k = 1
        assert all(n == 50 for label, n in counts.items() if label != held)  # every other class capped at 50
        assert counts.get(held, 0) in (0, 5, 50)
    cls = frame[frame.level == "class"].groupby("added")["accuracy"].mean()
    assert cls[0] == 0.0 and cls[50] > cls[5] > 0.0
    assert frame[frame.level == "supergroup"]["accuracy"].min() == 1.0


def test_flip_labels_to_any_class_sometimes_keeps_the_true_label():
    labels = np.asarray([f"c{i % 4}" for i in range(4000)], dtype=object)
    noisy = flip_labels(labels, 1.0, seed=0, any_class=True)
    assert (noisy != labels).mean() == pytest.approx(0.75, abs=0.03)  # a random class of 4 is the true one 1 in 4
    assert set(noisy.tolist()) == set(labels.tolist())
    assert (flip_labels(labels, 1.0, seed=0) != labels).all()  # the project's variant always changes it


def test_new_classes_each_class_in_turn(cache):
    rows = new_classes_each(cache, ["rank"], VoteSettings(k=5))
    assert [row["new_labels"] for row in rows] == [["c0"], ["c1"], ["c2"], ["c3"]]
    assert rows[2] == new_classes(cache, ["c2"], ["rank"], VoteSettings(k=5)).to_dict()


@pytest.mark.parametrize("k", [1, 10, 60])  # 60: deeper than the cache's 40, searched again
def test_ood_of_other_images_equals_fresh_searches_at_every_k(data, cache, k):
    memory, _, queries, _ = data
    outside = unit(np.random.default_rng(5).normal(size=(9, memory.shape[1])))
    _, inside_d = exact_top_k(queries, memory, k)
    _, outside_d = exact_top_k(outside, memory, k)
    result = ood_auroc_of_images(cache, outside, k)
    assert result.k == k and result.auroc == pytest.approx(auroc(inside_d.mean(axis=1), outside_d.mean(axis=1)))


def test_rule_parameter_sweep_holds_the_default_and_moves_with_the_parameter(cache):
    sweep = rule_parameter_sweep(cache, VoteSettings(k=10), rank_offsets=[0.5, 2, 1e6], temperatures=[0.07, 5.0])
    curves = accuracy_and_hit_rate(cache, ["rank", "softmax", "plurality"]).to_dict()
    assert [row["value"] for row in sweep["rank_offset"]] == [0.5, 2.0, 1e6]
    assert sweep["rank_offset"][1]["accuracy"] == pytest.approx(curves["accuracy"]["rank"][9])  # the default
    assert sweep["temperature"][0]["best_over_k"] == curves["best_over_k"]["softmax"]
    # a huge offset makes every weight nearly equal: plurality, up to how ties break
    assert sweep["rank_offset"][2]["accuracy"] == pytest.approx(curves["accuracy"]["plurality"][9], abs=0.05)
    settings = VoteSettings(k=10, rule="rank", rank_offset=0.5)
    predictions, truth = predictions_every_k(cache.positions, cache.distances, cache.memory_labels,
                                             cache.query_labels, settings)
    assert sweep["rank_offset"][0]["accuracy"] == pytest.approx((predictions[:, 9] == truth).mean())
