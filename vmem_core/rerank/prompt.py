"""The prompt, as the paper's re-ranking stage asks it: the query image, then the nearest neighbours, each with its
label, then the instruction to answer with one label. Kept API-neutral: a list of text and image parts.

The paper's prompt (Geirhos et al. 2025, re-ranking with Gemini; as issue 18 reads it) shows the model the query and
its 50 nearest neighbours, each with its label, and asks for the query's label: 83.5% -> 88.5% top-1 on ImageNet, and
69.6% when the model sees the query alone. vmem's prompt adds two things, each a switch (`PromptSwitches`), so that
the paper's prompt can be asked as is and each addition measured on its own:

- `show_distances`: each neighbour's cosine distance to the query is written beside its label (the paper shows
  none);
- `restrict_to_neighbor_labels`: the closing question lists the labels among the shown neighbours and asks for one
  of them, copied exactly (the paper gives no list). Off, the question asks for the label without a list, and the
  answer is read against every class of the memory (`answers.interpret`), so that "Sneakers." still counts.

With no neighbour shown (the paper's query-only ablation), the model has nothing to take the label names from, so
the question always lists every class of the memory, whatever `restrict_to_neighbor_labels` says.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

from PIL import Image


class PromptRequest(Protocol):
    """What the prompt reads of a question (vmem_core.rerank.base.RerankRequest, whose module imports this one)."""

    query_png: bytes
    neighbors: Sequence
    candidates: Sequence[str]
    allow_new: bool
    show_distances: bool
    list_candidates: bool

# Bumped whenever the wording changes, so cached answers to the old prompt are not reused.
PROMPT_VERSION = 1
QUERY_MAX_SIDE = 384  # larger costs more tokens (Gemini tiles images above 384 px) and rarely helps with a label


@dataclass(frozen=True)
class PromptSwitches:
    """What vmem's prompt adds to the paper's (see the module's docstring); the defaults are vmem's prompt."""

    show_distances: bool = True
    restrict_to_neighbor_labels: bool = True

    def to_dict(self) -> dict:
        return {"show_distances": self.show_distances,
                "restrict_to_neighbor_labels": self.restrict_to_neighbor_labels}


VMEM_PROMPT = PromptSwitches()
PAPER_PROMPT = PromptSwitches(show_distances=False, restrict_to_neighbor_labels=False)


@dataclass(frozen=True)
class PromptPart:
    text: Optional[str] = None
    image: Optional[bytes] = None  # PNG bytes

    @property
    def is_image(self) -> bool:
        return self.image is not None


def query_png(image: Image.Image, max_side: int = QUERY_MAX_SIDE) -> bytes:
    """PNG bytes of the query image, shrunk to fit max_side x max_side (never enlarged)."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def instruction(candidates, allow_new: bool, listed: bool = True) -> str:
    """The closing question: with the candidates listed, or (the paper's prompt) without a list.

    >>> instruction(["bag", "sneaker"], False)
    'Which label does the query image show? Answer with exactly one label from this list, copied exactly, and nothing else: ["bag", "sneaker"]'
    >>> instruction(["bag", "sneaker"], False, listed=False)
    'Which label does the query image show? Answer with its label only, in the style of the labels above, and nothing else.'
    """
    if not listed:
        return ("Which label does the query image show? Answer with its label only, in the style of the labels above, "
                "and nothing else.")
    text = ("Which label does the query image show? Answer with exactly one label from this list, copied exactly, "
            f"and nothing else: {json.dumps(list(candidates), ensure_ascii=False)}")
    if allow_new:
        text += ". If none of them fits, answer with the right label instead, in the same style, and nothing else."
    return text


def build_prompt(request: PromptRequest) -> list[PromptPart]:
    """The parts of one question, in order: the introduction, the query image, each shown neighbour's label (and
    distance, if switched on) then its thumbnail, and the closing question."""
    shown = len(request.neighbors)
    intro = (f"You will see a query image, then its {shown} nearest neighbours from a labelled image memory, nearest "
             "first, each with its label. Decide which label the query image shows." if shown else
             "You will see a query image. Decide which label it shows.")
    parts = [PromptPart(text=intro), PromptPart(text="Query image:"), PromptPart(image=request.query_png)]
    for rank, neighbor in enumerate(request.neighbors, start=1):
        distance = f" (distance {neighbor.distance:.3f})" if request.show_distances else ""
        note = "" if neighbor.thumbnail else " (no image stored)"
        parts.append(PromptPart(text=f"Neighbour {rank} of {shown}: label {json.dumps(neighbor.label, ensure_ascii=False)}"
                                     f"{distance}{note}"))
        if neighbor.thumbnail:
            parts.append(PromptPart(image=neighbor.thumbnail))
    parts.append(PromptPart(text=instruction(request.candidates, request.allow_new, request.list_candidates)))
    return parts
