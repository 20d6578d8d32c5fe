"""VoteSettings: how to vote, as one value: its defaults (the only ones), its checks, and every surface reading it."""

import math

import numpy as np
import pytest

from vmem_core import BadSettingError, VmemError, VoteSettings
from vmem_core.analysis.experiments import DEFAULT_FIXED_K
from vmem_core.analysis.registry import ExperimentOptions
from vmem_core.cli import build_parser
from vmem_core.cli.common import vote_settings
from vmem_core.voting import (
    DEFAULT_HARD_THRESHOLD,
    DEFAULT_K,
    DEFAULT_RELIABILITY_TOP_N,
    EXPLAIN_K,
    RANK_OFFSET,
    SOFTMAX_TEMPERATURE,
    label_classes,
    prepare_votes,
    reliability_counts,
    resolve_settings,
    rule_weights,
)

from .helpers import new_memory


def test_defaults_are_the_papers():
    settings = VoteSettings()
    assert (settings.k, settings.rule, settings.pruning, settings.threshold, settings.top_n) == (
        DEFAULT_K, "rank", "none", DEFAULT_HARD_THRESHOLD, DEFAULT_RELIABILITY_TOP_N) == (50, "rank", "none", 2.0, 10)
    assert (settings.rank_offset, settings.temperature) == (RANK_OFFSET, SOFTMAX_TEMPERATURE) == (2.0, 0.07)
    assert ExperimentOptions().vote == VoteSettings(k=DEFAULT_FIXED_K)


@pytest.mark.parametrize("command, k", [("classify", DEFAULT_K), ("attribute", EXPLAIN_K), ("eval", DEFAULT_FIXED_K)])
def test_the_cli_reads_its_defaults_from_the_settings(command, k):
    args = build_parser().parse_args([command, "MEM", "x"])
    assert vote_settings(args) == VoteSettings(k=k)


def test_the_cli_turns_its_options_into_one_settings_object():
    args = build_parser().parse_args(["classify", "MEM", "x", "--k", "7", "--voting", "softmax", "--pruning", "hard",
                                      "--threshold", "3", "--top-n", "4"])
    assert vote_settings(args) == VoteSettings(k=7, rule="softmax", pruning="hard", threshold=3, top_n=4)


def test_the_app_sidebar_gives_the_same_object():
    from vmem_core import ui

    assert ui.Settings is VoteSettings
    assert ui.RULE_HELP == {"rank": "rank: 1/(rank+2) (default)", "plurality": "plurality: 1 each",
                            "distance": "distance: exp(-d)", "softmax": "softmax: exp((1-d)/0.07)"}


@pytest.mark.parametrize("field, value, accepted", [
    ("k", 0, "a whole number of at least 1"),
    ("k", 2.5, "a whole number of at least 1"),
    ("k", True, "a whole number of at least 1"),
    ("rule", "median", "accepted: rank, plurality, distance, softmax"),
    ("pruning", "some", "accepted: none, hard, soft"),
    ("threshold", 0.5, "a number of at least 1"),
    ("threshold", float("nan"), "a number of at least 1"),
    ("threshold", "2", "a number of at least 1"),
    ("top_n", 0, "a whole number of at least 1"),
    ("rank_offset", 0, "a finite number above 0"),
    ("temperature", -0.07, "a finite number above 0"),
    ("temperature", math.inf, "a finite number above 0"),
])
def test_a_bad_value_is_refused_with_what_is_accepted(field, value, accepted):
    with pytest.raises(BadSettingError) as caught:
        VoteSettings(**{field: value})
    assert repr(value) in str(caught.value) and accepted in str(caught.value)
    assert isinstance(caught.value, VmemError) and isinstance(caught.value, ValueError)  # one CLI line; a ValueError


def test_values_are_stored_canonically_so_equal_settings_are_equal():
    settings = VoteSettings(k=np.int64(5), rule="RankVoting", threshold=3, top_n=np.int32(4))
    assert settings == VoteSettings(k=5, rule="rank", threshold=3.0, top_n=4)
    assert hash(settings) == hash(VoteSettings(k=5, threshold=3.0, top_n=4))
    assert type(settings.k) is int and type(settings.threshold) is float and settings.rule == "rank"
    with pytest.raises(AttributeError):
        settings.k = 6  # frozen: a settings object can be shared and cached


def test_keywords_still_work_where_the_public_api_took_them():
    assert resolve_settings(k=3, voting="softmax") == VoteSettings(k=3, rule="softmax")
    assert resolve_settings(VoteSettings(k=3, pruning="soft"), rule="distance") == VoteSettings(
        k=3, rule="distance", pruning="soft")
    with pytest.raises(BadSettingError, match="unknown voting setting.*'?kk'?; accepted: k, rule, pruning"):
        resolve_settings(kk=3)
    with pytest.raises(BadSettingError, match="give the rule once"):
        resolve_settings(rule="rank", voting="rank")
    with pytest.raises(BadSettingError, match="settings must be a VoteSettings, got int 5"):
        resolve_settings(5)


def test_rule_parameters_change_the_weights():
    d = np.array([0.1, 0.2, 0.3])
    assert np.allclose(rule_weights("rank", d, settings=VoteSettings(rank_offset=1)), [1, 1 / 2, 1 / 3])
    assert np.allclose(rule_weights("softmax", d, settings=VoteSettings(temperature=0.5)), np.exp((1 - d) / 0.5))
    _, weights, _ = prepare_votes(np.array([[0, 1]]), np.zeros((1, 2)), VoteSettings(rank_offset=3))
    assert np.allclose(weights, [[1 / 3, 1 / 4]])
    assert VoteSettings(rank_offset=3, temperature=0.1).formula("rank") == "1/(rank+3)"
    assert VoteSettings(temperature=0.1).formula("softmax") == "exp((1-d)/0.1)"


def test_a_memory_votes_with_the_settings_it_is_given(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 64))
    with new_memory(tmp_path / "m") as mem:
        mem.exemplars.add_embeddings(vectors, ["a" if i % 2 else "b" for i in range(20)])
        query = vectors[:1] + 0.01
        [by_keywords] = mem.search.classify_embeddings(query, k=4, voting="plurality")
        [by_object] = mem.search.classify_embeddings(query, VoteSettings(k=4, rule="plurality"))
        assert by_keywords == by_object and [n.weight for n in by_object.neighbors] == [1.0] * 4
        [offset] = mem.search.classify_embeddings(query, VoteSettings(k=4, rank_offset=1))
        assert [n.weight for n in offset.neighbors] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
        with pytest.raises(BadSettingError, match="k 0 is not accepted"):
            mem.search.classify_embeddings(query, k=0)


def test_label_classes_is_the_one_label_to_index_map():
    assert label_classes(["coat", "bag", "hat"], ("bag", "coat"), missing=-2).tolist() == [1, 0, -2]
    assert label_classes([], ("bag",)).shape == (0,)


def test_reliability_counts_against_a_naive_count():
    rng = np.random.default_rng(3)
    ids = rng.permutation(200)[:40] * 3  # unsorted, not 0..n-1
    classes = rng.integers(0, 3, size=40)
    neighbors = np.where(rng.random((40, 6)) < 0.1, -1, ids[rng.integers(0, 40, size=(40, 6))])
    naive = {int(i): 0 for i in ids}
    for row, item_class in enumerate(classes):
        for other in neighbors[row]:
            if other >= 0 and classes[list(ids).index(other)] != item_class:
                naive[int(other)] += 1
    assert reliability_counts(ids, classes, neighbors).tolist() == [naive[int(i)] for i in ids]
