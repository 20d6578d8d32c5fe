"""Curation's ranking of likely mislabelled exemplars: its score against a naive reference, a bounded list that puts
flipped labels first, and the precision it reports for itself."""

import numpy as np
import pytest


from vmem_core.analysis.curate import DEFAULT_SUGGESTIONS, check_ranking, label_issue_scores, suspicious_exemplars
from vmem_core.voting import VoteSettings

from .test_analysis import clustered
from .helpers import new_memory


def naive_scores(classes, neighbors):
    n, k = neighbors.shape
    v = [0] * n
    for i in range(n):
        for j in neighbors[i]:
            if j >= 0 and classes[j] != classes[i]:
                v[j] += 1
    top = max(max(v), 1)
    out = []
    for i in range(n):
        weights = [1 / (r + 2) for r in range(k) if neighbors[i][r] >= 0]
        against = [1 / (r + 2) for r in range(k) if neighbors[i][r] >= 0 and classes[neighbors[i][r]] != classes[i]]
        out.append(v[i] / top + (sum(against) / sum(weights) if weights else 0.0))
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
def test_label_issue_scores_match_a_naive_reference(seed):
    rng = np.random.default_rng(seed)
    n, k = 40, 6
    classes = rng.integers(0, 3, n)
    neighbors = np.array([rng.permutation(np.delete(np.arange(n), i))[:k] for i in range(n)])
    neighbors[rng.random((n, k)) < 0.1] = -1  # some rows have fewer neighbours
    assert np.allclose(label_issue_scores(classes, neighbors), naive_scores(classes, neighbors))


@pytest.fixture
def noisy_memory(tmp_path):
    """3 overlapping clusters x 100, with 15 labels flipped to another class."""
    _, vectors, labels = clustered(n_per_class=100, spread=0.6, seed=1)
    rng = np.random.default_rng(2)
    flipped = rng.choice(len(labels), 15, replace=False)
    for i in flipped:
        labels[i] = f"c{(int(labels[i][1]) + 1) % 3}"
    memory = new_memory(tmp_path / "noisy")
    ids = memory.exemplars.add_embeddings(vectors, labels)
    yield memory, {ids[i] for i in flipped}
    memory.close()


def test_the_flipped_labels_come_first_in_a_bounded_list(noisy_memory):
    memory, flipped = noisy_memory
    suggestions = suspicious_exemplars(memory, VoteSettings(k=10, top_n=10))
    assert len(suggestions) == DEFAULT_SUGGESTIONS  # bounded, though many more have v > 0
    assert sum(v > 0 for v in memory.reliability(10).values()) > 2 * DEFAULT_SUGGESTIONS
    first = [s.id for s in suggestions[:len(flipped)]]
    assert len(set(first) & flipped) >= 0.8 * len(flipped)
    # the old order (v alone) finds fewer of them in the same cut-off
    by_v = sorted(memory.reliability(10).items(), key=lambda kv: (-kv[1], kv[0]))[:len(flipped)]
    assert len(set(first) & flipped) > len({i for i, _ in by_v} & flipped)
    assert all(a.score >= b.score for a, b in zip(suggestions, suggestions[1:]))
    assert len(suspicious_exemplars(memory, VoteSettings(k=10, top_n=10), limit=120)) == 120  # more on demand


def test_the_ranking_measures_its_own_precision_without_changing_the_memory(noisy_memory):
    memory, _ = noisy_memory
    before, counter = memory.table.classes.copy(), memory.change_counter
    check = check_ranking(memory, top=10, noise=0.05)
    assert check.flipped == 15 and check.top == 10
    assert check.precision >= 0.7 and check.recall == pytest.approx(check.precision * 10 / 15)
    assert "5% of this memory's labels flipped" in check.explain() and f"{check.precision:.0%}" in check.explain()
    assert np.array_equal(memory.table.classes, before) and memory.change_counter == counter


def test_a_ranking_check_refuses_a_noise_level_outside_0_1(noisy_memory):
    memory, _ = noisy_memory
    with pytest.raises(ValueError, match="strictly between 0 and 1; got 1.5"):
        check_ranking(memory, noise=1.5)


def test_suggestions_follow_the_sessions_rule_and_k_but_never_its_pruning(noisy_memory):
    memory, _ = noisy_memory
    plain = suspicious_exemplars(memory, VoteSettings(k=10, top_n=10), limit=300)
    # pruning judges exemplars by v, the very thing curation asks about: no kind of it moves the suggestions
    for pruning in ("hard", "soft"):
        assert suspicious_exemplars(memory, VoteSettings(k=10, top_n=10, pruning=pruning, threshold=1),
                                    limit=300) == plain
        assert check_ranking(memory, top=10, settings=VoteSettings(pruning=pruning, threshold=1)) == \
            check_ranking(memory, top=10, settings=VoteSettings())

    # the rule weights the disagreement: plurality's is the plain share of the top_n neighbours with another label
    items, neighbors, _ = memory.search.memory_neighbors(10)
    own = dict(zip(items.tolist(), memory.table.class_indices(items).tolist()))
    v = memory.reliability(10)
    plurality = suspicious_exemplars(memory, VoteSettings(k=5, top_n=10, rule="plurality"), limit=300)
    assert [s.score for s in plurality] != [s.score for s in plain]
    for s in plurality:
        row = neighbors[np.searchsorted(items, s.id)]
        assert s.score == pytest.approx(v.get(s.id, 0) / max(v.values()) + np.mean([own[int(n)] != own[s.id]
                                                                                      for n in row]))
    # and, with k, the suggested label: the most common one among its 5 nearest, where that is not its own
    _, nearest, _ = memory.search.memory_neighbors(5)
    labels = memory.table.labels
    relabels = [s for s in plurality if s.suggested_label]
    assert relabels and all("(plurality voting)" in s.reason for s in relabels)
    for s in relabels:
        counts = np.bincount([own[int(n)] for n in nearest[np.searchsorted(items, s.id)]], minlength=len(labels))
        assert counts[labels.index(s.suggested_label)] == counts.max() and s.suggested_label != s.label
