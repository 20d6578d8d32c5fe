"""From an evaluation error to its cause: a cell's queries, the neighbours that drove them, and a diff of two runs."""

import numpy as np
import pandas as pd
import pytest

from vmem_core import VmemError
from vmem_core.analysis.error_drilldown import ANY_WRONG, NO_PREDICTION, EvaluationRun, cell_queries, changes_table
from vmem_core.analysis.error_drilldown import compare_runs, evaluation_run, selected_cell, voters
from vmem_core.analysis.plots import confusion_matrix_figure, per_class_accuracy_figure
from vmem_core.classification import Classification
from vmem_core.voting import VoteSettings

from .helpers import new_memory

DIM = 64
K1 = VoteSettings(k=1, rule="plurality")


def unit(*parts: tuple[int, float]) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    for axis, value in parts:
        vector[axis] = value
    return vector / np.linalg.norm(vector)


@pytest.fixture
def planted(tmp_path):
    """Cats around axis 0, dogs around axis 1, and one exemplar labelled dog planted among the cats.

    Queries: a cat that sits on the planted exemplar (wrong: "dog"), a dog that sits on it too (right, by luck), a
    plain dog and a plain cat (right). Deleting the planted exemplar fixes the first and breaks the second."""
    memory = new_memory(tmp_path / "mem")
    cats = [unit((0, 1), (10 + i, 0.2)) for i in range(3)]
    dogs = [unit((1, 1), (20 + i, 0.2)) for i in range(3)]
    memory.exemplars.add_embeddings(np.stack(cats + dogs), ["cat"] * 3 + ["dog"] * 3)
    (planted_id,) = memory.exemplars.add_embeddings(unit((0, 1), (5, 0.3))[None], ["dog"])
    queries = np.stack([unit((0, 1), (5, 0.3), (6, 0.01)), unit((0, 1), (5, 0.3), (7, 0.01)),
                        unit((1, 1), (21, 0.1)), unit((0, 1), (11, 0.1))])
    truth = ["cat", "dog", "dog", "cat"]
    names = ["cat-on-plant.png", "dog-on-plant.png", "dog.png", "cat.png"]
    yield memory, planted_id, queries, truth, names
    memory.close()


def test_a_run_keeps_each_querys_prediction_and_the_memorys_change_counter(planted):
    memory, _, queries, truth, names = planted
    run = evaluation_run(memory, queries, truth, names, K1)
    assert run.predicted == ["dog", "dog", "dog", "cat"]
    assert run.correct.tolist() == [False, True, True, True] and run.accuracy == 0.75
    assert run.change_counter == memory.change_counter and run.names == tuple(names)


def test_the_cell_filter_lists_exactly_the_queries_of_a_cell(planted):
    memory, _, queries, truth, names = planted
    run = evaluation_run(memory, queries, truth, names, K1)
    assert cell_queries(run, "cat", "dog") == [0]
    assert cell_queries(run, "cat", ANY_WRONG) == [0]
    assert cell_queries(run, "dog", "dog") == [1, 2]
    assert cell_queries(run, "cat", "cat") == [3]
    assert cell_queries(run, "dog", "cat") == [] and cell_queries(run, "dog", ANY_WRONG) == []


def test_queries_nobody_voted_for_are_their_own_cell():
    results = tuple(Classification(p, {}, []) for p in (None, "cat", "dog", None))
    run = EvaluationRun(("a", "b", "c", "d"), ("cat", "cat", "cat", "dog"), results, K1, 0)
    assert cell_queries(run, "cat", NO_PREDICTION) == [0]
    assert cell_queries(run, "cat", ANY_WRONG) == [0, 2]  # no prediction is an error too
    assert cell_queries(run, "dog", NO_PREDICTION) == [3]


def test_the_planted_exemplar_is_the_driver_of_the_wrong_prediction(planted):
    memory, planted_id, queries, truth, names = planted
    (result,) = evaluation_run(memory, queries[:1], truth[:1], names[:1], K1).results
    (only,) = voters(result)
    assert only.neighbor.id == planted_id and only.drove and only.share_of_win == 1.0 and only.share_of_vote == 1.0
    (result,) = evaluation_run(memory, queries[:1], truth[:1], names[:1], VoteSettings(k=2, rule="rank")).results
    rows = voters(result)
    assert result.label == "dog" and rows[0].neighbor.id == planted_id  # rank 0 outweighs the cat at rank 1
    assert [r.drove for r in rows] == [True, False] and rows[1].neighbor.label == "cat"  # drivers first
    assert sum(r.share_of_win for r in rows) == pytest.approx(1.0)
    assert sum(r.share_of_vote for r in rows) == pytest.approx(1.0)
    assert all((r.neighbor.label == "dog") == r.drove for r in rows)


def test_deleting_the_driver_fixes_one_query_and_breaks_another(planted):
    memory, planted_id, queries, truth, names = planted
    before = evaluation_run(memory, queries, truth, names, K1)
    memory.exemplars.delete([planted_id])
    after = evaluation_run(memory, queries, truth, names, K1)
    diff = compare_runs(before, after)
    assert [(c.name, c.before, c.after) for c in diff.fixed] == [("cat-on-plant.png", "dog", "cat")]
    assert [(c.name, c.before, c.after) for c in diff.broken] == [("dog-on-plant.png", "dog", "cat")]
    assert diff.moved == []
    assert changes_table(diff.fixed).to_dict("records") == [{"query": "cat-on-plant.png", "true": "cat",
                                                             "before": "dog", "now": "cat"}]
    assert list(changes_table(diff.moved).columns) == ["query", "true", "before", "now"]  # even when empty
    assert diff.summary() == (f"1 fixed, 1 broken (accuracy 75.0% -> 75.0%; change #{before.change_counter} -> "
                              f"#{after.change_counter})")
    assert after.change_counter > before.change_counter


def test_relabelling_the_driver_is_seen_the_same_way(planted):
    memory, planted_id, queries, truth, names = planted
    before = evaluation_run(memory, queries, truth, names, K1)
    memory.exemplars.relabel([planted_id], "cat")
    diff = compare_runs(before, evaluation_run(memory, queries, truth, names, K1))
    assert [c.index for c in diff.fixed] == [0] and [c.index for c in diff.broken] == [1]


def test_a_wrong_query_that_stays_wrong_with_another_label_is_moved_not_fixed():
    runs = [EvaluationRun(("a", "b"), ("cat", "dog"), tuple(Classification(p, {}, []) for p in guesses), K1, n)
            for n, guesses in enumerate([("dog", "dog"), ("fox", "dog")])]
    diff = compare_runs(*runs)
    assert diff.fixed == [] and diff.broken == [] and [(c.before, c.after) for c in diff.moved] == [("dog", "fox")]


def test_runs_over_different_queries_are_refused(planted):
    memory, _, queries, truth, names = planted
    run = evaluation_run(memory, queries, truth, names, K1)
    other = evaluation_run(memory, queries[:2], truth[:2], names[:2], K1)
    with pytest.raises(VmemError, match="different queries"):
        compare_runs(run, other)


def test_a_run_needs_one_label_and_one_name_per_query(planted):
    memory, _, queries, truth, names = planted
    with pytest.raises(VmemError, match="4 embeddings, 3 labels, 4 names"):
        evaluation_run(memory, queries, truth[:3], names, K1)


def test_a_click_on_a_cell_or_a_bar_names_the_cell_it_was_drawn_for():
    frame = pd.DataFrame([[3, 1], [0, 4]], index=["cat", "dog"], columns=["cat", "dog"])
    cells = confusion_matrix_figure(frame).data[1]
    assert [list(c) for c in cells.customdata] == [["cat", "cat"], ["cat", "dog"], ["dog", "cat"], ["dog", "dog"]]
    assert list(cells.x) == ["cat", "dog", "cat", "dog"] and list(cells.y) == ["cat", "cat", "dog", "dog"]
    assert list(cells.text) == ["3", "1", "0", "4"]
    # Streamlit's selection event gives the clicked point's customdata back as a list
    assert selected_cell([{"x": "dog", "y": "cat", "customdata": list(cells.customdata[1])}]) == ("cat", "dog")
    bars = per_class_accuracy_figure({"cat": 0.75, "dog": 1.0}).data[0]
    assert selected_cell([{"x": "dog", "customdata": list(bars.customdata[1])}]) == ("dog", ANY_WRONG)


@pytest.mark.parametrize("points", [None, [], [{"x": 1, "y": 2}], [{"customdata": [3]}], [{"customdata": 7}]])
def test_a_selection_that_names_no_cell_selects_nothing(points):
    assert selected_cell(points) is None
