"""The prompt, as the paper's re-ranking stage asks it: the query image, then the nearest neighbours, each with its
label, then the instruction to answer with one label. Kept API-neutral: a list of text and image parts."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from PIL import Image

if TYPE_CHECKING:
    from .base import RerankRequest

# Bumped whenever the wording changes, so cached answers to the old prompt are not reused.
PROMPT_VERSION = 1
QUERY_MAX_SIDE = 384  # larger costs more tokens (Gemini tiles images above 384 px) and rarely helps with a label


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


def instruction(candidates, allow_new: bool) -> str:
    """The closing question.

    >>> instruction(["bag", "sneaker"], False)
    'Which label does the query image show? Answer with exactly one label from this list, copied exactly, and nothing else: ["bag", "sneaker"]'
    """
    text = ("Which label does the query image show? Answer with exactly one label from this list, copied exactly, "
            f"and nothing else: {json.dumps(list(candidates), ensure_ascii=False)}")
    if allow_new:
        text += ". If none of them fits, answer with the right label instead, in the same style, and nothing else."
    return text


def build_prompt(request: "RerankRequest") -> list[PromptPart]:
    shown = len(request.neighbors)
    parts = [
        PromptPart(text=f"You will see a query image, then its {shown} nearest neighbours from a labelled image "
                        "memory, nearest first, each with its label. Decide which label the query image shows."),
        PromptPart(text="Query image:"),
        PromptPart(image=request.query_png),
    ]
    for rank, neighbor in enumerate(request.neighbors, start=1):
        note = "" if neighbor.thumbnail else " (no image stored)"
        parts.append(PromptPart(text=f"Neighbour {rank} of {shown}: label {json.dumps(neighbor.label, ensure_ascii=False)}"
                                     f" (distance {neighbor.distance:.3f}){note}"))
        if neighbor.thumbnail:
            parts.append(PromptPart(image=neighbor.thumbnail))
    parts.append(PromptPart(text=instruction(request.candidates, request.allow_new)))
    return parts
