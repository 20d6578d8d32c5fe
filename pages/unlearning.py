"""Unlearning, told in order for a demo: a prediction and the exemplars behind it, forget them, what changed, purge,
the certificate."""

import json

import numpy as np
import streamlit as st

from vmem_core import VmemError, ui
from vmem_core.analysis.ood import judge
from vmem_core.analysis.plots import class_scores_figure
from vmem_core.analysis.unlearning import delete_one_at_a_time
from vmem_core.unlearn import PAPER_DELETION_MS, purge

memory, settings = ui.page_setup()
ui.present_toggle("unlearn-present")
st.title("Unlearning")
st.caption("Deleting an exemplar removes its influence on every prediction at once: no retraining. Five steps: the "
           "prediction and the exemplars behind it, forget them, what changed, purge, the certificate.")

queries = ui.query_picker(memory, "unlearn", default_samples=ui.in_domain_sample(memory), multiple=False)
if not queries or not len(memory):
    st.info("Pick or upload a query image.")
    st.stop()
query = queries[0]
# once this query's exemplars are forgotten, steps 1-2 keep telling what was true before (step 3 shows after)
last = st.session_state.get("unlearning")
last = last if last and last["query"] == query.sha256 else None
split = ui.query_split_embeddings(memory)
# one search per rerun: this query and, until they are forgotten, the shipped test queries whose predictions lean on
# the exemplars, 2k deep so that "without them" is exact for any of the k voters (vmem_core.neighbour_set)
neighbours = memory.search.neighbour_set(np.vstack([query.embedding[None], split.embeddings[:0 if last else None]]),
                                  2 * settings.k, settings)
(now,) = neighbours.rows([0]).classifications(settings, [query.name])
tests = neighbours.rows(slice(1, None))
before = last["before"] if last else now

st.header("1. The prediction and the exemplars behind it")
drivers = [n.id for n in before.neighbors if n.label == before.label]
picture, verdict = st.columns([1, 3])
picture.image(query.image, caption=query.name, width=140)
with verdict:
    st.markdown(f"### Prediction: {before.label}")
    st.markdown(f"Driven by {len(drivers)} of its k={len(before.neighbors)} nearest exemplars, labelled "
                f"'{before.label}'.")
    if before.neighbors:
        ood = judge(memory, before.neighbors[0].distance)
        if ood.is_ood:
            st.warning(f"Out of distribution: {ood.explain()}. The memory has never seen anything like this "
                       "image, so its prediction means little; pick a query from the memory's own domain.")
ui.neighbor_gallery(memory, before, columns=5, limit=10)

st.header("2. Forget them")
if last is None:
    options = [n.id for n in before.neighbors]
    labels_by_id = {n.id: f"id {n.id} ({n.label}, rank {n.rank})" for n in before.neighbors}
    to_forget = st.multiselect("Exemplars to forget (default: the neighbours that drove this prediction)", options,
                               default=drivers, format_func=labels_by_id.get,
                               # keyed by the neighbours shown too: when k or pruning changes them, the default
                               # (the new drivers) applies, not a selection of exemplars no longer listed
                               key=f"forget-{query.sha256}-{'-'.join(map(str, options))}")
    extra = st.text_input("...and any other exemplar ids (comma-separated, e.g. from the Memory page)",
                          key="forget-extra")
    try:
        extra_ids = [int(part) for part in extra.replace(" ", "").split(",") if part]
    except ValueError:
        st.error(f"Exemplar ids are whole numbers separated by commas; got {extra!r}.")
        extra_ids = []
    unknown = [i for i in extra_ids if memory.table.class_indices([i])[0] < 0]
    if unknown:
        st.error(f"No live exemplar with id(s) {', '.join(map(str, unknown))}.")
    for exemplar_id in extra_ids:
        if exemplar_id not in unknown and exemplar_id not in to_forget:
            to_forget.append(exemplar_id)
    # the same neighbours and pruning as the prediction: a pruned exemplar never votes, so nothing leans on it
    leaning = tests.voted_by(to_forget, settings)
    foreseen = tests.changes_without(to_forget, settings)
    st.write(f"{len(leaning)} of the {len(split.names)} shipped test queries have at least one of these exemplars "
             f"among their k={settings.k} voting neighbours (pruning {settings.pruning}); without them, "
             f"{len(foreseen)} of those predictions change.")
    if not ui.can_edit():
        st.info("Viewers see what forgetting would change; an editor can forget and purge.")
    elif st.button(f"Forget {len(to_forget)} exemplar(s)", type="primary", disabled=not to_forget,
                   key="forget-button"):
        predicted_before = [tests.labels[c] if c >= 0 else None for c in tests.predictions(settings)]
        try:
            durations = [seconds * 1000 for seconds in delete_one_at_a_time(memory, to_forget)]
        except VmemError as exc:
            st.error(str(exc))
            st.stop()
        after = ui.classify_embeddings(memory, split.embeddings, settings)
        changed = [i for i, (was, result) in enumerate(zip(predicted_before, after)) if was != result.label]
        st.session_state["unlearning"] = {"query": query.sha256, "before": before, "ids": to_forget,
                                          "ms": durations, "dependents": len(leaning), "foreseen": foreseen,
                                          "changed": changed}
        st.session_state.pop("certificate", None)
        st.rerun()
    st.stop()

ids = last["ids"]
median_ms, slowest_ms = float(np.median(last["ms"])), max(last["ms"])
spread = f", slowest {slowest_ms:.1f} ms" if len(ids) > 1 else ""
# the paper's figure is per deletion: compare one deletion's time with it, not the total of several
timing = (f"Forgot {len(ids)} exemplar(s) ({', '.join(map(str, ids))}), one deletion at a time: {median_ms:.1f} ms "
          f"per deletion (median{spread}); the paper reports under {PAPER_DELETION_MS:.0f} ms per deletion")
if median_ms < PAPER_DELETION_MS:
    st.success(f"{timing}: within it.")
else:  # an honest miss is not a success
    st.info(f"{timing}: {median_ms / PAPER_DELETION_MS:.1f}x that here (this machine, under its current load).")

st.header("3. What changed")
st.write(f"{len(last['changed'])} of the {len(split.names)} shipped test predictions changed "
         f"({len(last['foreseen'])} foreseen from the {last['dependents']} that leaned on them)."
         + (" The forecast held the exemplars' reliability v fixed; forgetting also changed the v of their "
            "neighbours in memory, and with it some predictions." if last["changed"] != last["foreseen"] else ""))
old, new = st.columns(2)
for column, title, result in ((old, "Before", before), (new, "After", now)):
    with column:
        st.subheader(f"{title}: {result.label}")
        st.plotly_chart(class_scores_figure(result, title=f"{title}: share of the vote"), width="stretch",
                        key=f"unlearn-{title}")
        ui.neighbor_gallery(memory, result, columns=4, limit=8)
certificate = st.session_state.get("certificate")
purged = bool(certificate) and sorted(certificate["ids"]) == sorted(ids)
# another session or `vmem restore` may have brought some back since: a purge here would destroy live exemplars
live_again = [] if purged else [i for i, c in zip(ids, memory.table.class_indices(ids)) if c >= 0]
if ui.can_edit() and not purged and not live_again and st.button("Undo: restore them", key="restore-button"):
    st.session_state.pop("unlearning")
    ui.apply(lambda: memory.exemplars.restore(ids), f"Restored {len(ids)} exemplar(s).")

st.header("4. Purge them for good")
st.caption("Deleted exemplars still sit in the files until purged: the purge removes their bytes from every file, "
           "checks that nothing of them is left, and writes a certificate. It cannot be undone.")
if live_again:
    st.warning(f"Exemplar(s) {', '.join(map(str, live_again))} were restored since you forgot them (in another "
               "session or by `vmem restore`): they count again, so this page will not purge them. Start again to "
               "forget and purge.")
    if st.button("Start again", key="unlearn-restart"):
        st.session_state.pop("unlearning", None)
        st.rerun()
elif ui.can_edit() and not purged and st.button("Purge them, with a certificate", type="primary",
                                                 key="purge-button"):
    ui.ask_to_confirm("confirm-purge", memory, "purge", ids)


def purge_and_keep_certificate() -> None:
    with st.spinner("Purging and checking..."):
        certificate = purge(memory, ids)
    st.session_state["certificate"] = certificate.to_dict()


ui.confirmation_box(memory, "confirm-purge", f"Purge exemplar(s) {', '.join(map(str, ids))} for good?",
                    purge_and_keep_certificate, f"Purged {len(ids)} exemplar(s).",
                    note="They cannot be restored afterwards.")

if purged:
    st.header("5. The certificate")
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
    if st.button("Start again with another query", key="unlearn-again"):
        for key in ("unlearning", "certificate"):
            st.session_state.pop(key, None)
        st.rerun()
