"""Classify: a prediction, its class scores, and the exemplars that voted for it."""

import streamlit as st

from vmem_core import ui
from vmem_core.analysis.attribution import attribution_rows
from vmem_core.analysis.ood import judge
from vmem_core.analysis.plots import class_scores_figure

memory, settings = ui.page_setup()
st.title("Classify")
st.caption("Each image is labelled by a weighted vote of its nearest exemplars in memory. Change the rule, k or "
           "pruning in the sidebar: the images are not encoded again.")
queries = ui.query_picker(memory, "classify", default_samples=ui.first_sample("sneaker/"))
if not len(memory):
    st.info("The memory is empty: add exemplars on the Memory page.")
    st.stop()
reranker, rerank_problem = ui.configured_reranker()
if rerank_problem:
    st.warning(rerank_problem)
with_text = ui.text_queries_supported(memory)
if with_text:
    ui.text_search(memory)
# one search for the whole batch: the votes and every query's attribution read the same neighbours
results, explanations = ui.classify_and_attribute(memory, queries, settings)
for query, result, explained in zip(queries, results, explanations):
    st.divider()
    left, middle, right = st.columns([1, 2, 3])
    with left:
        st.image(query.image, caption=query.name, width=160)
    with middle:
        if result.label is None:
            st.subheader("No prediction")
            st.write(f"No exemplar voted (pruning {settings.pruning} kept none); relax the pruning threshold.")
        else:
            st.subheader(f"Prediction: {result.label}")
            total = sum(result.scores.values()) or 1.0
            st.write(f"{result.scores.get(result.label, 0) / total:.0%} of the vote from k={len(result.neighbors)} "
                     f"neighbours ({settings.rule} voting, pruning {settings.pruning}).")
        if result.neighbors:
            verdict = judge(memory, result.neighbors[0].distance)
            if verdict.is_ood:
                st.warning(f"Possibly out of distribution: {verdict.explain()}.")
            else:
                st.caption(verdict.explain().capitalize() + ".")
        if with_text:
            ui.zero_shot_caption(memory, query)
        if reranker is not None:
            ui.ask_the_model(memory, reranker, query, result, settings)
    with right:
        if result.scores:
            st.plotly_chart(class_scores_figure(result), width="stretch", key=f"scores-{query.sha256}")
    st.markdown("**Neighbours that voted** (nearest first; bold = the predicted label)")
    ui.neighbor_gallery(memory, result)
    if result.neighbors:
        with st.expander("Attribution: each neighbour's share of the winning score, and the prediction without it"):
            st.dataframe(attribution_rows(explained), hide_index=True, key=f"attr-{query.sha256}")
            st.caption("'Without it' is exact: the vote over the k nearest exemplars once that one is gone (the "
                       "next nearest moves up). Reliability v is held fixed.")
