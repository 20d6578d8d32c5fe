"""Every page searches the index once per question per rerun (issue 23), and the Unlearning page's dependent queries
come from the same neighbours and pruning as its prediction."""

import re
import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vmem_core import VisualMemory
from vmem_core.backends.hnsw import HnswlibBackend
from vmem_core.ingest.datasets import scan_dataset
from vmem_core.ingest.images import load_image
from vmem_core.voting import VoteSettings

from .helpers import REPO, SAMPLE, TIMEOUT, freeze_reliability, sample_folder, texts

SPLIT = len(scan_dataset(SAMPLE / "queries"))  # the shipped query split the Evaluate and Unlearning pages use


@pytest.fixture
def searches(monkeypatch) -> list:
    """(queries, k) of every search of the index backend, in order."""
    calls = []
    search = HnswlibBackend.search

    def spy(self, queries, k, *args, **kwargs):
        calls.append((len(queries), int(k)))
        return search(self, queries, k, *args, **kwargs)

    monkeypatch.setattr(HnswlibBackend, "search", spy)
    return calls


def _pruned(app, pruning: str):
    """The sidebar set to `pruning`; the run it takes fills the memory's own caches (reliability, the OOD
    threshold), which search the memory's items once per change, not per question."""
    app.radio(key="pruning").set_value(pruning).run()
    if pruning == "hard":  # the small memory's exemplars have v >= 3; at 9 hard pruning keeps two of them
        app.number_input(key="threshold").set_value(9).run()
    assert not app.exception, app.exception
    return app


@pytest.mark.parametrize("pruning", ["none", "soft", "hard"])
def test_classify_searches_once_per_batch_of_queries(app, searches, pruning):
    samples = [name for name in app.multiselect(key="classify-samples").options if not name.startswith("photo/")]
    app.multiselect(key="classify-samples").set_value(samples[:3])
    _pruned(app, pruning)
    searches.clear()
    app.slider(key="k").set_value(7).run()
    assert not app.exception and app.slider(key="k").value == 7
    assert searches == [(3, 8)]  # the votes at k = 7 and the attribution (k + 1) of all three from one search


@pytest.mark.parametrize("pruning", ["none", "hard"])
def test_evaluate_searches_once_per_evaluation_set_and_k(app, searches, pruning):
    app.switch_page("pages/evaluate.py")
    _pruned(app, pruning)
    searches.clear()
    app.slider(key="k").set_value(7).run()
    assert not app.exception and "Per class and confusion at k=7" in texts(app)
    # the curves and the drill-down at k = 7 read the same K = 100 neighbours, found for the run before (at another
    # k) and remembered: no search at all
    # (after an edit, only the rows it touches are searched again: tests/test_query_rows.py)
    assert searches == []


@pytest.mark.parametrize("pruning", ["none", "soft", "hard"])
def test_unlearning_searches_once_for_the_prediction_and_its_dependent_queries(app, searches, pruning):
    app.switch_page("pages/unlearning.py")
    _pruned(app, pruning)
    searches.clear()
    app.slider(key="k").set_value(7).run()
    assert not app.exception and "among their k=7" in texts(app)
    assert searches == [(1 + SPLIT, 14)]  # the query and the test queries together, 2k deep


def test_unlearning_dependent_queries_follow_hard_pruning(tmp_path, monkeypatch):
    """Under hard pruning the page counts the test queries whose voters (searched among the kept exemplars)
    include the exemplars to forget, and those whose prediction changes without them, as a real deletion on a copy
    of the memory shows (reliability held fixed). Before the neighbour set it counted an unpruned search's."""
    path = tmp_path / "mem"
    with VisualMemory.create(path, encoder="test-pixels") as memory:
        memory.exemplars.build(sample_folder(tmp_path / "data", per_label=6))
    shutil.copytree(path, tmp_path / "copy")
    monkeypatch.setenv("VMEM_MEMORY", str(path))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    app.run()
    app.switch_page("pages/unlearning.py").run()
    app.slider(key="k").set_value(5).run()
    app.radio(key="pruning").set_value("hard").run()
    app.number_input(key="threshold").set_value(7).run()  # keeps 27 of the 60 exemplars
    # forget the exemplars that drove the prediction (ticked here, whatever the box's default)
    (select,) = [m for m in app.multiselect if m.key.startswith("forget-")]
    predicted = next(m.value for m in app.markdown if m.value.startswith("### Prediction: "))[len("### Prediction: "):]
    to_forget = [int(found[1]) for found in (re.match(r"id (\d+) \((.*), rank", o) for o in select.options)
                 if found[2] == predicted]
    assert to_forget
    select.set_value(to_forget).run()
    shown = re.search(r"(\d+) of the (\d+) shipped test queries have at least one of these exemplars among their "
                      r"k=5", texts(app))
    assert shown and int(shown[2]) == SPLIT

    settings = VoteSettings(k=5, pruning="hard", threshold=7)  # and the sidebar's top_n 10
    items = scan_dataset(SAMPLE / "queries")
    with VisualMemory.open(tmp_path / "copy") as copy:
        queries = copy.encoder.encode([load_image(item.path, item.source).image for item in items])
        freeze_reliability(copy, settings.top_n, monkeypatch)  # held fixed, as the page says
        before = copy.search.classify_embeddings(queries, settings)
        leaning = [i for i, r in enumerate(before) if {n.id for n in r.neighbors} & set(to_forget)]
        unpruned, _ = copy.search(queries, settings.k)
        copy.exemplars.delete(to_forget)
        after = copy.search.classify_embeddings(queries, settings)
    changed = [i for i, (b, a) in enumerate(zip(before, after)) if b.label != a.label]
    # the case in point: the unpruned k nearest are not the voters (so the check before counted other queries)
    assert len(leaning) != int(np.isin(unpruned, to_forget).any(axis=1).sum())
    assert int(shown[1]) == len(leaning)
    assert f"without them, {len(changed)} of those predictions change." in texts(app)
