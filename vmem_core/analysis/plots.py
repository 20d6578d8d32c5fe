"""Plotly figure builders. Pages only display these; tests check their data."""

from __future__ import annotations

from typing import Mapping, Optional, Union

import numpy as np
import plotly.graph_objects as go

from ..classification import Classification
from .error_drilldown import ANY_WRONG
from .evaluate import EvalResult

DELETED_TRACE = "deleted-exemplars"  # the `meta` of the map's trace of deleted exemplars (memory_map reads it)

WINNER = "#1f77b4"
OTHER = "#c7c7c7"
RULE_COLOURS = {"rank": "#1f77b4", "plurality": "#ff7f0e", "distance": "#2ca02c", "softmax": "#d62728"}
# The title sits just above the plot area, left-aligned, below the top strip where plotly's and Streamlit's toolbars
# appear on hover (a title at the very top, plotly's default, is covered by them in a narrow column).
_LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=72, b=10), title_x=0, title_xanchor="left",
               title_y=1, title_yref="paper", title_yanchor="bottom", title_pad_b=10, title_automargin=True)


def readable_log_ticks(values) -> dict:
    """Axis settings that label a log axis at 1-2-5 steps within the values' range, written plainly (plotly's own
    log ticks read "8 9 1 2 3 ... 10 2 3" over a short range). Pass to `update_xaxes` / `update_yaxes`.

    >>> readable_log_ticks([3, 40])["tickvals"]
    [5.0, 10.0, 20.0]
    >>> readable_log_ticks([0.004, 0.03])["ticktext"]
    ['0.005', '0.01', '0.02']
    """
    values = np.asarray([v for v in np.ravel(values) if np.isfinite(v) and v > 0], dtype=float)
    if not len(values):
        return {}
    low, high = values.min(), values.max()
    ticks = [m * 10.0 ** e for e in range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
             for m in (1, 2, 5) if low <= m * 10.0 ** e <= high]
    if len(ticks) < 2:  # a range narrower than one 1-2-5 step: label the values themselves
        ticks = sorted({float(f"{v:.3g}") for v in values})
    ticks = [float(f"{t:.3g}") for t in ticks]
    return dict(type="log", tickmode="array", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def vote_shares(scores: Mapping[str, float]) -> dict[str, float]:
    """Each class's share of the total vote, so that every rule reads on one scale (softmax's raw scores reach
    the hundreds of thousands).

    >>> vote_shares({"cat": 3.0, "dog": 1.0})
    {'cat': 0.75, 'dog': 0.25}
    """
    total = sum(scores.values())
    return {label: (score / total if total else 0.0) for label, score in scores.items()}


def class_scores_figure(result: Classification, title: Optional[str] = None) -> go.Figure:
    """Horizontal bars of each class's share of the vote, highest on top, the predicted class highlighted; the raw
    score on hover."""
    items = sorted(result.scores.items(), key=lambda kv: kv[1])
    labels = [label for label, _ in items]
    shares = vote_shares(result.scores)
    fig = go.Figure(
        go.Bar(
            x=[shares[label] for label in labels], y=labels, orientation="h",
            marker_color=[WINNER if label == result.label else OTHER for label in labels],
            customdata=[score for _, score in items],
            hovertemplate="%{y}: %{x:.1%} of the vote (raw score %{customdata:.4g})<extra></extra>",
        )
    )
    fig.update_layout(title=title or f"Share of the vote (prediction: {result.label})",
                      xaxis_title="share of the vote (all classes sum to 100%)", yaxis_title="class",
                      xaxis_tickformat=".0%", xaxis_range=[0, 1], height=150 + 28 * len(labels), **_LAYOUT)
    return fig


def accuracy_vs_k_figure(result: EvalResult) -> go.Figure:
    """One line per voting rule over k = 1..K, best-over-k marked on each."""
    fig = go.Figure()
    best = result.best()
    for rule, curve in result.accuracy.items():
        ks = np.arange(1, len(curve) + 1)
        colour = RULE_COLOURS.get(rule)
        fig.add_trace(go.Scatter(x=ks, y=curve, mode="lines", name=rule, line=dict(color=colour)))
        if rule in best:
            fig.add_trace(go.Scatter(
                x=[best[rule]["k"]], y=[best[rule]["accuracy"]], mode="markers", marker=dict(color=colour, size=9),
                name=f"{rule} best-over-k", showlegend=False,
                hovertemplate=f"{rule}: best-over-k k=%{{x}}, accuracy %{{y:.3f}}<extra></extra>",
            ))
    fig.update_layout(title=f"Accuracy vs k ({result.queries} queries; dots: best-over-k)", xaxis_title="k",
                      yaxis_title="accuracy", **_LAYOUT)
    return fig


def memory_size_figure(frame) -> go.Figure:
    """Mean accuracy per exemplars-per-class with the min-max spread over seeds as error bars (log x axis)."""
    summary = frame.groupby("per_class")["accuracy"].agg(["mean", "min", "max", "count"]).reset_index()
    fig = go.Figure(go.Scatter(
        x=summary["per_class"], y=summary["mean"], mode="lines+markers", name="mean over seeds",
        error_y=dict(type="data", symmetric=False, array=summary["max"] - summary["mean"],
                     arrayminus=summary["mean"] - summary["min"]),
        customdata=summary["count"], hovertemplate="%{x} per class: %{y:.3f} (%{customdata} seeds)<extra></extra>",
    ))
    fig.update_layout(title="Accuracy vs memory size (bars: min-max over seeds)", xaxis_title="exemplars per class",
                      yaxis_title="accuracy", **_LAYOUT)
    fig.update_xaxes(**readable_log_ticks(summary["per_class"]))
    return fig


def per_class_accuracy_figure(accuracy: Mapping[str, float]) -> go.Figure:
    """Bars of accuracy per true class; each bar carries the cell (class, ANY_WRONG) so that a click on it selects
    that class's errors (`error_drilldown.selected_cell`)."""
    labels = list(accuracy)
    fig = go.Figure(go.Bar(x=labels, y=[accuracy[label] for label in labels], marker_color=WINNER,
                           customdata=[[label, ANY_WRONG] for label in labels],
                           hovertemplate="%{x}: accuracy %{y:.1%}<br>click to list its errors<extra></extra>"))
    fig.update_layout(title="Accuracy per class", xaxis_title="true class", yaxis_title="accuracy",
                      yaxis_range=[0, 1], **_LAYOUT)
    return fig


def confusion_matrix_figure(frame) -> go.Figure:
    """Heatmap of a confusion-matrix DataFrame (rows true, columns predicted), counts written in the cells.

    Plotly cannot select a heatmap's cells, so every cell also has an invisible square marker at its centre that
    carries the cell as customdata [true, predicted] (`error_drilldown.selected_cell`); with no hover cut-off a
    click anywhere in a cell picks its marker, which is then outlined."""
    predicted, true = [str(c) for c in frame.columns], [str(i) for i in frame.index]
    cells = [(t, p, int(frame.values[i, j])) for i, t in enumerate(true) for j, p in enumerate(predicted)]
    fig = go.Figure(go.Heatmap(
        z=frame.values, x=predicted, y=true, colorscale="Blues", text=frame.values, texttemplate="%{text}",
        hoverinfo="skip",
    ))
    fig.add_trace(go.Scatter(
        x=[p for _, p, _ in cells], y=[t for t, _, _ in cells], mode="markers", name="cells", showlegend=False,
        customdata=[[t, p] for t, p, _ in cells], text=[str(n) for _, _, n in cells],
        marker=dict(symbol="square-open", size=28, color="#d62728", line=dict(width=3), opacity=0),
        selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=0)),
        hovertemplate="true %{y}, predicted %{x}: %{text}<br>click to list these queries<extra></extra>",
    ))
    fig.update_layout(title="Confusion matrix (click a cell to list its queries)", xaxis_title="predicted",
                      yaxis_title="true", yaxis_autorange="reversed", hovermode="closest", hoverdistance=-1,
                      **_LAYOUT)
    return fig


def reliability_histogram(reliability: Union[Mapping[int, int], np.ndarray]) -> go.Figure:
    """How many exemplars have each reliability v: from {id: v} or from the v values alone
    (`memory.reliability.counts(top_n)[1]`)."""
    if isinstance(reliability, Mapping):
        values = np.fromiter(reliability.values(), dtype=np.int64, count=len(reliability))
    else:
        values = np.asarray(reliability, dtype=np.int64).ravel()
    counts = np.bincount(values) if len(values) else np.zeros(1, np.int64)
    fig = go.Figure(go.Bar(x=np.arange(len(counts)), y=counts, marker_color=WINNER))
    fig.update_layout(title="Reliability v per exemplar (0 = never among other classes' neighbours)",
                      xaxis_title="v", yaxis_title="exemplars", **_LAYOUT)
    return fig


def label_counts_figure(counts: Mapping[str, int]) -> go.Figure:
    labels = list(counts)
    fig = go.Figure(go.Bar(x=labels, y=[counts[label] for label in labels], marker_color=WINNER))
    fig.update_layout(title="Live exemplars per label", xaxis_title="label", yaxis_title="exemplars", height=320,
                      **_LAYOUT)
    return fig


# the qualitative palette the map colours labels with (plotly's D3 then Light24, repeating past 34 labels)
MAP_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf", "#FD3216", "#00FE35", "#6A76FC", "#FED4C4", "#FE00CE", "#0DF9FF", "#F6F926", "#FF9616",
               "#479B55", "#EEA6FB", "#DC587D", "#D626FF", "#6E899C", "#00B5F7", "#B68E00", "#C9FBE5", "#FF0092",
               "#22FFA7", "#E3EE9E", "#86CE00", "#BC7196", "#7E7DCD", "#FC6955", "#E48F72")
QUERY_COLOUR = "#000000"


def label_colours(labels) -> dict[str, str]:
    """A colour per distinct label, in sorted label order (the same label keeps its colour across redraws)."""
    return {label: MAP_PALETTE[i % len(MAP_PALETTE)] for i, label in enumerate(sorted(set(labels)))}


def _counts_of(ids: np.ndarray, counts: Mapping[int, int]) -> np.ndarray:
    """counts[id] for each id (0 where absent), without a Python call per id where `counts` covers few of them."""
    if not len(counts):
        return np.zeros(len(ids), dtype=np.int64)
    keys = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    values = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    at = np.clip(np.searchsorted(keys, ids), 0, len(keys) - 1)
    return np.where(keys[at] == ids, values[at], 0)


def memory_map_figure(projection, labels, colour_by: str = "label", reliability: Optional[Mapping[int, int]] = None,
                      query_point=None, neighbor_ids=(), selected=(), deleted=None,
                      title: Optional[str] = None) -> go.Figure:
    """Every exemplar of a `Projection` as a point (plotly Scattergl: thousands stay interactive), coloured by label
    (a trace per label, in the legend) or by reliability v (one trace, a colour bar); hover shows id and label;
    each exemplar trace's customdata is its ids. With `query_point` (x, y): the query as a star and a line to each
    of `neighbor_ids`. `selected` ids are ringed. `deleted` (ids, points): deleted exemplars as grey crosses, their
    ids as customdata in a trace marked `meta=DELETED_TRACE` (so a selection tells them from live ones: they can
    be restored, not edited)."""
    ids = np.asarray(projection.ids)
    points = np.asarray(projection.points)
    labels = np.asarray(list(labels), dtype=object)
    fig = go.Figure()
    hover = "id %{customdata}<br>%{text}<extra></extra>"
    if colour_by == "label":
        for label, colour in label_colours(labels.tolist()).items():
            mask = labels == label
            # the hover names the label from the trace's own name: a text per point (60,000 strings) cost more to
            # validate and to write as JSON than the points themselves
            fig.add_trace(go.Scattergl(
                x=points[mask, 0], y=points[mask, 1], mode="markers", name=str(label), customdata=ids[mask],
                marker=dict(color=colour, size=6, opacity=0.8),
                hovertemplate="id %{customdata}<br>%{fullData.name}<extra></extra>"))
    elif colour_by == "reliability":
        v = _counts_of(ids, reliability or {})
        fig.add_trace(go.Scattergl(
            x=points[:, 0], y=points[:, 1], mode="markers", name="exemplars", customdata=ids,
            text=np.char.add(np.char.add(labels.astype(str), ", v "), v.astype(str)).astype(object),
            marker=dict(color=v, colorscale="Reds", cmin=0, cmax=max(int(v.max()) if len(v) else 0, 1), size=6,
                        showscale=True, colorbar=dict(title="v")),
            hovertemplate=hover))
    else:
        raise ValueError(f"colour_by must be 'label' or 'reliability', got {colour_by!r}")
    if deleted is not None and len(deleted[0]):
        gone_ids, gone_points = np.asarray(deleted[0]), np.asarray(deleted[1])
        fig.add_trace(go.Scattergl(
            x=gone_points[:, 0], y=gone_points[:, 1], mode="markers", name="deleted (not purged)",
            customdata=gone_ids, meta=DELETED_TRACE,
            text=np.char.add(np.char.add("id ", gone_ids.astype(str)), ", deleted").astype(object),
            hovertemplate="%{text}<extra></extra>",
            marker=dict(symbol="x", size=7, color=OTHER)))
    if len(selected):
        where = np.isin(ids, np.asarray(list(selected), dtype=np.int64))
        fig.add_trace(go.Scattergl(
            x=points[where, 0], y=points[where, 1], mode="markers", name="selected", hoverinfo="skip",
            marker=dict(size=12, color="rgba(0,0,0,0)", line=dict(color=QUERY_COLOUR, width=2))))
    if query_point is not None:
        qx, qy = (float(c) for c in np.ravel(query_point)[:2])
        drawn = set(ids.tolist())
        on_map = [int(i) for i in neighbor_ids if int(i) in drawn]  # a neighbour deleted since is left out
        ends = projection.points_of(on_map) if on_map else np.zeros((0, 2))
        xs, ys = [], []
        for x, y in ends:
            xs += [qx, float(x), None]
            ys += [qy, float(y), None]
        fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", name="to its neighbours", hoverinfo="skip",
                                   line=dict(color=QUERY_COLOUR, width=1)))
        fig.add_trace(go.Scattergl(x=[qx], y=[qy], mode="markers", name="query",
                                   marker=dict(symbol="star", size=16, color=QUERY_COLOUR),
                                   hovertemplate="the query<extra></extra>"))
    method = projection.method.upper()
    fig.update_layout(title=title or f"{len(ids):,} exemplars, {method} of their embeddings", height=600,
                      xaxis_title=f"{method} 1", yaxis_title=f"{method} 2", dragmode="select",
                      legend_title_text="label" if colour_by == "label" else None, **_LAYOUT)
    return fig
