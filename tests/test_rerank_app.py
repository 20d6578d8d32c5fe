"""The Classify page's "Ask the model" button (against a fake server) and text controls (CLIP memories only)."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from vmem_core import VisualMemory
from vmem_core.analysis.text_query import search_text

from .fake_vlm import FakeVLM
from .helpers import REPO, TIMEOUT, new_memory, texts


def start(monkeypatch, memory_path, rerank=None):
    monkeypatch.setenv("VMEM_MEMORY", str(memory_path))
    if rerank:
        monkeypatch.setenv("VMEM_RERANK", rerank)
    else:
        monkeypatch.delenv("VMEM_RERANK", raising=False)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def pixel_memory(tmp_path, small_folder):
    with new_memory(tmp_path / "app.vmem") as memory:
        memory.exemplars.build(small_folder)
    return tmp_path / "app.vmem"


def ask_buttons(at):
    return [b for b in at.button if b.label == "Ask the model"]


def test_ask_the_model_shows_its_label_beside_the_vote(pixel_memory, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeVLM("openai", answer="Trousers.") as server:
        at = start(monkeypatch, pixel_memory, server.spec)
        (button,) = ask_buttons(at)
        assert server.requests == []  # nothing is sent until the button is pressed
        button.click().run()
        assert not at.exception, at.exception
        vote = next(s.value for s in at.subheader if s.value.startswith("Prediction: ")).removeprefix("Prediction: ")
        agreement = "agrees with" if vote == "trouser" else "differs from"
        assert f"**Model: trouser** ({agreement} the kNN vote: {vote})" in texts(at)
        assert f"{server.spec} answered 'Trousers.'" in texts(at)
        assert len(server.requests) == 1
        # the answer stays through other changes, and asking again is answered from the cache
        at.slider(key="k").set_value(3).run()
        assert "answered 'Trousers.'" in texts(at)
        ask_buttons(at)[0].click().run()
        assert "(from the cache)" in texts(at) and len(server.requests) == 1

        # two other queries, one button each; an answer that is no candidate is reported, not mapped
        server.answer = "a bicycle"
        picker = at.multiselect(key="classify-samples")
        picker.set_value([o for o in picker.options if o.startswith(("bag/", "trouser/"))][:2]).run()
        for button in ask_buttons(at):
            button.click()
        at.run()
        assert not at.exception, at.exception
        assert texts(at).count("The model gave no usable label (not a candidate): 'a bicycle' is not one") == 2
        assert len(server.requests) == 3


def test_no_reranker_configured_means_no_button(pixel_memory, monkeypatch):
    at = start(monkeypatch, pixel_memory)
    assert ask_buttons(at) == [] and "re-rank" not in texts(at).lower()
    assert not [t for t in at.text_input if t.label == "Search the memory by text"]  # image-only encoder


def test_a_configured_reranker_without_its_key_says_so(pixel_memory, monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    at = start(monkeypatch, pixel_memory, "gemini:gemini-2.5-flash")
    assert ask_buttons(at) == []
    assert "configured but unavailable: gemini re-ranking needs an API key in GEMINI_API_KEY" in texts(at)


def test_text_search_and_zero_shot_on_a_clip_memory(clip_memory, monkeypatch):  # noqa: F811
    at = start(monkeypatch, clip_memory)
    assert "Zero-shot from the label names: " in texts(at)
    (box,) = [t for t in at.text_input if t.label == "Search the memory by text"]
    box.set_value("a red sneaker").run()
    assert not at.exception, at.exception
    shown = [c.value for c in at.caption if re.match(r"^#\d+ \S+ \(id \d+\) d \d", c.value)]
    with VisualMemory.open(clip_memory) as memory:
        expected = search_text(memory, "a red sneaker", 12)
    # the grid fills column by column: compare as sets
    assert sorted(shown) == sorted(f"#{h.rank} {h.label} (id {h.id}) d {h.distance:.3f}" for h in expected)
