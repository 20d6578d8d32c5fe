"""Unlearning: forget exemplars and show, side by side, how a prediction changes."""

import json
import time

import numpy as np
import streamlit as st

from vmem_core import VmemError, ui
from vmem_core.analysis.attribution import dependent_queries
from vmem_core.analysis.plots import class_scores_figure
from vmem_core.unlearn import purge

memory, settings = ui.page_setup()
st.title("Unlearning")
st.caption("Deleting an exemplar removes its influence on every prediction at once: no retraining. Pick a "
           "prediction, choose exemplars to forget, and compare before and after.")

queries = ui.query_picker(memory, "unlearn", default_samples=ui.first_sample("photo/chelsea"), multiple=False)
if not queries or not len(memory):
    st.info("Pick or upload a query image.")
    st.stop()
query = queries[0]
(before,) = ui.classify(memory, [query], settings)

drivers = [n.id for n in before.neighbors if n.label == before.label]
st.image(query.image, caption=query.name, width=120)
st.markdown(f"**Prediction now: {before.label}**, driven by {len(drivers)} neighbour(s) labelled '{before.label}'.")
options = [n.id for n in before.neighbors]
labels_by_id = {n.id: f"id {n.id} ({n.label}, rank {n.rank})" for n in before.neighbors}
to_forget = st.multiselect("Exemplars to forget (default: the neighbours that drove this prediction)", options,
                           default=drivers, format_func=labels_by_id.get, key=f"forget-{query.sha256}")
extra = st.text_input("...and any other exemplar ids (comma-separated, e.g. from the Memory page)", key="forget-extra")
try:
    extra_ids = [int(part) for part in extra.replace(" ", "").split(",") if part]
except ValueError:
    st.error(f"Exemplar ids are whole numbers separated by commas; got {extra!r}.")
    extra_ids = []
unknown = [i for i in extra_ids if memory.class_indices([i])[0] < 0]
if unknown:
    st.error(f"No live exemplar with id(s) {', '.join(map(str, unknown))}.")
for exemplar_id in extra_ids:
    if exemplar_id not in unknown and exemplar_id not in to_forget:
        to_forget.append(exemplar_id)
        labels_by_id[exemplar_id] = f"id {exemplar_id} ({memory.label_of(exemplar_id)})"
ui.exemplar_grid(memory, to_forget, [labels_by_id[i] for i in to_forget], key="forget", selectable=False)

split = ui.query_split_embeddings(memory)
dependent = dependent_queries(memory, split.embeddings, to_forget, settings.k) if to_forget else []
st.write(f"{len(dependent)} of the {len(split.names)} shipped test queries have at least one of these exemplars "
         f"among their k={settings.k} neighbours: their predictions depend on them.")

if not ui.can_edit():
    st.info("Viewers see what forgetting would change; an editor can forget and purge.")
elif st.button(f"Forget {len(to_forget)} exemplar(s)", type="primary", disabled=not to_forget, key="forget-button"):
    dependents_before = ui.classify_embeddings(memory, split.embeddings[dependent], settings)
    start = time.perf_counter()
    try:
        memory.delete(to_forget)
    except VmemError as exc:
        st.error(f"Nothing changed: {exc}")
        st.stop()
    elapsed_ms = (time.perf_counter() - start) * 1000
    dependents_after = ui.classify_embeddings(memory, split.embeddings[dependent], settings)
    changed = int(np.sum([a.label != b.label for a, b in zip(dependents_before, dependents_after)]))
    st.session_state["unlearning"] = {"query": query.sha256, "before": before, "ids": to_forget,
                                      "ms": elapsed_ms, "dependents": len(dependent), "changed": changed}
    st.rerun()

last = st.session_state.get("unlearning")
if last and last["query"] == query.sha256:
    (after,) = ui.classify(memory, [query], settings)
    st.success(f"Forgot {len(last['ids'])} exemplar(s) in {last['ms']:.1f} ms (the paper reports under 20 ms). "
               f"{last['changed']} of {last['dependents']} dependent test predictions changed.")
    old, new = st.columns(2)
    for column, title, result in ((old, "Before", last["before"]), (new, "After", after)):
        with column:
            st.subheader(f"{title}: {result.label}")
            st.plotly_chart(class_scores_figure(result, title=f"{title}: class scores"), width="stretch",
                            key=f"unlearn-{title}")
            ui.neighbor_gallery(memory, result, columns=4, limit=8)
    undo, purge_column = st.columns(2)
    if undo.button("Undo: restore them", key="restore-button"):
        st.session_state.pop("unlearning")
        ui.apply(lambda: memory.restore(last["ids"]), f"Restored {len(last['ids'])} exemplar(s).")
    if purge_column.button("Purge them for good, with a certificate", type="primary", key="purge-button"):
        with st.spinner("Purging and checking..."):
            try:
                certificate = purge(memory, last["ids"])
            except VmemError as exc:
                st.error(f"Nothing was purged: {exc}")
                st.stop()
        st.session_state.pop("unlearning")
        st.session_state["certificate"] = certificate.to_dict()
        st.rerun()

certificate = st.session_state.get("certificate")
if certificate:
    st.subheader("Purge certificate")
    verdict = "All checks passed" if certificate["passed"] else "A check FAILED"
    (st.success if certificate["passed"] else st.error)(
        f"{verdict}: {len(certificate['ids'])} exemplar(s) removed from every file in "
        f"{certificate['purge_seconds'] * 1000:.0f} ms. They cannot be restored.")
    for check in certificate["checks"]:
        icon = ':green[:material/check_circle:]' if check['passed'] else ':red[:material/cancel:]'
        st.markdown(f"{icon} **{check['name']}**: {check['detail']}")
    st.caption(f"Memory digest before {certificate['digest_before'][:16]}..., after "
               f"{certificate['digest_after'][:16]}...; recorded in the audit log as purge {certificate['purge_id']}.")
    st.download_button("Download the certificate (JSON)", json.dumps(certificate, indent=2),
                       file_name=f"purge-{certificate['purge_id'][:8]}.json", mime="application/json",
                       key="certificate-download")
