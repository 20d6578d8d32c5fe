"""Evaluate: accuracy of every voting rule at every k, accuracy vs memory size, per class and confusion."""

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import streamlit as st

from vmem_core import VmemError, ui
from vmem_core.analysis import registry
from vmem_core.analysis.error_drilldown import (
    ANY_WRONG,
    NO_PREDICTION,
    cell_queries,
    changes_table,
    compare_runs,
    evaluation_run_from,
    selected_cell,
    voters,
)
from vmem_core.analysis.evaluate import (
    BEST_LABEL,
    accuracy_vs_memory_size,
    confusion_matrix,
    evaluate_set,
    per_class_accuracy,
)
from vmem_core.analysis.plots import (
    accuracy_vs_k_figure,
    confusion_matrix_figure,
    memory_size_figure,
    per_class_accuracy_figure,
)
from vmem_core.ingest.datasets import extract_labelled_zip, scan_dataset

SHIPPED_TAXONOMY = ui.SAMPLE_DATA / "taxonomy.csv"
SHOWN_QUERIES = 10  # of a selected cell, each with its voters
memory, settings = ui.page_setup()
st.title("Evaluate")
st.caption("Neighbours are retrieved once per query; every rule and every k = 1..100 is scored from them.")

source = st.radio("Queries", ["Shipped query split", "Upload a labelled .zip (<label>/<image>)"], horizontal=True,
                  key="eval-source")
if source.startswith("Shipped"):
    split = ui.query_split_embeddings(memory)
    split_key = ("shipped", memory.config["encoder"]["identity"])
else:
    archive = st.file_uploader("Labelled .zip", type=["zip"], key="eval-zip")
    if archive is None:
        st.stop()
    cache = st.session_state.setdefault("eval-uploads", {})
    key = (memory.config["encoder"]["identity"], archive.file_id)
    if key not in cache:
        try:
            with tempfile.TemporaryDirectory() as folder:
                items = scan_dataset(extract_labelled_zip(archive.getvalue(), folder))
                bar = st.progress(0.0, text="Encoding queries...")
                cache[key] = ui.encode_split(memory, items, progress=lambda d, t: bar.progress(d / t))
                bar.empty()
        except VmemError as exc:
            st.error(str(exc).replace(folder, archive.name))  # the upload's name, not the folder it was unpacked in
            st.stop()
    split, split_key = cache[key], key
for name, reason in split.rejected:
    st.warning(f"Skipped {reason}")
if not len(split.names) or not len(memory):
    st.info("Nothing to evaluate: no readable queries, or an empty memory.")
    st.stop()

counter = memory.change_counter  # read before the search: a change meanwhile makes the run look older, not newer
# the one search of this evaluation set: the curves (every rule, k = 1..100) and the drill-down at k both read it
neighbours = memory.search.neighbour_set(split.embeddings, 100, settings)
if not neighbours.depth:  # hard pruning kept no exemplar: nothing votes at any k
    st.info(f"Hard pruning at threshold {settings.threshold:g} keeps no exemplar: nothing votes. Raise the threshold "
            "in the sidebar.")
    st.stop()
result = evaluate_set(neighbours, split.labels, settings=settings)
st.plotly_chart(accuracy_vs_k_figure(result), width="stretch")
best = result.best()
k = min(settings.k, result.k_max)
st.dataframe(
    {"rule": list(best), f"accuracy at k={k}": [round(float(result.accuracy[r][k - 1]), 4) for r in best],
     "best-over-k accuracy": [round(best[r]["accuracy"], 4) for r in best], "best k": [best[r]["k"] for r in best]},
    hide_index=True,
)
st.caption(f"{BEST_LABEL[0].upper()}{BEST_LABEL[1:]}.")
if result.unknown_labels:
    st.warning(f"Query labels absent from the memory (always counted wrong): {', '.join(result.unknown_labels)}")

st.subheader(f"Per class and confusion at k={k}, {settings.rule} voting")
run = evaluation_run_from(neighbours, split.labels, split.names, replace(settings, k=k), counter)
# what the last edit changed: this session's previous run of these queries at these settings, if the memory moved since
runs = st.session_state.setdefault("eval-runs", {})
last = runs.get(split_key)
if last is not None and last.settings == run.settings and last.change_counter != run.change_counter:
    st.session_state["eval-diff"] = (split_key, compare_runs(last, run))
runs[split_key] = run

confusion = confusion_matrix(split.labels, run.predicted)
left, right = st.columns(2)
# keyed by the change counter: after an edit the charts start with no selection (the cell stays in the boxes below)
events = {
    "bars": left.plotly_chart(per_class_accuracy_figure(per_class_accuracy(split.labels, run.predicted)),
                              on_select="rerun", selection_mode="points", key=f"eval-bars-{memory.change_counter}",
                              width="stretch"),
    "cells": right.plotly_chart(confusion_matrix_figure(confusion), on_select="rerun", selection_mode="points",
                                key=f"eval-cells-{memory.change_counter}", width="stretch"),
}
true_options, predicted_options = list(confusion.index), [ANY_WRONG] + list(confusion.columns)
clicked = st.session_state.setdefault("eval-clicked", {})
for chart, event in events.items():
    cell = selected_cell(event.selection.points if event else [])
    if cell is not None and cell != clicked.get(chart):  # a new click: it fills the two boxes below
        st.session_state["eval-true"], st.session_state["eval-predicted"] = cell
    clicked[chart] = cell
for box, options in (("eval-true", true_options), ("eval-predicted", predicted_options)):
    if st.session_state.get(box) not in options:  # e.g. an edit emptied the "(none)" column
        st.session_state.pop(box, None)

stored = st.session_state.get("eval-diff")
if stored is not None and stored[0] == split_key and stored[1].after.change_counter == run.change_counter \
        and stored[1].after.settings == run.settings:  # the latest change, at the settings shown
    diff = stored[1]
    st.subheader("What the last change did")
    (st.success if len(diff.fixed) >= len(diff.broken) else st.warning)(f"Re-evaluated: {diff.summary()}.")
    fixed_column, broken_column = st.columns(2)
    for column, title, meaning, changes in ((fixed_column, "Fixed", "wrong before, right now", diff.fixed),
                                            (broken_column, "Broken", "right before, wrong now", diff.broken)):
        column.markdown(f"**{title}: {len(changes)}** ({meaning})")
        column.dataframe(changes_table(changes), hide_index=True)
    if diff.moved:
        st.caption(f"{len(diff.moved)} more quer(ies) stayed wrong with another prediction.")

st.subheader("From an error to its cause")
st.caption("Click a cell of the confusion matrix (or a class's bar for all its errors), or pick one here: its "
           "queries are listed with the neighbours that voted, those that drove the prediction first.")
left, right = st.columns(2)
true_label = left.selectbox("True class", true_options, index=None, key="eval-true",
                            placeholder="click a cell or pick")
predicted = right.selectbox("Predicted", predicted_options, index=None, key="eval-predicted",
                            placeholder="click a cell or pick")


def untick_voters(ids) -> None:
    for key in [key for key in st.session_state if str(key).startswith("eval-voter-")]:
        if int(str(key).rpartition("-")[2]) in ids:
            st.session_state.pop(key)


ticked: set[int] = set()
if true_label is not None and predicted is not None:
    indices = cell_queries(run, true_label, predicted)
    st.markdown(f"**{len(indices)} quer{'y' if len(indices) == 1 else 'ies'}** of class **{true_label}** "
                f"predicted **{predicted}**" + (f" (the first {SHOWN_QUERIES} shown)" if len(indices) > SHOWN_QUERIES
                                                 else ""))
    for index in indices[:SHOWN_QUERIES]:
        result = run.results[index]
        image_column, voters_column = st.columns([1, 6])
        image_column.image(ui.enlarge(split.thumbnails[index]), caption=split.names[index])
        with voters_column:
            st.markdown(f"**{split.names[index]}**: true **{split.labels[index]}**, predicted "
                        f"**{result.label or NO_PREDICTION}**")
            rows = voters(result)
            ticked |= set(ui.exemplar_grid(
                memory, [v.neighbor.id for v in rows],
                [f"{'**' if v.drove else ''}{v.neighbor.label}{'**' if v.drove else ''} (id {v.neighbor.id}) "
                 f"#{v.neighbor.rank}: {v.share_of_vote:.0%} of vote, {v.share_of_win:.0%} of win" for v in rows],
                key=f"eval-voter-{index}", columns=max(1, min(4, len(rows))), selectable=ui.can_edit()))
    if ui.can_edit():
        st.caption("Tick the exemplars to change (bold: they voted for the prediction); after the change the "
                   "evaluation runs again and says which queries it fixed and which it broke.")
        ui.selection_actions(memory, sorted(ticked), prefix="eval-", after_delete=untick_voters)

st.subheader("Accuracy vs memory size")
seeds = st.slider("Seeds (random subsets per size)", 1, 10, 3, key="eval-seeds")
if st.button("Run memory-size experiment", key="eval-size"):
    bar = st.progress(0.0, text="Subsampling the memory...")
    frame = accuracy_vs_memory_size(memory, split.embeddings, split.labels, seeds=list(range(seeds)),
                                    settings=replace(settings, k=k), progress=lambda d, t: bar.progress(d / t))
    bar.empty()
    st.session_state["eval-size-result"] = (memory.table, frame)
stored = st.session_state.get("eval-size-result")
frame = stored[1] if stored is not None and stored[0] is memory.table else None  # stale after any change
if frame is not None:
    st.plotly_chart(memory_size_figure(frame), width="stretch")
    summary = frame.groupby("per_class")["accuracy"].agg(["mean", "std", "min", "max"]).round(4)
    st.dataframe(summary)
    st.caption(f"Mean accuracy over {frame['seed'].nunique()} seed(s); "
               f"{np.unique(frame['exemplars']).size} memory sizes.")

st.subheader("The paper's experiments")
st.caption("One exact search of the memory for these queries; every experiment votes from it (subsets of the memory "
           "reuse it where it is exact and search again where it is not).")
labels = list(memory.table.labels)
chosen = st.multiselect("Experiments", list(registry.REGISTRY),
                        default=["accuracy", "new-classes", "pruning", "noise", "ood"], key="exp-names")
new_classes = st.multiselect("Classes added later (new classes) and held out (OOD)", labels, default=labels[-1:],
                             key="exp-new")
taxonomy_file = st.file_uploader("Taxonomy CSV (class,group,...; default: the shipped Fashion-MNIST one)", type=["csv"],
                                 key="exp-taxonomy")
held_out = st.selectbox("Held-out class (taxonomy)", labels, index=len(labels) - 1, key="exp-held")
if st.button("Run experiments", key="exp-run", disabled=not chosen or len(labels) < 2):
    bar = st.progress(0.0, text="Searching once...")
    with tempfile.TemporaryDirectory() as folder:
        taxonomy = SHIPPED_TAXONOMY
        if taxonomy_file is not None:
            taxonomy = Path(folder) / "taxonomy.csv"
            taxonomy.write_bytes(taxonomy_file.getvalue())
        options = registry.ExperimentOptions(vote=replace(settings, k=min(settings.k, 100)),
                                             new_classes=new_classes or None, taxonomy=taxonomy, held_out=held_out,
                                             seeds=list(range(seeds)))
        try:
            results = registry.run_experiments(memory, split.embeddings, split.labels, chosen, options,
                                               progress=lambda stage, done, total: bar.progress(done / total,
                                                                                                text=stage))
        except VmemError as exc:
            results = None
            st.error(str(exc))
    bar.empty()
    if results is not None:
        st.session_state["exp-result"] = (memory.table, options.vote.k, results)
stored = st.session_state.get("exp-result")
if stored is not None and stored[0] is memory.table:  # stale after any change to the memory
    _, fixed_k, results = stored
    for name, figure in registry.figures(results, fixed_k):
        st.plotly_chart(figure, width="stretch", key=f"exp-fig-{name}-{figure.layout.title.text}")
    st.caption(f"Fixed k = {fixed_k} (the sidebar's k); {BEST_LABEL}. The full numbers: "
               "`vmem eval MEM QUERIES --experiment all --json`.")
