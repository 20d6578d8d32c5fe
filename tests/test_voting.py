"""The voting rules against hand-worked examples and a naive reference implementation."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem_core.voting import (
    VoteSettings,
    check_rule,
    class_scores,
    compact_kept,
    prepare_votes,
    rule_weights,
    soft_pruning_factors,
    vote_all_k,
)


def naive_vote(labels, weights):
    """Reference: recompute scores from scratch; among tied classes pick the one that reached the score first."""
    scores, reached = {}, {}
    for i, (label, weight) in enumerate(zip(labels, weights)):
        if label < 0:
            continue
        scores[label] = scores.get(label, 0.0) + weight
        reached[label] = i
    best = max(scores.values())
    tied = [c for c, s in scores.items() if s == best]
    return min(tied, key=lambda c: reached[c])


def test_weights_of_each_rule():
    d = np.array([0.0, 0.5, 1.0])
    assert rule_weights("plurality", d).tolist() == [1, 1, 1]
    assert np.allclose(rule_weights("distance", d), [1, math.exp(-0.5), math.exp(-1)])
    assert np.allclose(rule_weights("softmax", d), [math.exp(1 / 0.07), math.exp(0.5 / 0.07), 1.0])
    assert np.allclose(rule_weights("rank", d), [1 / 2, 1 / 3, 1 / 4])


def test_rank_weights_use_given_ranks():
    assert np.allclose(rule_weights("rank", np.zeros(2), ranks=np.array([3, 8])), [1 / 5, 1 / 10])


def test_unknown_rule_names_the_accepted_ones():
    with pytest.raises(ValueError, match="accepted: rank, plurality, distance, softmax"):
        check_rule("median")


@pytest.mark.parametrize(
    "labels, expected_last",
    [
        ([0, 1], 0),  # tie at k=2: class 0 reached 1 first
        ([1, 0], 1),  # the same with class 0 second: 0 is not favoured for being 0
        ([2, 3, 3, 1, 1], 3),  # 3 and 1 tie at 2 votes; 3 got there first
        ([1, 1, 0, 0, 0], 0),  # 0 strictly overtakes
    ],
)
def test_plurality_ties_go_to_the_class_that_reached_the_score_first(labels, expected_last):
    predictions = vote_all_k(np.array([labels]), np.ones((1, len(labels))), 4)
    assert predictions[0, -1] == expected_last


def test_predictions_for_every_prefix_k():
    labels = np.array([[2, 3, 3, 1, 1]])
    assert vote_all_k(labels, np.ones((1, 5)), 4)[0].tolist() == [2, 2, 3, 3, 3]


def test_rank_voting_worked_example():
    # weights 1/2, 1/3, 1/4: class 1 has 1/3 + 1/4 = 7/12 > 1/2 for class 0
    labels, weights, _ = prepare_votes(np.array([[0, 1, 1]]), np.zeros((1, 3)), "rank")
    assert vote_all_k(labels, weights, 2)[0].tolist() == [0, 0, 1]


def test_softmax_favours_a_much_closer_neighbor():
    labels, weights, _ = prepare_votes(np.array([[0, 1, 1]]), np.array([[0.1, 0.4, 0.41]]), "softmax")
    assert vote_all_k(labels, weights, 2)[0, -1] == 0  # exp(0.9/.07) outweighs 2 x exp(0.6/.07)
    labels, weights, _ = prepare_votes(np.array([[0, 1, 1]]), np.array([[0.1, 0.4, 0.41]]), "plurality")
    assert vote_all_k(labels, weights, 2)[0, -1] == 1


@pytest.mark.parametrize("rule", ["rank", "plurality", "distance", "softmax"])
def test_one_pass_matches_naive_reference_on_random_neighbors(rule):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, size=(200, 30))
    distances = np.sort(rng.uniform(0, 1.2, size=(200, 30)), axis=1)
    votes, weights, _ = prepare_votes(labels, distances, rule)
    predictions = vote_all_k(votes, weights, 4)
    for row in range(0, 200, 7):
        for k in (1, 2, 3, 7, 30):
            assert predictions[row, k - 1] == naive_vote(labels[row, :k], weights[row, :k])


def test_class_scores_sum_weights_and_skip_missing():
    scores = class_scores(np.array([[0, 2, -1, 2]]), np.array([[0.5, 0.25, 9.0, 0.125]]), 3)
    assert scores.tolist() == [[0.5, 0.0, 0.375]]


def test_soft_pruning_factor():
    assert soft_pruning_factors(np.array([0, 1, 3])).tolist() == [1.0, 0.875, 0.4375]


def test_soft_pruning_multiplies_weights_where_v_positive():
    _, weights, _ = prepare_votes(np.array([[0, 1]]), np.zeros((1, 2)), VoteSettings(pruning="soft"), np.array([[0, 1]]))
    assert np.allclose(weights, [[1 / 2, 1 / 3 * 0.875]])


def test_hard_pruning_skips_unreliable_and_renumbers_ranks():
    labels = np.array([[0, 1, 1, 0]])
    reliability = np.array([[5, 0, 0, 0]])  # the nearest neighbour is unreliable
    kept, weights, positions = prepare_votes(labels, np.zeros((1, 4)), VoteSettings(pruning="hard", threshold=2), reliability)
    assert kept.tolist() == [[1, 1, 0, -1]]
    assert positions.tolist() == [[1, 2, 3, -1]]
    assert np.allclose(weights, [[1 / 2, 1 / 3, 1 / 4, 0]])  # ranks 0, 1, 2 over the kept ones
    assert vote_all_k(kept, weights, 2)[0, 0] == 1


def test_hard_pruning_threshold_is_inclusive():
    kept, _, _ = prepare_votes(np.array([[0, 1]]), np.zeros((1, 2)), VoteSettings(pruning="hard", threshold=2),
                                np.array([[2, 1]]))
    assert kept.tolist() == [[1, -1]]


def test_pruning_needs_reliability():
    with pytest.raises(ValueError, match="reliability"):
        prepare_votes(np.array([[0]]), np.zeros((1, 1)), VoteSettings(pruning="soft"), None)


def test_compact_kept_preserves_order():
    (out,) = compact_kept(np.array([[False, True, False, True]]), np.array([[1, 2, 3, 4]]))
    assert out.tolist() == [[2, 4, -1, -1]]


def _vote_all_k_one_neighbour_at_a_time(labels, weights, num_classes):
    """The definition of vote_all_k: neighbours added one by one, a class takes the lead on a strictly higher score."""
    labels, weights = np.asarray(labels, np.int64), np.asarray(weights, np.float64)
    n, depth = labels.shape
    scores = np.zeros((n, max(num_classes, 1)))
    out = np.full((n, depth), -1, np.int64)
    for i in range(n):
        leader, leader_score = -1, -np.inf
        for j in range(depth):
            c = labels[i, j]
            if c >= 0:
                scores[i, c] += weights[i, j]
                if scores[i, c] > leader_score:
                    leader, leader_score = c, scores[i, c]
            out[i, j] = leader
    return out


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.integers(0, 12), st.integers(1, 4), st.integers(0, 2**31))
def test_vote_all_k_equals_adding_neighbours_one_by_one(n, depth, num_classes, seed):
    """Ties (integer weights), zero weights and missing neighbours (-1) included."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, num_classes, size=(n, depth))
    weights = rng.integers(0, 3, size=(n, depth)).astype(np.float64)
    if seed % 2:
        weights = 1.0 / (np.arange(depth) + 2.0) * np.ones((n, 1))  # rank weights: float sums in order
    expected = _vote_all_k_one_neighbour_at_a_time(labels, weights, num_classes)
    np.testing.assert_array_equal(vote_all_k(labels, weights, num_classes), expected)
    import vmem_core.voting as voting

    np.testing.assert_array_equal(voting._leaders_step_by_step(labels, weights, num_classes), expected)
