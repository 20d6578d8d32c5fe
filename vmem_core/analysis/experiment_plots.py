"""Plotly figures of the paper's experiments, built from the JSON-ready dicts that `run_experiments` returns (the same
dicts the CLI prints with --json), so the app, the CLI and docs/RESULTS.md draw identical figures."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .plots import _LAYOUT, OTHER, RULE_COLOURS, WINNER, readable_log_ticks

MODE_COLOURS = {"none": OTHER, "hard": "#9467bd", "soft": "#17becf"}
LEVEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def accuracy_and_hit_rate_figure(result: Mapping) -> go.Figure:
    """Accuracy of each rule and the hit rate (true label among the first k) over k; dots mark best-over-k."""
    fig = go.Figure()
    ks = np.arange(1, len(result["hit_rate"]) + 1)
    fig.add_trace(go.Scatter(x=ks, y=result["hit_rate"], name="hit rate (true label in first k)",
                             line=dict(color="black", dash="dot")))
    for rule, curve in result["accuracy"].items():
        colour = RULE_COLOURS.get(rule)
        fig.add_trace(go.Scatter(x=ks, y=curve, name=rule, line=dict(color=colour)))
        best = result["best_over_k"][rule]
        fig.add_trace(go.Scatter(x=[best["k"]], y=[best["accuracy"]], mode="markers", showlegend=False,
                                 marker=dict(color=colour, size=9), name=f"{rule} best-over-k"))
    fig.update_layout(title=f"Accuracy and hit rate vs k ({result['queries']} queries; dots: best-over-k)",
                      xaxis_title="k", yaxis_title="fraction of queries", **_LAYOUT)
    fig.update_xaxes(**readable_log_ticks(ks))
    return fig


def memory_size_error_figure(result: Mapping) -> go.Figure:
    """Error (1 - accuracy at the fixed k) vs memory size on log-log axes: mean over seeds with min-max bars, and
    each rule's fitted line."""
    frame = pd.DataFrame(result["rows"])
    fig = go.Figure()
    for rule, rows in frame.groupby("rule", sort=False):
        summary = (1 - rows.groupby("exemplars")["accuracy"].agg(["mean", "min", "max"])).reset_index()
        colour = RULE_COLOURS.get(rule)
        # error = 1 - accuracy, so the highest accuracy gives the lowest error
        fig.add_trace(go.Scatter(
            x=summary["exemplars"], y=summary["mean"], mode="markers", name=rule, marker=dict(color=colour),
            error_y=dict(type="data", symmetric=False, array=summary["min"] - summary["mean"],
                         arrayminus=summary["mean"] - summary["max"]),
        ))
        fit = result["fit"].get(rule)
        if fit and np.isfinite(fit["slope"]):
            x = summary["exemplars"].to_numpy(float)
            fig.add_trace(go.Scatter(x=x, y=10 ** (fit["intercept"] + fit["slope"] * np.log10(x)), mode="lines",
                                     line=dict(color=colour, dash="dash"), name=f"{rule} fit, slope {fit['slope']:.3f}"))
    fig.update_layout(title=f"Error vs memory size (k={result['k']}; bars: min-max over seeds)",
                      xaxis_title="exemplars in memory", yaxis_title="error (1 - accuracy)", **_LAYOUT)
    fig.update_xaxes(**readable_log_ticks(frame["exemplars"]))
    fig.update_yaxes(**readable_log_ticks([y for trace in fig.data for y in trace.y]))
    return fig


def new_classes_figure(result: Mapping) -> go.Figure:
    """Per rule: old-class accuracy before and after adding the new classes, and new-class accuracy."""
    rules = list(result["old_before"])
    fig = go.Figure()
    for key, name, colour in (("old_before", "old classes, before", OTHER), ("old_after", "old classes, after", WINNER),
                              ("new_after", "new classes, after", "#2ca02c")):
        fig.add_trace(go.Bar(x=rules, y=[result[key][r] for r in rules], name=name, marker_color=colour,
                             text=[f"{result[key][r]:.3f}" for r in rules], textposition="outside"))
    fig.update_layout(title=f"New classes ({', '.join(result['new_labels'])}) without forgetting, k={result['k']}",
                      barmode="group", xaxis_title="voting rule", yaxis_title="accuracy", yaxis_range=[0, 1.08],
                      **_LAYOUT)
    return fig


def pruning_figure(result: Mapping, k: int) -> go.Figure:
    """Accuracy at k per rule for no, hard and soft pruning."""
    at = result[f"accuracy_at_k{k}"]
    rules = list(at["none"])
    fig = go.Figure()
    for mode, values in at.items():
        fig.add_trace(go.Bar(x=rules, y=[values[r] for r in rules], name=mode, marker_color=MODE_COLOURS.get(mode),
                             text=[f"{values[r]:.3f}" for r in rules], textposition="outside"))
    low = min(min(v.values()) for v in at.values())
    fig.update_layout(title=f"Pruning at k={k}: hard skips {result['pruned']} of {result['memory']} exemplars, "
                            f"soft down-weights {result['soft_weighted']}", barmode="group", xaxis_title="voting rule",
                      yaxis_title="accuracy",
                      yaxis_range=[max(0.0, low - 0.05), 1.0], **_LAYOUT)
    return fig


def noise_figure(result: Mapping) -> go.Figure:
    """Accuracy at k per rule against the fraction of memory labels flipped."""
    frame = pd.DataFrame(result["rows"])
    fig = go.Figure()
    for rule, rows in frame.groupby("rule", sort=False):
        fig.add_trace(go.Scatter(x=rows["noise"], y=rows["accuracy"], mode="lines+markers", name=rule,
                                 line=dict(color=RULE_COLOURS.get(rule))))
    fig.update_layout(title=f"Label noise (k={result['k']})", xaxis_title="fraction of memory labels flipped",
                      yaxis_title="accuracy", xaxis_tickformat=".0%", **_LAYOUT)
    return fig


def taxonomy_figure(result: Mapping) -> go.Figure:
    """A held-out class's queries at k = 1, accuracy at each taxonomy level, vs exemplars of it added back."""
    frame = pd.DataFrame(result["held_out_k1"])
    fig = go.Figure()
    for level, colour in zip(result["levels"], LEVEL_COLOURS):
        fig.add_trace(go.Scatter(x=frame["added"].astype(str), y=frame[level], mode="lines+markers", name=level,
                                 line=dict(color=colour)))
    fig.update_layout(title=f"Held-out class '{result['held_out']}' at k=1, by exemplars added back",
                      xaxis_title="exemplars of the held-out class in memory", yaxis_title="accuracy",
                      yaxis_range=[0, 1.05], **_LAYOUT)
    return fig


def ood_figure(result: Mapping, what: str) -> go.Figure:
    """Score histograms (mean distance to the nearest exemplars) of in- and out-of-distribution queries."""
    histogram = result["histogram"]
    edges = np.asarray(histogram["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure()
    for key, name, colour in (("in", "in distribution", WINNER), ("out", f"out: {what}", "#d62728")):
        fig.add_trace(go.Bar(x=centres, y=histogram[key], width=width, name=name, marker_color=colour, opacity=0.6))
    fig.update_layout(title=f"OOD score ({what}): AUROC {result['auroc']:.3f}", barmode="overlay",
                      xaxis_title=f"mean distance to the {result['k']} nearest exemplar(s)",
                      yaxis_title="fraction of queries", **_LAYOUT)
    return fig


def pruning_sweep_figure(result: Mapping) -> go.Figure:
    """The paper's hard pruning: accuracy at k per rule against the fraction of the memory pruned, one point per
    threshold (v over the top-N leave-one-out neighbours)."""
    paper = result["paper"]
    fig = go.Figure()
    for rule in paper["sweep"][0]["accuracy"]:
        fig.add_trace(go.Scatter(
            x=[row["fraction_pruned"] for row in paper["sweep"]], y=[row["accuracy"][rule] for row in paper["sweep"]],
            mode="lines+markers", name=rule, line=dict(color=RULE_COLOURS.get(rule)),
            text=[f"v >= {row['threshold']:g}" if row["threshold"] is not None else "no pruning"
                  for row in paper["sweep"]], hovertemplate="%{text}: %{y:.4f}"))
    fig.add_vline(x=paper["paper_fraction_pruned"], line_dash="dot",
                  annotation_text=f"the paper's {100 * paper['paper_fraction_pruned']:.0f}%")
    fig.update_layout(title=f"The paper's hard pruning (v over top-{paper['top_n']}), k={paper['k']}: accuracy vs "
                            f"fraction pruned", xaxis_title="fraction of the memory pruned", yaxis_title="accuracy",
                      xaxis_tickformat=".0%", **_LAYOUT)
    return fig


def taxonomy_every_class_figure(result: Mapping) -> go.Figure:
    """The paper's taxonomy protocol: every class held out in turn, others capped; accuracy at each level at k = 1
    against exemplars of the held-out class added back, mean over classes."""
    every = result["every_class"]
    frame = pd.DataFrame(every["added_k1"])
    fig = go.Figure()
    for level, colour in zip(result["levels"], LEVEL_COLOURS):
        fig.add_trace(go.Scatter(x=frame["added"].astype(str), y=frame[level], mode="lines+markers", name=level,
                                 line=dict(color=colour)))
    fig.update_layout(title=f"Each of {len(every['held_out'])} classes held out in turn, others capped at "
                            f"{every['others_per_class']}, k=1 (mean over classes)",
                      xaxis_title="exemplars of the held-out class in memory", yaxis_title="accuracy",
                      yaxis_range=[0, 1.05], **_LAYOUT)
    return fig


def encoder_tradeoff_figure(result: Mapping) -> go.Figure:
    """Accuracy vs memory size, one colour per encoder (cheapest first): best-over-k solid with bars of one standard
    deviation over seeds, the fixed k dashed; a log memory axis labelled at 1-2-5 steps."""
    fig = go.Figure()
    for index, name in enumerate(result["encoders"]):
        points = result["curves"][name]
        colour = LEVEL_COLOURS[index % len(LEVEL_COLOURS)]
        sizes = [point["size"] for point in points]
        fig.add_trace(go.Scatter(
            x=sizes, y=[point["best_accuracy"] for point in points], mode="lines+markers", name=f"{name}, best k",
            line=dict(color=colour), error_y=dict(type="data", array=[point["best_accuracy_std"] for point in points]),
        ))
        fig.add_trace(go.Scatter(x=sizes, y=[point["accuracy"] for point in points], mode="lines",
                                 name=f"{name}, k={result['k']}", line=dict(color=colour, dash="dash")))
    seeds = len(result["seeds"])
    fig.update_layout(title=f"Accuracy vs memory size per encoder ({result['rule']} voting; mean of {seeds} stratified "
                            f"subsets per size, bars: 1 s.d.)",
                      xaxis_title="exemplars in memory", yaxis_title="accuracy", **_LAYOUT)
    fig.update_xaxes(**readable_log_ticks(result["sizes"]))
    return fig
