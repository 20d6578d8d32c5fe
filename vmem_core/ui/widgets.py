"""The app's image widgets: enlarged thumbnails, the gallery of a query's voting neighbours, a grid of exemplars to
tick, and the "Present" switch for showing a page on a projector."""

from __future__ import annotations

import functools
import io
from typing import Optional, Sequence

import streamlit as st
from PIL import Image

from ..analysis.attribution import winning_shares
from ..classification import Classification
from ..memory import VisualMemory


def present_toggle(key: str) -> bool:
    """A "Present" switch for a demo on a projector: hides the sidebar and enlarges the type (also `?present=1`)."""
    on = st.toggle("Present", key=key, value=st.query_params.get("present") == "1",
                   help="Larger type and no sidebar, for showing this page to an audience.")
    if on:
        st.markdown(PRESENT_CSS, unsafe_allow_html=True)
    return on


PRESENT_CSS = """<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"] {display: none;}
.stMainBlockContainer {max-width: 1500px;}
.stMainBlockContainer p, .stMainBlockContainer li, [data-testid="stCaptionContainer"] {font-size: 1.3rem;}
.stMainBlockContainer h1 {font-size: 3.2rem;} .stMainBlockContainer h2 {font-size: 2.4rem;}
</style>"""


@functools.lru_cache(maxsize=2048)
def enlarge(png: Optional[bytes], size: int = 112) -> bytes:
    """A thumbnail scaled up to `size` (pixel-sharp for tiny images), or a grey square where none was stored, as PNG
    bytes. Kept for the next rerun (a thumbnail's bytes are its key, and bytes cannot be changed): a page of twenty
    rows spent ~40 ms of every rerun decoding, scaling and re-encoding the same images."""
    if png is None:
        image = Image.new("RGB", (size, size), (230, 230, 230))
    else:
        image = Image.open(io.BytesIO(png)).convert("RGB")
        scale = size / max(image.size)
        if scale > 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def neighbor_gallery(memory: VisualMemory, result: Classification, columns: int = 5, limit: int = 20) -> None:
    """Thumbnails of the neighbours that voted, with label, distance, rank, weight and share of the winning score."""
    shown = result.neighbors[:limit]
    thumbs = memory.exemplars.thumbnails([n.id for n in shown])
    shares = winning_shares(result)
    total = sum(result.scores.values())
    grid = st.columns(columns)
    for i, (neighbor, share) in enumerate(zip(shown, shares)):
        with grid[i % columns]:
            st.image(enlarge(thumbs.get(neighbor.id)))
            mark = "**" if neighbor.label == result.label else ""
            # a share reads the same under every rule; the raw weight (softmax's reach 10^5) is there on hover
            st.caption(f"#{neighbor.rank} {mark}{neighbor.label}{mark} (id {neighbor.id})  \n"
                       f"d {neighbor.distance:.3f} | w {neighbor.weight / total if total else 0:.0%} of vote | "
                       f"{share:.0%} of win", help=f"raw weight {neighbor.weight:.6g} (the rule's own scale)")
    if len(result.neighbors) > limit:
        st.caption(f"...and {len(result.neighbors) - limit} more neighbours (all counted in the scores).")


def exemplar_grid(memory: VisualMemory, ids: Sequence[int], captions: Sequence[str], key: str,
                  columns: int = 6, selectable: bool = True) -> list[int]:
    """Thumbnails of exemplars with a checkbox each; returns the ids ticked."""
    thumbs = memory.exemplars.thumbnails(ids)
    grid = st.columns(columns)
    selected = []
    for i, (exemplar_id, caption) in enumerate(zip(ids, captions)):
        with grid[i % columns]:
            st.image(enlarge(thumbs.get(int(exemplar_id)), 96))
            if selectable:
                if st.checkbox(caption, key=f"{key}-{exemplar_id}"):
                    selected.append(int(exemplar_id))
            else:
                st.caption(caption)
    return selected

