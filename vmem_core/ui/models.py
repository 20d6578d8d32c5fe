"""Re-ranking by a vision-language model ($VMEM_RERANK) and text queries (CLIP encoders) in the app."""

from __future__ import annotations

import os

import streamlit as st

from ..classification import Classification
from ..errors import VmemError
from ..memory import VisualMemory
from ..voting import VoteSettings as Settings
from .queries import Query
from .widgets import exemplar_grid

RERANK_VARIABLE = "VMEM_RERANK"  # set by `vmem app MEM --rerank SPEC`; the API key stays in its own variable


@st.cache_resource(show_spinner=False)
def _load_reranker(spec: str):
    from ..rerank import load_reranker

    return load_reranker(spec)


def configured_reranker():
    """(re-ranker, problem): the re-ranker named by $VMEM_RERANK, or None and why it cannot be made (e.g. no key);
    (None, None) when none is configured, and the page shows no re-ranking control."""
    spec = os.environ.get(RERANK_VARIABLE, "").strip()
    if not spec:
        return None, None
    try:
        return _load_reranker(spec), None
    except VmemError as exc:
        return None, f"Re-ranking ({spec}) is configured but unavailable: {exc}"


def ask_the_model(memory: VisualMemory, reranker, query: Query, result: Classification, settings: Settings) -> None:
    """An "Ask the model" button; once pressed, the model's label beside the kNN vote, and its answer verbatim."""
    from ..rerank.pipeline import DEFAULT_SHOWN, make_requests, with_cache

    request = make_requests(memory, [query.image], [query.sha256], query.embedding[None], DEFAULT_SHOWN, settings)[0]
    answers = st.session_state.setdefault("vmem_rerank", {})
    key = (reranker.name, query.sha256, tuple(n.id for n in request.neighbors))
    if st.button("Ask the model", key=f"ask-{query.sha256}",
                 help=f"Show {reranker.name} this image and its {len(request.neighbors)} nearest exemplars with their "
                      "labels, and ask for the label (answers are cached in the memory's folder)."):
        with st.spinner(f"Asking {reranker.name}..."):
            try:
                answers[key] = with_cache(reranker, memory).rerank(request)
            except VmemError as exc:
                st.error(str(exc))
                return
    answer = answers.get(key)
    if answer is None:
        return
    if answer.label is not None:
        agreement = "agrees with" if answer.label == result.label else "differs from"
        st.markdown(f"**Model: {answer.label}** ({agreement} the kNN vote: {result.label})")
    else:
        st.warning(f"The model gave no usable label ({answer.status.replace('_', ' ')}): {answer.detail}")
    st.caption(f"{answer.model} answered {answer.raw[:300]!r}" + (" (from the cache)" if answer.cached else ""))


def text_queries_supported(memory: VisualMemory) -> bool:
    from ..analysis.text_query import text_unsupported_reason

    return text_unsupported_reason(memory) is None


def zero_shot_caption(memory: VisualMemory, query: Query, shown: int = 3) -> None:
    from ..analysis.text_query import zero_shot_scores

    (scores,) = zero_shot_scores(memory, query.embedding[None])
    st.caption("Zero-shot from the label names: " + ", ".join(f"{label} {p:.0%}" for label, p in
                                                               list(scores.items())[:shown]))


def text_search(memory: VisualMemory, k: int = 12) -> None:
    """A text box that searches the memory by a sentence and shows the nearest exemplars."""
    from ..analysis.text_query import search_text

    text = st.text_input("Search the memory by text", key="text-search", placeholder="e.g. a red sneaker")
    if not text.strip():
        return
    hits = search_text(memory, text, k)
    exemplar_grid(memory, [h.id for h in hits], [f"#{h.rank} {h.label} (id {h.id}) d {h.distance:.3f}" for h in hits],
                  key="text-search-hits", selectable=False)
