"""Text search and zero-shot label scores, on a memory built with a randomly initialised tiny open_clip model saved
as a local checkpoint (no weights can be downloaded here): these tests check the plumbing, not the semantics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vmem_core import VisualMemory
from vmem_core.analysis.text_query import TextQueryError, search_text, text_unsupported_reason, zero_shot_scores
from vmem_core.cli import main

from .helpers import SAMPLE


def test_search_by_text_returns_the_exemplars_nearest_to_the_sentence(clip_memory):
    with VisualMemory.open(clip_memory) as memory:
        assert text_unsupported_reason(memory) is None
        hits = search_text(memory, "a red sneaker", k=5)
        text = memory.encoder.encode_text(["a red sneaker"])[0]
        ids, vectors = memory.exemplars.embeddings()
        expected = np.argsort(-(vectors @ text))[:5]
        assert [h.id for h in hits] == ids[expected].tolist()
        assert [round(h.distance, 5) for h in hits] == [round(1 - float(vectors[i] @ text), 5) for i in expected]
        assert [h.label for h in hits] == [memory.table.label_of(int(ids[i])) for i in expected]
        with pytest.raises(TextQueryError, match="the text query is empty"):
            search_text(memory, "  ")


def test_zero_shot_scores_come_from_the_label_names(clip_memory):
    with VisualMemory.open(clip_memory) as memory:
        image = memory.exemplars.encode([sorted((SAMPLE / "queries" / "bag").glob("*.png"))[0]])
        (scores,) = zero_shot_scores(memory, image)
        assert set(scores) == {"bag", "sneaker", "trouser"} and sum(scores.values()) == pytest.approx(1.0)
        assert list(scores.values()) == sorted(scores.values(), reverse=True)
        names = memory.encoder.encode_text([f"a photo of a {label}." for label in ("bag", "sneaker", "trouser")])
        logits = 100 * image[0] @ names.T
        reference = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert [scores[label] for label in ("bag", "sneaker", "trouser")] == pytest.approx(reference.tolist())
        memory.exemplars.add([sorted((SAMPLE / "memory" / "dress").glob("*.png"))[0]], "dress")
        assert "dress" in zero_shot_scores(memory, image)[0]  # a new label is scored at once


def test_cli_text_search_and_zero_shot(clip_memory, capsys):
    assert main(["search-text", str(clip_memory), "a red sneaker", "--k", "3", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["text"] == "a red sneaker" and [h["rank"] for h in payload["hits"]] == [0, 1, 2]
    query = str(sorted((SAMPLE / "queries" / "bag").glob("*.png"))[0])
    assert main(["classify", str(clip_memory), query, "--k", "3", "--zero-shot", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert set(item) == {"image", "label", "scores", "neighbors", "zero_shot"}
    assert sum(item["zero_shot"].values()) == pytest.approx(1.0)
    assert main(["classify", str(clip_memory), query, "--zero-shot"]) == 0
    assert "zero-shot from label names: " in capsys.readouterr().out
