"""Streamlit glue shared by the pages: the cached memory, the sidebar settings, query inputs and galleries.

The only vmem_core module that imports streamlit. The memory is one `st.cache_resource` object shared by every
session (VisualMemory is thread-safe: its own readers-writer lock guards writes); query embeddings are cached per
session by image hash, so changing k, rule or pruning never re-encodes an image.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import streamlit as st
from PIL import Image

from . import confirmation, resources
from .access import ACCESS_ENV, AccessPolicy, SignInThrottle
from .analysis.attribution import NeighborAttribution, attribute_set, winning_shares
from .classification import Classification
from .devices import devices_text
from .errors import BadImageError, VmemError
from .ingest.images import IMAGE_SUFFIXES, load_image, make_thumbnail
from .ingest.names import check_label, upload_name
from .memory import VisualMemory
from .storage.layout import is_memory
from .voting import DEFAULT_RULE, EXPLAIN_SETTINGS, PRUNING_MODES, RULES, VoteSettings

SAMPLE_DATA = resources.sample_data()
OOD_DIR = resources.ood_dir()
UPLOAD_TYPES = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)
RULE_HELP = {rule: f"{rule}: {EXPLAIN_SETTINGS.formula(rule)}" + (" (default)" if rule == DEFAULT_RULE else "")
             for rule in RULES}
_HOSTS: dict = {}  # memory path -> vmem_core.host.Host serving CLI commands on it


Settings = VoteSettings  # the sidebar's settings are the library's: one object for how to vote


@dataclass
class Query:
    name: str
    image: Image.Image
    sha256: str
    embedding: np.ndarray


def memory_path() -> Path:
    """The memory the app shows: $VMEM_MEMORY (set by `vmem app MEM`), else the sample memory."""
    return Path(os.environ.get("VMEM_MEMORY") or resources.default_memory())


@st.cache_resource(show_spinner="Opening the memory...")
def _open_memory(path: str) -> VisualMemory:
    from .host import host_memory
    from .storage.audit import default_actor

    memory = VisualMemory.open(path)
    memory.audit.actor = default_actor("app")
    memory.reliability.table_in_background()  # a memory from before neighbour tables: built once, then kept
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
        from .sample_memory import build_sample_memory

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
        from .sample_memory import completeness

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


def _access_policy() -> AccessPolicy:
    """The policy of the environment the app runs in, built once per distinct setting (`vmem app` sets them)."""
    try:
        return _policy_for(tuple(os.environ.get(name, "") for name in ACCESS_ENV))
    except VmemError as exc:  # a broken auth file: nobody gets in
        st.error(str(exc))
        st.stop()


@st.cache_resource(show_spinner=False)
def _policy_for(settings: tuple) -> AccessPolicy:
    return AccessPolicy.from_environment()  # passwords in the environment are hashed once, here


def session_role() -> str:
    """This session's role (vmem_core.access): viewer or editor. Where a sign-in is required and the session has not
    signed in, shows the sign-in form and stops the page."""
    policy = _access_policy()
    role = st.session_state.get("_vmem_role") or policy.default_role()  # not a widget key: no client can set it
    if role:
        return role
    st.title("Sign in")
    st.caption("This app is shared: its owner gives viewers and editors a password or token each.")
    with st.form("sign-in"):
        secret = st.text_input("Password or token", type="password", key="sign-in-secret")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        client = _client_address()
        wait = _sign_in_throttle().wait(client)
        if wait > 0:  # checked before the secret is: a guesser learns nothing while it waits
            st.error(f"Too many wrong passwords from this client: try again in {wait:.0f} s.")
            st.stop()
        role = policy.role_for(secret)
        _sign_in_throttle().record(client, success=bool(role))
        if role:
            st.session_state["_vmem_role"] = role
            st.rerun()
        st.error("That password or token opens no role here.")
    st.stop()


@st.cache_resource(show_spinner=False)
def _sign_in_throttle() -> SignInThrottle:
    return SignInThrottle()  # one per server: shared by every session, so a new tab does not reset it


def _client_address() -> str:
    """Who is signing in, for the throttle: the client's address, or this browser session where it is unknown."""
    address = getattr(st.context, "ip_address", None)
    if isinstance(address, str) and address:  # None behind some proxies (and not a string in Streamlit's AppTest)
        return address
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return f"session {ctx.session_id}" if ctx is not None else "unknown"


def can_edit() -> bool:
    """Whether this session may change the memory (show edit controls only then)."""
    return session_role() == "editor"


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


@dataclass(frozen=True)
class LabelledSplit:
    names: list[str]
    labels: list[str]
    embeddings: np.ndarray
    rejected: list[tuple[str, str]]
    thumbnails: list[bytes]  # PNG per query, for listing queries after their (possibly temporary) files are gone


def encode_split(memory: VisualMemory, items, progress=None) -> LabelledSplit:
    """Encode labelled images (datasets.LabelledImage); unreadable ones are listed, not fatal."""
    names, labels, images, rejected = [], [], [], []
    for item in items:
        try:
            images.append(load_image(item.path, item.source).image)
            names.append(item.source)
            labels.append(item.label)
        except BadImageError as exc:
            rejected.append((item.source, str(exc)))
    embeddings = memory.encoder.encode(images, progress=progress) if images else np.zeros((0, memory.dim), np.float32)
    return LabelledSplit(names, labels, embeddings, rejected, [make_thumbnail(image) for image in images])


@st.cache_resource(show_spinner="Encoding the shipped query split (once)...")
def _shipped_split(encoder_identity: str, _memory: VisualMemory) -> LabelledSplit:
    from .ingest.datasets import scan_dataset

    return encode_split(_memory, scan_dataset(SAMPLE_DATA / "queries"))


def query_split_embeddings(memory: VisualMemory) -> LabelledSplit:
    """The shipped held-out queries, encoded once per encoder and shared by every session."""
    return _shipped_split(memory.config["encoder"]["identity"], memory)


# --- query inputs ----------------------------------------------------------------------------------------------------
def sample_query_files() -> dict[str, Path]:
    """Shipped queries by display name: the held-out Fashion-MNIST split, then the out-of-distribution photos."""
    files = {f"{p.parent.name}/{p.name}": p for p in sorted((SAMPLE_DATA / "queries").glob("*/*.png"))}
    files.update({f"photo/{p.name}": p for p in sorted(OOD_DIR.glob("*.jpg"))})
    return files


def first_sample(prefix: str) -> list[str]:
    """The first shipped query whose name starts with `prefix` (a one-item list), or none."""
    return [name for name in sample_query_files() if name.startswith(prefix)][:1]


def in_domain_sample(memory: VisualMemory) -> list[str]:
    """The first shipped query whose true label the memory knows (a one-item list), or none: a demo opens on an
    image the memory can speak about, not on an out-of-distribution photo."""
    known = set(memory.table.labels)
    return [name for name in sample_query_files() if name.partition("/")[0] in known][:1]


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


def encode_queries(memory: VisualMemory, items: Sequence[tuple[str, bytes]]) -> tuple[list[Query], list[str]]:
    """Decode and encode (name, bytes) pairs, reusing this session's embeddings; returns (queries, error messages)."""
    cache = st.session_state.setdefault("vmem_embeddings", {})
    identity = memory.config["encoder"]["identity"]
    loaded, errors = [], []
    for name, data in items:
        try:
            loaded.append(load_image(data, name))
        except BadImageError as exc:
            errors.append(str(exc))
    missing = [item for item in loaded if (identity, item.sha256) not in cache]
    if missing:
        for item, vector in zip(missing, memory.encoder.encode([item.image for item in missing])):
            cache[(identity, item.sha256)] = vector
    return [Query(item.source, item.image, item.sha256, cache[(identity, item.sha256)]) for item in loaded], errors


def query_picker(memory: VisualMemory, key: str, default_samples: Sequence[str] = (),
                 multiple: bool = True) -> list[Query]:
    """Upload images or pick shipped samples; shows errors for bad uploads. Returns the encoded queries."""
    samples = sample_query_files()
    left, right = st.columns(2)
    with left:
        uploads = st.file_uploader("Upload image(s)", type=UPLOAD_TYPES, accept_multiple_files=multiple,
                                   key=f"{key}-upload")
    with right:
        if multiple:
            chosen = st.multiselect("...or pick sample queries", list(samples), default=list(default_samples),
                                    key=f"{key}-samples")
        else:
            options = ["(none)"] + list(samples)
            index = options.index(default_samples[0]) if default_samples else 0
            picked = st.selectbox("...or pick a sample query", options, index=index, key=f"{key}-samples")
            chosen = [] if picked == "(none)" else [picked]
    if uploads is not None and not isinstance(uploads, list):
        uploads = [uploads]
    items = [(upload_name(f.name), f.getvalue()) for f in (uploads or [])]
    items += [(name, samples[name].read_bytes()) for name in chosen]
    if not multiple:
        items = items[:1]
    queries, errors = encode_queries(memory, items)
    for message in errors:
        st.error(f"Skipped: {message}")
    return distinct_images(queries)


def distinct_images(queries: Sequence[Query]) -> list[Query]:
    """The queries with each image once (by content): a page keys its elements by the image's hash, and the same
    image twice (uploaded twice, or an upload that is a picked sample) would show the same answer twice. Says which
    were left out."""
    first: dict[str, str] = {}
    kept = []
    for query in queries:
        if query.sha256 in first:
            st.info(f"{query.name} is the same image as {first[query.sha256]}: shown once.")
            continue
        first[query.sha256] = query.name
        kept.append(query)
    return kept


# --- galleries -------------------------------------------------------------------------------------------------------
def enlarge(png: Optional[bytes], size: int = 112) -> Image.Image:
    """A thumbnail scaled up to `size` (pixel-sharp for tiny images), or a grey square where none was stored."""
    if png is None:
        return Image.new("RGB", (size, size), (230, 230, 230))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = size / max(image.size)
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
    return image


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


# --- re-ranking by a vision-language model, and text queries (CLIP encoders) ---------------------------------------
RERANK_VARIABLE = "VMEM_RERANK"  # set by `vmem app MEM --rerank SPEC`; the API key stays in its own variable


@st.cache_resource(show_spinner=False)
def _load_reranker(spec: str):
    from .rerank import load_reranker

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
    from .rerank.pipeline import DEFAULT_SHOWN, make_requests, with_cache

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
    from .analysis.text_query import text_unsupported_reason

    return text_unsupported_reason(memory) is None


def zero_shot_caption(memory: VisualMemory, query: Query, shown: int = 3) -> None:
    from .analysis.text_query import zero_shot_scores

    (scores,) = zero_shot_scores(memory, query.embedding[None])
    st.caption("Zero-shot from the label names: " + ", ".join(f"{label} {p:.0%}" for label, p in
                                                               list(scores.items())[:shown]))


def text_search(memory: VisualMemory, k: int = 12) -> None:
    """A text box that searches the memory by a sentence and shows the nearest exemplars."""
    from .analysis.text_query import search_text

    text = st.text_input("Search the memory by text", key="text-search", placeholder="e.g. a red sneaker")
    if not text.strip():
        return
    hits = search_text(memory, text, k)
    exemplar_grid(memory, [h.id for h in hits], [f"#{h.rank} {h.label} (id {h.id}) d {h.distance:.3f}" for h in hits],
                  key="text-search-hits", selectable=False)
