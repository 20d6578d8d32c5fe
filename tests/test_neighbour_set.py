"""The neighbour set: one search answers votes at every k, attribution and dependence, as separate searches and
real deletions would (vmem_core.neighbour_set)."""

from dataclasses import replace

import numpy as np
import pytest

from vmem_core import VisualMemory
from vmem_core.voting import RULES, VoteSettings

from . import helpers  # noqa: F401 - registers the test encoders
from .helpers import freeze_reliability

PRUNINGS = [VoteSettings(k=5, pruning="none"), VoteSettings(k=5, pruning="soft"),
            VoteSettings(k=5, pruning="hard", threshold=3)]


@pytest.fixture
def blobs(tmp_path):
    """150 exemplars of 4 overlapping classes (k=5 is right 84% of the time; v from 0 to 13, so hard pruning at 3
    keeps about 60 of them) and 50 queries."""
    rng = np.random.default_rng(4)
    centres, which = rng.normal(size=(4, 64)), rng.integers(0, 4, 200)
    vectors = centres[which] + 2.5 * rng.normal(size=(200, 64))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    memory = VisualMemory.create(tmp_path / "m", encoder="test-pixels")
    memory.exemplars.add_embeddings(vectors[:150], [f"c{c}" for c in which[:150]])
    yield memory, vectors[150:]
    memory.close()


def _same(a, b) -> None:
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]


@pytest.mark.parametrize("settings", PRUNINGS, ids=lambda s: s.pruning)
def test_one_deep_search_votes_at_every_k_and_rule_as_a_search_at_that_k(blobs, settings):
    memory, queries = blobs
    kept = len(memory.reliability.kept_ids(settings)) if settings.pruning == "hard" else len(memory)
    assert 10 < kept < len(memory) or settings.pruning != "hard"  # hard pruning prunes some and keeps enough
    neighbours = memory.search.neighbour_set(queries, 30, settings)
    assert neighbours.depth == 30
    for rule in RULES:
        for k in (1, 4, 17, 30):
            asked = replace(settings, k=k, rule=rule)
            _same(neighbours.classifications(asked), memory.search.classify_embeddings(queries, asked))


@pytest.mark.parametrize("settings", PRUNINGS, ids=lambda s: s.pruning)
def test_dependent_queries_are_those_whose_prediction_changes_when_the_exemplars_go(blobs, settings, monkeypatch):
    """The Unlearning page's check: from the same neighbours and pruning as the prediction (2k deep), the queries
    that lean on the exemplars and those whose prediction changes without them, against a real deletion."""
    memory, queries = blobs
    freeze_reliability(memory, settings.top_n, monkeypatch)  # held fixed across the deletion, as the set assumes
    neighbours = memory.search.neighbour_set(queries, 2 * settings.k, settings)
    # the exemplars that drove the first three predictions (a set of several, as the page forgets)
    gone = sorted({n.id for r in neighbours.rows([0, 1, 2]).classifications(settings)
                   for n in r.neighbors if n.label == r.label})
    before = memory.search.classify_embeddings(queries, settings)
    leaning = [i for i, r in enumerate(before) if {n.id for n in r.neighbors} & set(gone)]
    memory.exemplars.delete(gone)
    after = memory.search.classify_embeddings(queries, settings)
    memory.exemplars.restore(gone)
    changed = [i for i, (b, a) in enumerate(zip(before, after)) if b.label != a.label]
    assert 0 in leaning and changed  # something leaned on them and something changed: the check tested something
    assert neighbours.voted_by(gone, settings) == leaning
    assert neighbours.changes_without(gone, settings) == changed


def test_hard_pruning_in_the_search_keeps_k_voters_where_the_unpruned_check_did_not(blobs):
    """Under hard pruning the exemplars a query leans on are among the kept ones, farther than the unpruned k
    nearest: the unpruned search (the Unlearning page before the neighbour set) missed them."""
    memory, queries = blobs
    settings = PRUNINGS[2]
    kept = set(memory.reliability.kept_ids(settings).tolist())
    neighbours = memory.search.neighbour_set(queries, settings.k, settings)
    assert set(neighbours.ids.ravel().tolist()) <= kept
    unpruned, _ = memory.search(queries, settings.k)
    voters = neighbours.ids[0]
    assert set(voters) != set(unpruned[0])


def test_a_set_answers_only_the_pruning_it_was_searched_for(blobs):
    memory, queries = blobs
    hard = memory.search.neighbour_set(queries, 6, PRUNINGS[2])
    with pytest.raises(ValueError, match="searched among the exemplars hard pruning keeps"):
        hard.predictions(VoteSettings(k=3))
    plain = memory.search.neighbour_set(queries, 6, VoteSettings())
    with pytest.raises(ValueError, match="needs the neighbours' reliability"):
        plain.predictions(VoteSettings(k=3, pruning="soft"))


def test_attribution_from_the_set_a_page_classified_with(blobs):
    from vmem_core.analysis.attribution import attribute, attribute_set

    memory, queries = blobs
    for settings in PRUNINGS:
        neighbours = memory.search.neighbour_set(queries, settings.k + 1, settings)
        _same(neighbours.classifications(settings), memory.search.classify_embeddings(queries, settings))
        assert attribute_set(neighbours, settings) == attribute(memory, queries, settings)


def test_classifying_resolves_the_settings_once(blobs, monkeypatch):
    import vmem_core.memory.search
    import vmem_core.neighbour_set
    import vmem_core.voting

    memory, queries = blobs
    memory.reliability.kept_ids(PRUNINGS[2])  # reliability and the kept set, computed once per change
    calls = []
    resolve = vmem_core.voting.resolve_settings
    for module in (vmem_core.memory.search, vmem_core.neighbour_set, vmem_core.voting):
        monkeypatch.setattr(module, "resolve_settings", lambda *a, **kw: calls.append(1) or resolve(*a, **kw))
    memory.search.classify_embeddings(queries, PRUNINGS[2], k=4)
    assert len(calls) == 1

