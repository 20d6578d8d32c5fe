"""Text queries on a memory built with a CLIP-style encoder (open_clip): search the exemplars by a sentence, and
zero-shot label scores from the label names. Image-only encoders (the default EfficientNet) cannot embed text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import VmemError
from ..memory import VisualMemory

ZERO_SHOT_TEMPLATE = "a photo of a {}."
# CLIP's learned logit scale ends at 100 (its cap) in the released models: softmax(100 * cosine) gives its probabilities.
ZERO_SHOT_SCALE = 100.0


class TextQueryError(VmemError):
    """A text query on a memory whose encoder embeds only images, or an empty query."""


@dataclass(frozen=True)
class TextHit:
    id: int
    label: str
    distance: float
    rank: int


def text_unsupported_reason(memory: VisualMemory) -> Optional[str]:
    """None when the memory's encoder embeds text; else why not, in words a user can act on."""
    if callable(getattr(memory.encoder, "encode_text", None)):
        return None
    return (f"the memory's encoder {memory.config['encoder']['name']!r} embeds images only; text search and zero-shot "
            "scores need a CLIP encoder: build a memory with --encoder open_clip:<arch>:<pretrained tag or checkpoint>")


def _encode_text(memory: VisualMemory, texts: list[str]) -> np.ndarray:
    reason = text_unsupported_reason(memory)
    if reason:
        raise TextQueryError(reason)
    return memory.encoder.encode_text(texts)


def search_text(memory: VisualMemory, text: str, k: int = 10) -> list[TextHit]:
    """The k exemplars nearest to a sentence (e.g. "a red sneaker"), nearest first.

    Raises:
        TextQueryError: empty text, or an image-only encoder.
    """
    if not str(text).strip():
        raise TextQueryError("the text query is empty; give a few words, e.g. 'a red sneaker'")
    if int(k) < 1:
        raise TextQueryError(f"k must be at least 1, got {k}")
    vector = _encode_text(memory, [str(text).strip()])
    ids, distances = memory.search(vector, int(k))
    table = memory.table
    classes = table.class_indices(ids[0])
    return [TextHit(int(i), table.labels[c], float(d), rank)
            for rank, (i, d, c) in enumerate(zip(ids[0], distances[0], classes)) if c >= 0]


def _label_vectors(memory: VisualMemory, template: str) -> tuple[list[str], np.ndarray]:
    def compute():
        labels = list(memory.table.labels)
        texts = [template.format(label.replace("_", " ")) for label in labels]
        return labels, (_encode_text(memory, texts) if labels else np.zeros((0, memory.dim), np.float32))

    return memory.derived(("zero-shot", template), compute)


def zero_shot_scores(memory: VisualMemory, embeddings: np.ndarray,
                     template: str = ZERO_SHOT_TEMPLATE) -> list[dict[str, float]]:
    """Per query embedding, each memory label's zero-shot probability (CLIP: softmax over 100 x cosine between the
    image and "a photo of a <label>."), highest first. Needs no exemplar: only the label names.

    Raises:
        TextQueryError: an image-only encoder.
    """
    if "{}" not in template:
        raise TextQueryError(f"zero-shot template {template!r} needs a {{}} where the label goes")
    labels, vectors = _label_vectors(memory, template)
    if not labels:
        return [{} for _ in range(len(embeddings))]
    logits = ZERO_SHOT_SCALE * np.asarray(embeddings, np.float32) @ vectors.T
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return [dict(sorted(((labels[j], float(p[j])) for j in range(len(labels))), key=lambda kv: -kv[1]))
            for p in probabilities]
