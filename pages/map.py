"""Map: every exemplar as a point of a 2-D projection of its embedding; select points to see them, "more like this"."""

import streamlit as st

from vmem_core import VmemError, ui
from vmem_core.analysis.memory_map import (
    deleted_points,
    map_labels,
    memory_map,
    more_like_this,
    umap_available,
    selected_deleted_ids,
    selected_ids,
)
from vmem_core.analysis.plots import memory_map_figure

SHOWN = 30  # thumbnails of a selection
COLOURS = {"label": "label", "reliability v": "reliability"}

memory, settings = ui.page_setup()
st.title("Map")
st.caption("Each point is an exemplar, placed by a 2-D projection of its embedding (recomputed after every change): "
           "near points look alike to the encoder. Select points (click, box or lasso) to see them.")
if not len(memory):
    st.info("The memory is empty: add exemplars on the Memory page.")
    st.stop()

method = "pca"
if umap_available():
    method = st.radio("Projection", ["pca", "umap"], horizontal=True, key="map-method", format_func=str.upper,
                      help="UMAP separates clusters better; its first map takes seconds (numba compiles it)")
with st.spinner(f"Projecting {len(memory):,} exemplars ({method.upper()})"):
    projection = memory_map(memory, method)
labels = map_labels(memory, projection)
colour = COLOURS[st.radio("Colour by", list(COLOURS), horizontal=True, key="map-colour")]
reliability = memory.reliability(settings.top_n) if colour == "reliability" else None
deleted = deleted_points(memory, method) if st.checkbox("Show deleted exemplars (not yet purged; select them to restore)",
                                                   key="map-deleted") else None

query_point, neighbor_ids = None, []
with st.expander("Place a query on the map"):
    queries = ui.query_picker(memory, "map-query", multiple=False)
    if queries:
        result = ui.classify(memory, queries, settings)[0]
        query_point = projection.place(queries[0].embedding)[0]
        neighbor_ids = [n.id for n in result.neighbors]
        st.write(f"Prediction: **{result.label}**; the lines join the query (star) to its {len(neighbor_ids)} "
                 "neighbours that voted.")

# keyed by what the point indices refer to: a change to the memory or the colouring draws a fresh chart, never applying
# an old selection's indices to new points
figure = memory_map_figure(projection, labels, colour, reliability, query_point, neighbor_ids, deleted=deleted)
event = st.plotly_chart(figure, on_select="rerun", selection_mode=("points", "box", "lasso"),
                        key=f"map-chart-{method}-{colour}-{memory.change_counter}", width="stretch")
points = event.selection.points if event else []
chosen = selected_ids(figure, points)
chosen_deleted = selected_deleted_ids(figure, points) if deleted is not None else []
label_of = dict(zip(projection.ids.tolist(), labels))


def show_selection(chosen: list[int]) -> list[int]:
    """Thumbnails of the selected exemplars (ticked ones returned) and "more like this" for one of them."""
    st.subheader(f"Selected: {len(chosen)} exemplar(s)")
    shown = chosen[:SHOWN]
    ticked = ui.exemplar_grid(memory, shown, [f"{label_of.get(i, '?')} (id {i})" for i in shown], key="map-pick",
                              selectable=ui.can_edit())
    if len(chosen) > SHOWN:
        st.caption(f"...and {len(chosen) - SHOWN} more; edits apply to the ticked ones (or, with none ticked, to "
                   f"all {len(chosen)} selected).")
    seed = st.selectbox("More like this", shown, key="map-more-like",
                        format_func=lambda i: f"id {i} ({label_of.get(i, '?')})")
    try:
        similar, distances = more_like_this(memory, seed, k=12)
    except VmemError as exc:
        st.error(str(exc))
    else:
        st.caption(f"The exemplars nearest to id {seed}, nearest first:")
        ui.exemplar_grid(memory, similar.tolist(),
                         [f"{label_of.get(int(i), '?')} (id {i}) d {d:.3f}" for i, d in zip(similar, distances)],
                         key="map-similar", selectable=False)
    return ticked


targets = []
if chosen:
    targets = show_selection(chosen) or chosen
elif not chosen_deleted:
    st.caption(f"{len(projection):,} exemplars ({projection.method.upper()}). Nothing selected.")
if chosen_deleted:
    st.subheader(f"Selected: {len(chosen_deleted)} deleted exemplar(s), not yet purged")
    ui.exemplar_grid(memory, chosen_deleted[:SHOWN], [f"deleted (id {i})" for i in chosen_deleted[:SHOWN]],
                     key="map-pick-deleted", selectable=False)

# --- edits, for editors, through the same confirmations as the Memory page -------------------------------------------
if ui.can_edit():
    if targets:
        st.write(f"Edit: {', '.join(map(str, targets[:50]))}{' ...' if len(targets) > 50 else ''}")
    ui.selection_actions(memory, targets, prefix="map-")
    ui.restore_actions(memory, chosen_deleted, prefix="map-")
