"""Figures carry the data they claim to show."""

import numpy as np
import pandas as pd

from vmem_core.evaluate import EvalResult
from vmem_core.memory import Classification, Neighbor
from vmem_core.plots import (
    accuracy_vs_k_figure,
    class_scores_figure,
    confusion_matrix_figure,
    memory_size_figure,
    per_class_accuracy_figure,
    reliability_histogram,
)


def test_class_scores_sorted_with_winner_highlighted():
    result = Classification("cat", {"dog": 0.2, "cat": 0.9, "fox": 0.5}, [Neighbor(1, "cat", 0.1, 0, 0.5)])
    bar = class_scores_figure(result).data[0]
    assert list(bar.y) == ["dog", "fox", "cat"] and list(bar.x) == [0.2, 0.5, 0.9]
    assert bar.marker.color[-1] != bar.marker.color[0]


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
