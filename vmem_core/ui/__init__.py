"""Streamlit glue shared by the pages: the cached memory, the sidebar settings, confirmations and page setup; and,
re-exported from its parts, sign-in and roles (`ui.access`), query inputs (`ui.queries`), image widgets
(`ui.widgets`), re-ranking and text queries (`ui.models`).

The only vmem_core package that imports streamlit. The memory is one `st.cache_resource` object shared by every
session (VisualMemory is thread-safe: its own readers-writer lock guards writes); query embeddings are cached per
session by image hash, so changing k, rule or pruning never re-encodes an image.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import streamlit as st

from .. import confirmation, resources
from ..analysis.attribution import NeighborAttribution, attribute_set
from ..analysis.memory_map import map_in_background
from ..classification import Classification
from ..devices import devices_text
from ..errors import VmemError
from ..ingest.names import check_label
from ..memory import VisualMemory
from ..storage.layout import is_memory
from ..voting import DEFAULT_RULE, EXPLAIN_SETTINGS, PRUNING_MODES, RULES, VoteSettings
# the parts, re-exported: pages and tests reach every name as `ui.name`
from .access import (_access_policy, _client_address, _policy_for, _sign_in_throttle, can_edit,  # noqa: F401
                     session_role)
from .models import (RERANK_VARIABLE, _load_reranker, ask_the_model, configured_reranker,  # noqa: F401
                     text_queries_supported, text_search, zero_shot_caption)
from .queries import (OOD_DIR, SAMPLE_DATA, UPLOAD_TYPES, LabelledSplit, Query, _shipped_split,  # noqa: F401
                      distinct_images, encode_queries, encode_split, first_sample, in_domain_sample,
                      query_picker, query_split_embeddings, sample_query_files)
from .widgets import PRESENT_CSS, enlarge, exemplar_grid, neighbor_gallery, present_toggle  # noqa: F401

RULE_HELP = {rule: f"{rule}: {EXPLAIN_SETTINGS.formula(rule)}" + (" (default)" if rule == DEFAULT_RULE else "")
             for rule in RULES}
_HOSTS: dict = {}  # memory path -> vmem_core.host.Host serving CLI commands on it


Settings = VoteSettings  # the sidebar's settings are the library's: one object for how to vote


def memory_path() -> Path:
    """The memory the app shows: $VMEM_MEMORY (set by `vmem app MEM`), else the sample memory."""
    return Path(os.environ.get("VMEM_MEMORY") or resources.default_memory())


@st.cache_resource(show_spinner="Opening the memory...")
def _open_memory(path: str) -> VisualMemory:
    from ..host import host_memory
    from ..storage.audit import default_actor

    memory = VisualMemory.open(path)
    memory.audit.actor = default_actor("app")
    memory.index.warm_up()  # the index opens while the page sets up, its huge pages come after, off the page's path
    table = memory.reliability.table_in_background()  # a memory from before neighbour tables: built once, then kept
    if len(memory):  # the Map's projection takes seconds at 60,000: fitted while the user is on other pages
        map_in_background(memory, after=table)
    # DuckDB lets one process open the file: `vmem` commands run while the app is open are sent here instead
    _HOSTS[path] = host_memory(memory)
    return memory


class BackgroundBuild:
    """The sample memory's first build, run once per process in a thread of its own and shared by every session.

    Streamlit elements can be called only from a session's script thread, so the build thread only records its
    progress here and each session's script polls it (a page closed mid-build leaves the build running).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._progress = (0, 0)
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="vmem-sample-build", daemon=True)
        self._thread.start()

    def _record(self, done: int, total: int) -> None:
        with self._lock:
            self._progress = (done, total)

    def _run(self) -> None:
        from ..sample_memory import build_sample_memory

        try:
            build_sample_memory(self.path, progress=self._record)
        except BaseException as exc:  # noqa: BLE001 - shown on the page by every session that waits for it
            self.error = exc

    @property
    def progress(self) -> tuple[int, int]:
        with self._lock:
            return self._progress

    def wait(self, timeout: float) -> bool:
        """True once the build has ended (finished or failed)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


@st.cache_resource(show_spinner=False)
def _sample_build(path: str) -> BackgroundBuild:
    return BackgroundBuild(Path(path))


def _build_sample(path: Path) -> None:
    """Build the sample memory (first start only), showing its progress; stops the page if the build failed."""
    build = _sample_build(str(path.resolve()))
    bar = st.progress(0.0, text="Building the sample memory (first start only)...")
    while not build.wait(0.25):
        done, total = build.progress
        if total:
            bar.progress(done / total, text=f"Building the sample memory (first start only): {done}/{total} images")
    bar.empty()
    if build.error is not None:
        _sample_build.clear()  # the next rerun tries again
        st.error(f"Building the sample memory at `{path}` failed: {build.error}")
        st.stop()


def get_memory() -> VisualMemory:
    """The shared memory handle; builds the sample memory on first start. Stops the page with a message on error."""
    path = memory_path()
    is_sample = path.resolve() == resources.default_memory().resolve()
    if not is_memory(path):
        if not is_sample:
            st.error(f"`{path}` is not a vmem memory. Build one with `vmem build DATA --memory {path}`.")
            st.stop()
        _build_sample(path)
    try:
        memory = _open_memory(str(path.resolve()))
    except VmemError as exc:
        st.error(str(exc))
        st.stop()
    if is_sample:
        from ..sample_memory import completeness

        shipped = memory.derived("sample completeness", lambda: completeness(memory))
        if not shipped.complete:
            st.warning(shipped.explain(path))
    return memory


# widget key -> its first value; the rule's widget keeps the key "voting", the name the app's tests and sessions use
_SETTING_DEFAULTS = {"voting": EXPLAIN_SETTINGS.rule, "k": EXPLAIN_SETTINGS.k, "pruning": EXPLAIN_SETTINGS.pruning,
                     "threshold": int(EXPLAIN_SETTINGS.threshold), "top_n": EXPLAIN_SETTINGS.top_n}


def _keep(name: str) -> None:
    # Widget values are dropped when a page that lacks the widget runs; a plain key survives page switches.
    st.session_state[f"_{name}"] = st.session_state[name]


def set_setting(name: str, value) -> None:
    """Change a sidebar setting from a callback (e.g. Curate's soft-pruning toggle)."""
    st.session_state[f"_{name}"] = value
    st.session_state[name] = value


def sidebar(memory: VisualMemory) -> Settings:
    """Voting settings shared by every page: the same sidebar widgets on each, their values kept across pages."""
    live = len(memory)
    state = st.session_state
    max_k = max(2, min(100, live))
    for name, default in _SETTING_DEFAULTS.items():
        state.setdefault(f"_{name}", default)
    state["_k"] = min(int(state["_k"]), max_k)
    for name in _SETTING_DEFAULTS:
        state[name] = state[f"_{name}"]
    with st.sidebar:
        st.markdown(f"**Memory** `{memory.path.name}`  \n{live:,} exemplars, {len(memory.table.labels)} classes  \n"
                    f"encoder `{memory.config['encoder']['name']}`  \n{devices_text(memory.index.devices())}")
        st.selectbox("Voting rule", RULES, key="voting", format_func=lambda r: RULE_HELP[r], on_change=_keep,
                     args=("voting",))
        st.slider("k: neighbours that vote", 1, max_k, key="k", on_change=_keep, args=("k",))
        st.radio("Pruning of unreliable exemplars", PRUNING_MODES, key="pruning", horizontal=True, on_change=_keep,
                 args=("pruning",),
                 help="hard: skip exemplars with reliability v >= threshold; soft: weight x 1.75/(1+v) where v > 0")
        if state["pruning"] == "hard":
            st.number_input("skip exemplars with v >=", min_value=1, max_value=1000, step=1, key="threshold",
                            on_change=_keep, args=("threshold",))
        if state["pruning"] != "none":
            st.number_input("reliability from top-N neighbours, N =", min_value=1, max_value=100, key="top_n",
                            on_change=_keep, args=("top_n",))
    return VoteSettings(k=int(state["k"]), rule=state["voting"], pruning=state["pruning"],
                        threshold=float(state["threshold"]), top_n=int(state["top_n"]))


def apply(change: Callable[[], object], message: str) -> None:
    """Run a change to the memory; on success rerun with `message`, else show the error (e.g. another session
    deleted those exemplars first) and change nothing."""
    try:
        change()
    except VmemError as exc:
        st.error(f"Nothing changed: {exc}")
        return
    flash(message)


def ask_to_confirm(key: str, memory: VisualMemory, action: str, ids: Sequence[int], detail: str = "") -> None:
    """Freeze what a pressed button will change (its ids, their state, the memory's change counter) under `key`;
    `confirmation_box(key, ...)` then asks, and acts only if that still holds."""
    st.session_state[key] = confirmation.ask(memory, action, ids, detail)


def pending_change(key: str) -> Optional[confirmation.PendingChange]:
    return st.session_state.get(key)


def confirmation_box(memory: VisualMemory, key: str, question: str, change: Callable[[], object], done: str,
                     selection: Optional[Sequence[int]] = None, note: str = "") -> bool:
    """The confirmation pending under `key`, if any: `question`, the ids and change counter it was asked for, and
    "Yes"/"Cancel". "Yes" runs `change` only if the page's `selection` (when given) is still the one it was asked for
    and no one changed those exemplars since; else it says what moved and changes nothing. Either way the
    confirmation is then gone (the page reruns). Returns True when a confirmation is shown."""
    pending = pending_change(key)
    if pending is None:
        return False
    st.warning(f"{question}{' ' + note if note else ''}  \nAsked for: {pending.describe()}.")
    yes, no = st.columns(2)
    if yes.button(f"Yes, {pending.action}", type="primary", key=f"{key}-yes"):
        st.session_state.pop(key)
        try:
            confirmation.carry_out(memory, pending, change, selection)
        except confirmation.StaleConfirmationError as exc:
            flash(str(exc), "error")  # rerun: the confirmation's buttons go with it
        except VmemError as exc:
            flash(f"Nothing changed: {exc}", "error")
        flash(done)
    if no.button("Cancel", key=f"{key}-no"):
        st.session_state.pop(key)
        st.rerun()
    return True


def selection_actions(memory: VisualMemory, selected: Sequence[int], prefix: str = "",
                      after_delete: Optional[Callable[[Sequence[int]], object]] = None) -> None:
    """Relabel and Delete buttons for the `selected` exemplars (when any), then their pending confirmations (shown
    even after the selection emptied, so that confirming says what moved). A button only records what it will change
    (`ask_to_confirm`); the confirmation carries it out if the selection and those exemplars are still as they were.
    Keys start with `prefix`; `after_delete(ids)` runs after a confirmed delete (e.g. to untick them)."""
    delete_key, relabel_key = f"{prefix}confirm-delete", f"{prefix}confirm-relabel"
    if selected:
        relabel_col, delete_col = st.columns(2)
        with relabel_col:
            new_label = st.text_input("Relabel the selected as", key=f"{prefix}relabel-to").strip()
            if st.button("Relabel", disabled=not new_label, key=f"{prefix}relabel-button"):
                st.session_state.pop(delete_key, None)
                try:
                    ask_to_confirm(relabel_key, memory, "relabel", selected, detail=check_label(new_label))
                except VmemError as exc:  # a label the memory would refuse is refused before asking
                    st.error(f"Nothing changed: {exc}")
        with delete_col:
            if st.button(f"Delete {len(selected)} selected", key=f"{prefix}delete-button"):
                st.session_state.pop(relabel_key, None)
                ask_to_confirm(delete_key, memory, "delete", selected)
    if pending := pending_change(delete_key):
        ids = list(pending.ids)
        confirmation_box(memory, delete_key, f"Delete exemplar(s) {confirmation.id_list(ids)}?",
                         lambda: (memory.exemplars.delete(ids), after_delete and after_delete(ids)),
                         f"Deleted {len(ids)} exemplar(s): {confirmation.id_list(ids)}.", selection=selected,
                         note="They stop counting at once (until purged, restorable on the Map with \"Show deleted "
                              "exemplars\", or with `vmem restore`).")
    if pending := pending_change(relabel_key):
        ids, label = list(pending.ids), pending.detail
        confirmation_box(memory, relabel_key, f"Relabel exemplar(s) {confirmation.id_list(ids)} as '{label}'?",
                         lambda: memory.exemplars.relabel(ids, label),
                         f"Relabelled {len(ids)} exemplar(s) as '{label}': {confirmation.id_list(ids)}.",
                         selection=selected)


def restore_actions(memory: VisualMemory, deleted_selected: Sequence[int], prefix: str = "") -> None:
    """A Restore button for the selected deleted (not yet purged) exemplars (when any), then its pending
    confirmation, carried out only if those exemplars are still deleted and still the ones selected (someone may have
    purged or restored them meanwhile). Keys start with `prefix`."""
    key = f"{prefix}confirm-restore"
    if deleted_selected and st.button(f"Restore {len(deleted_selected)} deleted", key=f"{prefix}restore-button"):
        ask_to_confirm(key, memory, "restore", deleted_selected)
    if pending := pending_change(key):
        ids = list(pending.ids)
        confirmation_box(memory, key, f"Restore exemplar(s) {confirmation.id_list(ids)}?",
                         lambda: memory.exemplars.restore(ids),
                         f"Restored {len(ids)} exemplar(s): {confirmation.id_list(ids)}.", selection=deleted_selected,
                         note="They count again at once, with the label they had.")


def flash(message: str, kind: str = "success") -> None:
    """Show `message` (as st.success, or st.error for kind "error") after the rerun that follows a change, so that
    every count on the page is fresh."""
    st.session_state.setdefault("_flash", []).append((kind, message))
    st.rerun()


def page_setup() -> tuple[VisualMemory, Settings]:
    """What every page starts with: the shared memory (for a viewer, only its reader, which has no way to change
    it), the sidebar's voting settings, notes from the last change."""
    role = session_role()
    memory = get_memory()
    if role != "editor":
        memory = memory.reader()
    settings = sidebar(memory)
    with st.sidebar:
        if _access_policy().read_only:
            st.caption("Read-only: this app shows the memory and changes nothing.")
        elif _access_policy().requires_sign_in:
            st.caption(f"Signed in as {role}.")
            if st.button("Sign out", key="sign-out"):
                st.session_state.pop("_vmem_role", None)
                st.rerun()
    for kind, message in st.session_state.pop("_flash", []):
        (st.error if kind == "error" else st.success)(message)
    return memory, settings


def classify_embeddings(memory: VisualMemory, embeddings: np.ndarray, settings: Settings,
                        names: Optional[Sequence[str]] = None) -> list[Classification]:
    if len(embeddings) == 0:
        return []
    return memory.search.classify_embeddings(embeddings, settings, names)


def classify(memory: VisualMemory, queries: Sequence[Query], settings: Settings) -> list[Classification]:
    if not queries:
        return []
    return classify_embeddings(memory, np.stack([q.embedding for q in queries]), settings, [q.name for q in queries])


def classify_and_attribute(memory: VisualMemory, queries: Sequence[Query],
                           settings: Settings) -> tuple[list[Classification], list[list[NeighborAttribution]]]:
    """Each query's classification and its attribution (the prediction without each voter), from one search of
    k + 1 neighbours for the whole batch (vmem_core.neighbour_set)."""
    if not queries:
        return [], []
    neighbours = memory.search.neighbour_set(np.stack([q.embedding for q in queries]), settings.k + 1, settings)
    return neighbours.classifications(settings, [q.name for q in queries]), attribute_set(neighbours, settings)
