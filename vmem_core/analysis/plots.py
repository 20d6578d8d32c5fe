"""Plotly figure builders. Pages only display these; tests check their data."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import plotly.graph_objects as go

from ..classification import Classification
from .evaluate import EvalResult

WINNER = "#1f77b4"
OTHER = "#c7c7c7"
RULE_COLOURS = {"rank": "#1f77b4", "plurality": "#ff7f0e", "distance": "#2ca02c", "softmax": "#d62728"}
_LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=40, b=10))


def class_scores_figure(result: Classification, title: Optional[str] = None) -> go.Figure:
    """Horizontal bars of class scores, highest on top, the predicted class highlighted."""
    items = sorted(result.scores.items(), key=lambda kv: kv[1])
    labels = [label for label, _ in items]
    fig = go.Figure(
        go.Bar(
            x=[score for _, score in items], y=labels, orientation="h",
            marker_color=[WINNER if label == result.label else OTHER for label in labels],
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(title=title or f"Class scores (prediction: {result.label})", xaxis_title="score",
                      height=120 + 28 * len(labels), **_LAYOUT)
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
                      yaxis_title="accuracy", xaxis_type="log", **_LAYOUT)
    return fig


def per_class_accuracy_figure(accuracy: Mapping[str, float]) -> go.Figure:
    labels = list(accuracy)
    fig = go.Figure(go.Bar(x=labels, y=[accuracy[label] for label in labels], marker_color=WINNER))
    fig.update_layout(title="Accuracy per class", yaxis_title="accuracy", yaxis_range=[0, 1], **_LAYOUT)
    return fig


def confusion_matrix_figure(frame) -> go.Figure:
    """Heatmap of a confusion-matrix DataFrame (rows true, columns predicted), counts written in the cells."""
    fig = go.Figure(go.Heatmap(
        z=frame.values, x=[str(c) for c in frame.columns], y=[str(i) for i in frame.index], colorscale="Blues",
        text=frame.values, texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
    ))
    fig.update_layout(title="Confusion matrix", xaxis_title="predicted", yaxis_title="true",
                      yaxis_autorange="reversed", **_LAYOUT)
    return fig


def reliability_histogram(reliability: Mapping[int, int]) -> go.Figure:
    values = np.fromiter(reliability.values(), dtype=np.int64) if reliability else np.zeros(0, np.int64)
    counts = np.bincount(values) if len(values) else np.zeros(1, np.int64)
    fig = go.Figure(go.Bar(x=np.arange(len(counts)), y=counts, marker_color=WINNER))
    fig.update_layout(title="Reliability v per exemplar (0 = never among other classes' neighbours)",
                      xaxis_title="v", yaxis_title="exemplars", **_LAYOUT)
    return fig


def label_counts_figure(counts: Mapping[str, int]) -> go.Figure:
    labels = list(counts)
    fig = go.Figure(go.Bar(x=labels, y=[counts[label] for label in labels], marker_color=WINNER))
    fig.update_layout(title="Live exemplars per label", yaxis_title="exemplars", height=300, **_LAYOUT)
    return fig
