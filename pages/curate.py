"""Curate: find exemplars that look mislabelled or harmful, and near-duplicates; accept or dismiss each."""

from typing import Optional

import streamlit as st

from vmem_core import ui
from vmem_core.analysis.attribution import exemplar_influence
from vmem_core.analysis.curate import (DEFAULT_SUGGESTIONS, SUGGESTIONS_PER_PAGE, check_ranking, near_duplicates,
                                        suspicious_exemplars)
from vmem_core.analysis.plots import reliability_histogram
from vmem_core.memory import NEAR_DUPLICATE_DISTANCE

memory, settings = ui.page_setup()
st.title("Curate")
st.caption("Reliability v counts how often an exemplar sits among the nearest neighbours of exemplars with another "
           "label. High v marks likely mislabelled or harmful exemplars. Nothing changes until you accept.")
if len(memory) < 2:
    st.info("Curation needs at least two exemplars.")
    st.stop()


def soft_prune_toggled() -> None:
    ui.set_setting("pruning", "soft" if st.session_state["curate-soft"] else "none")


st.toggle("Soft-prune the whole memory (weight x 1.75/(1+v) for every exemplar with v > 0)",
          value=st.session_state.get("pruning") == "soft", key="curate-soft", on_change=soft_prune_toggled)

# the figure is kept until the memory changes: a rerun without an edit (a toggle, a dismissal) does not rebuild it
st.plotly_chart(memory.derived(("reliability histogram", settings.top_n),
                               lambda: reliability_histogram(memory.reliability.counts(settings.top_n)[1])),
                width="stretch")

dismissed = st.session_state.setdefault("curate-dismissed", set())
shown = st.session_state.setdefault("curate-shown", SUGGESTIONS_PER_PAGE)
candidates = [s for s in suspicious_exemplars(memory, settings,
                                              limit=shown + len(dismissed) + 1) if s.id not in dismissed]
suggestions = candidates[:shown]
st.subheader(f"Suggestions: the {len(suggestions)} exemplars most likely mislabelled")
check = check_ranking(memory, top=DEFAULT_SUGGESTIONS, settings=settings)
st.caption(f"Ranked by v (scaled to the memory's largest) plus the share of the vote of the exemplar's own "
           f"{settings.top_n} nearest neighbours that disagrees with its label, weighted by the sidebar's rule "
           f"({settings.rule}); the suggested label is what its {settings.k} nearest vote. The sidebar's pruning is "
           "not applied here: it judges exemplars by v, the very thing in question (hard pruning would hide the "
           "exemplars to review and their votes against their neighbours)."
           + (f" How often a suggestion is right, measured on this memory: {check.explain()}." if check else ""))


def confirm_pending(where: Optional[str]) -> None:
    """The pending curate action, shown beside the row it came from (`where`; None: wherever, its row is gone). A
    button only records which exemplar it acts on; the confirmation carries it out if that exemplar is unchanged."""
    pending = ui.pending_change("confirm-curate")
    if pending is None or (where is not None and st.session_state.get("confirm-curate-row") != where):
        return
    target, label = pending.ids[0], pending.detail
    if pending.action == "delete":
        ui.confirmation_box(memory, "confirm-curate", f"Delete exemplar {target}?",
                            lambda: memory.exemplars.delete([target]),
                            f"Deleted exemplar {target}.")
    else:
        ui.confirmation_box(memory, "confirm-curate", f"Relabel exemplar {target} as '{label}'?",
                            lambda: memory.exemplars.relabel([target], label),
                            f"Relabelled exemplar {target} as '{label}'.")
    rows_confirmed.add(where)


def ask(action: str, exemplar_id: int, where: str, label: str = "") -> None:
    ui.ask_to_confirm("confirm-curate", memory, action, [exemplar_id], detail=label)
    st.session_state["confirm-curate-row"] = where
    st.rerun()


rows_confirmed: set = set()
editable = ui.can_edit()  # once: it reads the access policy, which each of the rows asked again
thumbs = memory.exemplars.thumbnails([s.id for s in suggestions])
for s in suggestions:
    image, text, actions = st.columns([1, 4, 4])
    image.image(ui.enlarge(thumbs.get(s.id), 72))
    text.markdown(f"**id {s.id}**, labelled **{s.label}**, score {s.score:.2f}, v = {s.reliability}  \n{s.reason}")
    delete, relabel, dismiss = actions.columns([2, 3, 2])
    if not editable:  # viewers see no edit controls
        continue
    if delete.button("Delete", key=f"curate-del-{s.id}"):
        ask("delete", s.id, f"suggestion-{s.id}")
    if s.suggested_label and relabel.button(f"Make it {s.suggested_label}", key=f"curate-rel-{s.id}"):
        ask("relabel", s.id, f"suggestion-{s.id}", s.suggested_label)
    if dismiss.button("Dismiss", key=f"curate-dis-{s.id}"):
        dismissed.add(s.id)
        st.rerun()
    confirm_pending(f"suggestion-{s.id}")
if len(candidates) > shown and st.button(f"Show {SUGGESTIONS_PER_PAGE} more", key="curate-more"):
    st.session_state["curate-shown"] = shown + SUGGESTIONS_PER_PAGE
    st.rerun()

st.subheader("Near-duplicates")
max_distance = st.slider("Pairs closer than distance", 0.0, 0.2, NEAR_DUPLICATE_DISTANCE, 0.005, format="%.3f",
                         key="curate-dup")
pairs = near_duplicates(memory, max_distance=max_distance, limit=30)
if not pairs:
    st.caption("No pairs that close.")
pair_thumbs = memory.exemplars.thumbnails([i for p in pairs for i in (p.id, p.other_id)])
for p in pairs:
    a, b, text, action = st.columns([1, 1, 4, 2])
    a.image(ui.enlarge(pair_thumbs.get(p.id), 64))
    b.image(ui.enlarge(pair_thumbs.get(p.other_id), 64))
    text.markdown(f"ids {p.id} ({p.label}) and {p.other_id} ({p.other_label}), "
                  f"distance {p.distance:.4f}" + ("" if p.same_label else ": **labels disagree**"))
    if editable and action.button(f"Delete id {p.other_id}", key=f"curate-dupdel-{p.id}-{p.other_id}"):
        ask("delete", p.other_id, f"pair-{p.id}-{p.other_id}")
    confirm_pending(f"pair-{p.id}-{p.other_id}")
if not rows_confirmed:
    confirm_pending(None)  # its row has gone since (dismissed, or no longer suggested)

st.subheader("Influence on the shipped query split")
st.caption("Per exemplar, over the held-out queries: correct predictions it voted for, wrong ones it drove, and "
           "predictions that change when it is left out (exact, from k + 1 neighbours).")
if st.button("Measure influence", key="curate-influence"):
    split = ui.query_split_embeddings(memory)
    frame = exemplar_influence(memory, split.embeddings, split.labels, settings)
    st.session_state["curate-influence-result"] = (memory.table, frame)
stored = st.session_state.get("curate-influence-result")
if stored is not None and stored[0] is memory.table:  # stale after any change
    frame = stored[1]
    st.dataframe(frame.head(50), hide_index=True)
    st.caption(f"{len(frame)} exemplars voted for at least one query; {int((frame['flips'] > 0).sum())} of them "
               "change some prediction when left out. Sorted by predictions flipped, then wrong ones driven.")
