"""The app's query inputs: uploaded or shipped images, encoded once per session (by image hash), and the shipped
labelled query split, encoded once per encoder and shared by every session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import streamlit as st
from PIL import Image

from .. import resources
from ..errors import BadImageError
from ..ingest.images import IMAGE_SUFFIXES, load_image, make_thumbnail
from ..ingest.names import upload_name
from ..memory import VisualMemory

SAMPLE_DATA = resources.sample_data()
OOD_DIR = resources.ood_dir()
UPLOAD_TYPES = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)


@dataclass
class Query:
    name: str
    image: Image.Image
    sha256: str
    embedding: np.ndarray


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
    from ..ingest.datasets import scan_dataset

    return encode_split(_memory, scan_dataset(SAMPLE_DATA / "queries"))


def query_split_embeddings(memory: VisualMemory) -> LabelledSplit:
    """The shipped held-out queries, encoded once per encoder and shared by every session."""
    return _shipped_split(memory.config["encoder"]["identity"], memory)


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
