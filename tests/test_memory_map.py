"""The map of the memory: its projection, query placement, "more like this", and the figure."""

import numpy as np
import plotly.graph_objects as go
import pytest

from vmem_core import UnknownIdError
from vmem_core.analysis.memory_map import (
    map_labels,
    memory_map,
    more_like_this,
    pca_projection,
    place_queries,
    selected_ids,
)
from vmem_core.analysis.plots import label_colours, memory_map_figure

from .helpers import clustered, new_memory


@pytest.fixture
def memory(tmp_path):
    vectors, labels = clustered(120, seed=3)
    with new_memory(tmp_path / "m") as mem:
        mem.exemplars.add_embeddings(vectors, labels)
        yield mem


def test_projection_has_a_point_per_live_exemplar(memory):
    projection = memory_map(memory, "pca")
    assert projection.method == "pca" and projection.points.shape == (120, 2)
    assert np.array_equal(projection.ids, np.sort(memory.exemplars.embeddings()[0]))
    assert np.isfinite(projection.points).all() and projection.points.std(axis=0).min() > 0
    # the first axis spreads the points at least as much as the second (principal axes in order)
    assert projection.points[:, 0].var() >= projection.points[:, 1].var()


def test_projection_is_cached_until_the_memory_changes(memory, monkeypatch):
    first = memory_map(memory, "pca")
    assert memory_map(memory, "pca") is first
    memory.exemplars.delete([5])
    second = memory_map(memory, "pca")
    assert second is not first and 5 not in second.ids and len(second) == 119
    assert memory_map(memory, "pca") is second


def test_queries_land_where_their_exemplars_are(memory):
    projection = memory_map(memory, "pca")
    ids, vectors = memory.exemplars.embeddings([7, 42])
    assert np.allclose(place_queries(memory, vectors, "pca"), projection.points_of(ids))
    # a query near an exemplar is placed near that exemplar's point, nearer than the map's typical spread
    nudged = vectors[0] + 0.01 * np.random.default_rng(0).normal(size=vectors.shape[1])
    nudged /= np.linalg.norm(nudged)
    gap = np.linalg.norm(projection.place(nudged)[0] - projection.points_of([7])[0])
    assert gap < 0.1 * projection.points.std()


def test_pca_of_tiny_memories():
    assert pca_projection(np.array([], np.int64), np.zeros((0, 4))).points.shape == (0, 2)
    one = pca_projection(np.array([3]), np.ones((1, 4)))
    assert one.points.shape == (1, 2) and np.allclose(one.points, 0)


def test_more_like_this_leaves_itself_out_nearest_first(memory):
    similar, distances = more_like_this(memory, 11, k=5)
    assert len(similar) == 5 and 11 not in similar
    assert np.all(np.diff(distances) >= 0)
    ids, vectors = memory.exemplars.embeddings()
    own = vectors[np.searchsorted(ids, 11)]
    exact = 1 - vectors @ own
    exact[np.searchsorted(ids, 11)] = np.inf
    assert set(similar) == set(ids[np.argsort(exact)[:5]])
    memory.exemplars.delete([11])
    with pytest.raises(UnknownIdError):
        more_like_this(memory, 11)


def test_figure_colours_points_by_label(memory):
    projection = memory_map(memory, "pca")
    labels = map_labels(memory, projection)
    fig = memory_map_figure(projection, labels)
    assert all(isinstance(trace, go.Scattergl) for trace in fig.data)
    assert sum(len(t.x) for t in fig.data) == 120
    colours = label_colours(labels)
    assert len(set(colours.values())) == len(colours) == len(set(labels))
    for trace in fig.data:  # a trace per label, its colour, its ids in customdata, hover with id and label
        assert trace.marker.color == colours[trace.name]
        assert {labels[list(projection.ids).index(i)] for i in trace.customdata} == {trace.name}
        assert "id %{customdata}" in trace.hovertemplate and "%{fullData.name}" in trace.hovertemplate


def test_figure_colours_points_by_reliability(memory):
    projection = memory_map(memory, "pca")
    v = memory.reliability(10)
    fig = memory_map_figure(projection, map_labels(memory, projection), "reliability", v)
    (trace,) = fig.data
    assert isinstance(trace, go.Scattergl) and len(trace.x) == 120
    assert list(trace.marker.color) == [v.get(int(i), 0) for i in projection.ids]
    assert trace.marker.showscale


def test_figure_draws_the_query_with_lines_to_its_neighbors(memory):
    projection = memory_map(memory, "pca")
    query = memory.exemplars.embeddings([9])[1][0]
    result = memory.search.classify_embeddings(query[None], k=4)[0]
    neighbors = [n.id for n in result.neighbors]
    point = projection.place(query)[0]
    fig = memory_map_figure(projection, map_labels(memory, projection), query_point=point, neighbor_ids=neighbors)
    lines, star = fig.data[-2], fig.data[-1]
    assert star.name == "query" and (star.x[0], star.y[0]) == tuple(point)
    assert lines.mode == "lines" and len(lines.x) == 3 * len(neighbors)  # query -> neighbour, then a gap
    ends = np.array([[lines.x[i + 1], lines.y[i + 1]] for i in range(0, len(lines.x), 3)])
    assert np.allclose(ends, projection.points_of(neighbors))
    assert all(lines.x[i] == point[0] for i in range(0, len(lines.x), 3))
    assert sum(len(t.x) for t in fig.data[:-2]) == 120  # the exemplars are all still there


def test_selected_points_map_back_to_exemplar_ids(memory):
    projection = memory_map(memory, "pca")
    fig = memory_map_figure(projection, map_labels(memory, projection), query_point=(0, 0), neighbor_ids=[1])
    first, second = fig.data[0], fig.data[1]
    points = [{"curve_number": 0, "point_index": 2}, {"curve_number": 1, "point_index": 0},
              {"curve_number": 0, "point_index": 2}, {"curve_number": len(fig.data) - 1, "point_index": 0}]
    assert selected_ids(fig, points) == [int(first.customdata[2]), int(second.customdata[0])]
    assert selected_ids(fig, None) == []


def test_umap_is_used_only_where_installed(memory, monkeypatch):
    from vmem_core import VmemError
    from vmem_core.analysis import memory_map as module

    monkeypatch.setattr(module, "umap_available", lambda: False)
    with pytest.raises(VmemError, match="umap-learn"):
        memory_map(memory, "umap")
    with pytest.raises(VmemError, match="'tsne'.*pca, umap"):
        memory_map(memory, "tsne")


def test_pca_is_the_default_even_where_umap_is_installed(memory, monkeypatch):
    from vmem_core.analysis import memory_map as module

    monkeypatch.setattr(module, "umap_available", lambda: True)
    assert memory_map(memory).method == "pca"  # a page opens on the fast projection; UMAP is a choice


def test_pca_by_covariance_for_many_exemplars_matches_the_svd():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 8)) * np.arange(1, 9)  # 300 > 2 x 8: the covariance path
    projection = pca_projection(np.arange(300), vectors)
    _, _, vt = np.linalg.svd(vectors - vectors.mean(axis=0), full_matrices=False)
    assert np.allclose(np.abs(projection.components), np.abs(vt[:2]))
    few = pca_projection(np.arange(10), vectors[:10])  # the SVD path, signs fixed the same way
    assert np.allclose(few.points, pca_projection(np.arange(10)[::-1], vectors[:10][::-1]).points)


def test_deleted_exemplars_are_placed_where_they_were_and_selected_apart(memory):
    from vmem_core.analysis.memory_map import deleted_points, selected_deleted_ids

    before = memory_map(memory, "pca").points_of([5, 6])
    memory.exemplars.delete([5, 6])
    ids, points = deleted_points(memory, "pca")
    assert deleted_points(memory, "pca")[0] is ids  # cached until the next change
    assert ids.tolist() == [5, 6] and points.shape == (2, 2)
    # placed on the new map, where those embeddings project (the same place as a query with them would land)
    assert np.allclose(points, memory_map(memory, "pca").place(memory.exemplars.stored_embeddings([5, 6])[1]))
    assert not np.allclose(before, 0)
    projection = memory_map(memory, "pca")
    fig = memory_map_figure(projection, map_labels(memory, projection), deleted=(ids, points))
    gone = fig.data[-1]
    assert gone.name == "deleted (not purged)" and list(gone.x) == list(points[:, 0])
    curve = len(fig.data) - 1
    # a selection over live and deleted points: the live ones to edit, the deleted ones to restore, never mixed
    picked = [{"curve_number": curve, "point_index": 1}, {"curve_number": 0, "point_index": 0}]
    live = int(fig.data[0].customdata[0])
    assert selected_ids(fig, picked) == [live]
    assert selected_deleted_ids(fig, picked) == [6]
    assert selected_deleted_ids(fig, [{"curve_number": 0, "point_index": 0}]) == []


def test_umap_projection_is_seeded_placeable_and_cached(memory):
    pytest.importorskip("umap", reason="umap-learn is optional at run time (requirements-test.txt installs it)")
    from vmem_core.analysis.memory_map import umap_projection

    ids, vectors = memory.exemplars.embeddings()
    first, again = umap_projection(ids[::-1], vectors[::-1], seed=7), umap_projection(ids, vectors, seed=7)
    assert first.method == "umap" and first.points.shape == (120, 2) and np.isfinite(first.points).all()
    assert np.array_equal(first.ids, np.sort(ids))  # sorted by id whatever order the rows came in
    assert np.allclose(first.points, again.points)  # the same seed draws the same map
    # the clusters stay apart: each point's nearest other point on the map mostly shares its label
    labels = np.array(map_labels(memory, first))
    gaps = np.linalg.norm(first.points[:, None] - first.points[None], axis=2) + np.diag(np.full(120, np.inf))
    assert (labels[gaps.argmin(axis=1)] == labels).mean() > 0.9
    assert first.place(vectors[:3]).shape == (3, 2)

    cached = memory_map(memory, "umap")
    assert cached.method == "umap" and memory_map(memory, "umap") is cached
    assert memory_map(memory) is not cached and memory_map(memory).method == "pca"  # the default, cached apart
    memory.exemplars.delete([5])
    redrawn = memory_map(memory, "umap")
    assert redrawn is not cached and 5 not in redrawn.ids and len(redrawn) == 119


def test_a_large_memory_keeps_its_axes_through_a_small_change(memory, monkeypatch):
    import vmem_core.analysis.memory_map as memory_map_module

    monkeypatch.setattr(memory_map_module, "EXACT_PCA_BELOW", 10)  # this memory counts as large
    monkeypatch.setattr(memory_map_module, "REFIT_AFTER_CHANGE", 0.05)
    first = memory_map(memory, "pca")
    memory.exemplars.delete([5])
    calls = []
    monkeypatch.setattr(memory_map_module, "pca_projection", lambda *a: calls.append(a))
    second = memory_map(memory, "pca")
    assert not calls and 5 not in second.ids and len(second) == len(first) - 1
    assert np.array_equal(second.points_of([7]), first.points_of([7]))  # the same axes: points stay put
    memory.exemplars.delete(list(range(20, 40)))  # far more than 5% of the memory: fitted again
    assert memory_map(memory, "pca") is None  # the stub's answer: a refit was asked for
    assert len(calls) == 1


def test_a_map_fitted_in_the_background_is_the_one_the_page_gets(memory, monkeypatch):
    import time

    import vmem_core.analysis.memory_map as memory_map_module
    from vmem_core.analysis.memory_map import map_in_background

    fits = []
    real = memory_map_module.pca_projection

    def slow_fit(*args):
        fits.append(1)
        time.sleep(0.3)  # the page asks while this fit is running
        return real(*args)

    monkeypatch.setattr(memory_map_module, "pca_projection", slow_fit)
    thread = map_in_background(memory)
    time.sleep(0.05)
    projection = memory_map(memory, "pca")  # waits for the background fit instead of fitting again
    thread.join()
    assert fits == [1] and memory_map(memory, "pca") is projection
    expected = real(*memory.exemplars.embeddings())
    assert np.array_equal(projection.ids, expected.ids) and np.allclose(projection.points, expected.points)
