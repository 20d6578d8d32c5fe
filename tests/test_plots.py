"""Figures carry the data they claim to show."""

import numpy as np
import pandas as pd
import pytest

from vmem_core.analysis.evaluate import EvalResult
from vmem_core.analysis.plots import (
    accuracy_vs_k_figure,
    class_scores_figure,
    confusion_matrix_figure,
    memory_size_figure,
    per_class_accuracy_figure,
    readable_log_ticks,
    reliability_histogram,
)
from vmem_core.classification import Classification, Neighbor


def test_class_scores_sorted_with_winner_highlighted():
    result = Classification("cat", {"dog": 0.2, "cat": 0.9, "fox": 0.5}, [Neighbor(1, "cat", 0.1, 0, 0.5)])
    bar = class_scores_figure(result).data[0]
    assert list(bar.y) == ["dog", "fox", "cat"] and np.allclose(bar.x, [0.2 / 1.6, 0.5 / 1.6, 0.9 / 1.6])
    assert bar.marker.color[-1] != bar.marker.color[0]


def test_softmax_scores_read_as_shares_with_the_raw_score_on_hover():
    raw = {"sneaker": 54239.785, "sandal": 18079.9, "bag": 0.3}  # softmax voting's scale
    bar = class_scores_figure(Classification("sneaker", raw, [])).data[0]
    assert np.isclose(sum(bar.x), 1.0) and max(bar.x) < 1
    assert list(bar.customdata) == [0.3, 18079.9, 54239.785]  # raw, in the bars' order
    assert "of the vote" in bar.hovertemplate and "raw score %{customdata" in bar.hovertemplate
    layout = class_scores_figure(Classification("sneaker", raw, [])).layout
    assert list(layout.xaxis.range) == [0, 1] and layout.xaxis.tickformat == ".0%"
    assert layout.xaxis.title.text and layout.yaxis.title.text


@pytest.mark.parametrize("make", [
    lambda: class_scores_figure(Classification("a", {"a": 1.0, "b": 0.5}, [])),
    lambda: per_class_accuracy_figure({"a": 0.75}),
    lambda: reliability_histogram({1: 0, 2: 3}),
    lambda: confusion_matrix_figure(pd.DataFrame([[1]], index=["a"], columns=["a"])),
])
def test_every_figure_has_labelled_axes_and_its_title_below_the_toolbar_strip(make):
    layout = make().layout
    assert layout.xaxis.title.text and layout.yaxis.title.text
    # the title is anchored to the top of the plot area, inside a top margin that leaves the toolbars' strip free
    assert layout.title.yref == "paper" and layout.title.yanchor == "bottom" and layout.margin.t >= 60


def test_log_axes_are_labelled_at_1_2_5_steps_not_at_every_digit():
    frame = pd.DataFrame({"per_class": [8, 8, 16, 32, 64, 100], "seed": [0, 1, 0, 0, 0, 0],
                          "accuracy": [0.5, 0.6, 0.7, 0.75, 0.8, 0.82]})
    axis = memory_size_figure(frame).layout.xaxis
    assert axis.type == "log" and list(axis.ticktext) == ["10", "20", "50", "100"]
    assert readable_log_ticks([8, 9])["ticktext"] == ["8", "9"]  # narrower than a step: the values themselves


def test_accuracy_vs_k_has_a_line_and_best_marker_per_rule():
    result = EvalResult({"rank": np.array([0.5, 0.7, 0.6]), "softmax": np.array([0.4, 0.4, 0.8])}, 10, 3)
    fig = accuracy_vs_k_figure(result)
    lines = [t for t in fig.data if t.mode == "lines"]
    markers = [t for t in fig.data if t.mode == "markers"]
    assert [t.name for t in lines] == ["rank", "softmax"] and list(lines[0].y) == [0.5, 0.7, 0.6]
    assert [(m.x[0], m.y[0]) for m in markers] == [(2, 0.7), (3, 0.8)]
    assert "best-over-k" in fig.layout.title.text


def test_memory_size_spread():
    frame = pd.DataFrame({"per_class": [1, 1, 5, 5], "seed": [0, 1, 0, 1], "accuracy": [0.2, 0.4, 0.7, 0.7]})
    trace = memory_size_figure(frame).data[0]
    assert list(trace.x) == [1, 5] and np.allclose(trace.y, [0.3, 0.7])
    assert np.allclose(trace.error_y.array, [0.1, 0]) and np.allclose(trace.error_y.arrayminus, [0.1, 0])


def test_confusion_and_per_class_and_reliability():
    frame = pd.DataFrame([[3, 1], [0, 4]], index=["a", "b"], columns=["a", "b"])
    heat = confusion_matrix_figure(frame).data[0]
    assert heat.z.tolist() == [[3, 1], [0, 4]] and list(heat.x) == ["a", "b"]
    bar = per_class_accuracy_figure({"a": 0.75, "b": 1.0}).data[0]
    assert list(bar.y) == [0.75, 1.0]
    hist = reliability_histogram({1: 0, 2: 0, 3: 2}).data[0]
    assert list(hist.y) == [2, 0, 1]
    assert list(reliability_histogram(np.array([0, 0, 2])).data[0].y) == [2, 0, 1]  # the v values alone


def test_experiment_figures_carry_the_results(tmp_path):
    from vmem_core.analysis import experiment_plots as ep
    from vmem_core.analysis.experiments import (
        accuracy_and_hit_rate,
        fit_log_error,
        held_out_class_levels,
        label_noise,
        load_taxonomy,
        memory_size_sweep,
        new_classes,
        ood_auroc,
        pruning_comparison,
        reliability_from_loo,
    )
    from vmem_core.analysis.neighbor_cache import build_cache
    from vmem_core.voting import VoteSettings

    from .test_experiments import blobs

    memory, labels, queries, query_labels = blobs(per_class=40)
    cache = build_cache(memory, labels, queries, query_labels, k=20)
    curves = accuracy_and_hit_rate(cache).to_dict()
    fig = ep.accuracy_and_hit_rate_figure(curves)
    assert list(fig.data[0].y) == curves["hit_rate"] and len(fig.data) == 1 + 2 * 4
    assert fig.data[2].x[0] == curves["best_over_k"]["rank"]["k"]

    frame = memory_size_sweep(cache, [1, 10, 40], seeds=[0, 1], rules=["rank", "softmax"], settings=VoteSettings(k=5))
    sizes = {"k": 5, "rows": frame.to_dict("records"),
             "fit": {r: fit_log_error(frame, r).to_dict() for r in ("rank", "softmax")}}
    fig = ep.memory_size_error_figure(sizes)
    rank_errors = 1 - frame[frame.rule == "rank"].groupby("exemplars")["accuracy"].mean()
    assert np.allclose(fig.data[0].y, rank_errors.to_numpy()) and fig.layout.yaxis.type == "log"
    assert "slope" in fig.data[1].name

    new = new_classes(cache, ["c3"], settings=VoteSettings(k=5)).to_dict()
    fig = ep.new_classes_figure(new)
    assert [t.name for t in fig.data] == ["old classes, before", "old classes, after", "new classes, after"]
    assert fig.data[2].y[0] == new["new_after"]["rank"]

    v = reliability_from_loo(build_cache(memory, labels, k=10))
    pruned = pruning_comparison(cache, v, settings=VoteSettings(threshold=3)).to_dict(5)
    fig = ep.pruning_figure(pruned, 5)
    assert [t.name for t in fig.data] == ["none", "hard", "soft"]
    assert fig.data[1].y[0] == pruned["accuracy_at_k5"]["hard"]["rank"]

    noise = {"k": 5, "rows": label_noise(cache, [0, 0.5], settings=VoteSettings(k=5)).to_dict("records")}
    fig = ep.noise_figure(noise)
    assert list(fig.data[0].x) == [0, 0.5] and len(fig.data) == 4

    path = tmp_path / "t.csv"
    path.write_text("class,group\nc0,a\nc1,a\nc2,b\nc3,b\n")
    taxonomy = load_taxonomy(path)
    held = held_out_class_levels(cache, taxonomy, "c3", [0, 2], seeds=[0])
    rows = held.groupby(["added", "level"], sort=False)["accuracy"].mean().unstack().reset_index()
    fig = ep.taxonomy_figure({"levels": ["class", "group"], "held_out": "c3", "held_out_k1": rows.to_dict("records")})
    assert list(fig.data[0].x) == ["0", "2"] and fig.data[0].y[0] == 0.0

    ood = ood_auroc(cache, ["c3"]).to_dict()
    fig = ep.ood_figure(ood, "held-out c3")
    assert sum(fig.data[1].y) == pytest.approx(1.0, abs=1e-4) and f"{ood['auroc']:.3f}" in fig.layout.title.text
