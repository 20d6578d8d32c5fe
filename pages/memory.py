"""Memory: browse, add, relabel and delete exemplars."""

import datetime as dt

import streamlit as st

from vmem_core import BadImageError, VmemError, ui
from vmem_core.analysis.plots import label_counts_figure
from vmem_core.ingest.names import upload_name

PAGE_SIZE = 30
NEW_LABEL = "(new label...)"

memory, settings = ui.page_setup()
st.title("Memory")
st.caption("Every exemplar is a labelled image in the database. Changes apply at once to every page and session.")

counts = memory.stats()["labels"]
with st.expander(f"{len(memory):,} live exemplars in {len(counts)} labels", expanded=False):
    st.plotly_chart(label_counts_figure(counts), width="stretch")

# --- add -----------------------------------------------------------------------------------------------------------
if ui.can_edit():  # viewers see no edit controls
    with st.expander("Add exemplars", expanded=not len(memory)):
        files = st.file_uploader("Images", type=ui.UPLOAD_TYPES, accept_multiple_files=True, key="add-files")
        choice = st.selectbox("Label", list(counts) + [NEW_LABEL], key="add-label-choice")
        label = st.text_input("New label", key="add-new-label").strip() if choice == NEW_LABEL else choice
        if st.button("Add to memory", type="primary", disabled=not files or not label, key="add-button"):
            try:
                ids = memory.exemplars.add([f.getvalue() for f in files], label,
                                 sources=[f"upload/{upload_name(f.name)}" for f in files])
            except (BadImageError, VmemError) as exc:
                st.error(f"Nothing was added: {exc}")
            else:
                # bring them into view: the browser below (not yet drawn in this run) moves to their label's last page
                for cleared in ("browse-source", "browse-dates"):
                    st.session_state.pop(cleared, None)
                st.session_state.update({"browse-label": label, "memory-new-ids": set(ids),
                                         "browse-page": max(1, -(-memory.exemplars.count(label=label) // PAGE_SIZE))})
                ui.flash(f"Added {len(ids)} exemplar(s) labelled '{label}' (ids {', '.join(map(str, ids))}); "
                         "they are shown below, marked new.")

changes = memory.exemplars.label_changes(limit=50)
if len(changes):
    with st.expander(f"Recent label changes ({len(changes)})"):
        st.dataframe(changes, hide_index=True)

# --- browse ----------------------------------------------------------------------------------------------------------
left, middle, right = st.columns(3)
label_filter = left.selectbox("Label", ["(all)"] + list(counts), key="browse-label")
source_filter = middle.text_input("Source contains", key="browse-source").strip() or None
dates = right.date_input("Added between", value=(), key="browse-dates")
filters = {"label": None if label_filter == "(all)" else label_filter, "source": source_filter}
if len(dates) == 2:
    filters["added_from"] = dt.datetime.combine(dates[0], dt.time.min)
    filters["added_to"] = dt.datetime.combine(dates[1], dt.time.min) + dt.timedelta(days=1)
total = memory.exemplars.count(**filters)
pages = max(1, -(-total // PAGE_SIZE))
if st.session_state.get("browse-page", 1) > pages:  # e.g. the filter changed while on a later page
    st.session_state["browse-page"] = pages
page = st.number_input(f"Page (of {pages}; {total:,} matching)", 1, pages, key="browse-page")
rows = memory.exemplars.browse(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, **filters)
new_ids = st.session_state.get("memory-new-ids", set())
selected = ui.exemplar_grid(memory, rows["id"].tolist(),
                            [f"{'NEW ' if r.id in new_ids else ''}{r.label} (id {r.id})" for r in rows.itertuples()],
                            key="browse", selectable=ui.can_edit())

# --- act on the selection --------------------------------------------------------------------------------------------
def untick(ids) -> None:
    for exemplar_id in ids:
        st.session_state.pop(f"browse-{exemplar_id}", None)


if selected:
    st.write(f"Selected: {', '.join(map(str, selected))}")
ui.selection_actions(memory, selected, after_delete=untick)
