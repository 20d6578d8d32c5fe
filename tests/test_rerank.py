"""Re-ranking against local fake servers speaking the Gemini and the OpenAI chat-completions wire formats."""

from __future__ import annotations

import io
import json
import socket
import time

import numpy as np
import pytest
from PIL import Image


from vmem_core.ingest.images import load_image
from vmem_core.rerank import (
    CachingReranker,
    RerankCache,
    Reranker,
    RerankError,
    RerankResult,
    interpret,
    load_reranker,
    parse_spec,
)
from vmem_core.rerank.pipeline import make_requests, plan_batch, with_cache

from .fake_vlm import FakeVLM, Step
from .helpers import SAMPLE, new_memory, sample_folder

KEY = "test-secret-key-8c1f2e"
LABELS = ("bag", "sneaker", "trouser")


@pytest.fixture(scope="module")
def memory60(tmp_path_factory):
    """60 exemplars (3 labels x 20) with the pixel encoder: enough for 50 neighbours."""
    root = sample_folder(tmp_path_factory.mktemp("data60"), LABELS, per_label=20)
    memory = new_memory(tmp_path_factory.mktemp("m") / "mem")
    memory.exemplars.build(root)
    yield memory
    memory.close()


@pytest.fixture(params=["gemini", "openai"])
def fake(request, monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with FakeVLM(request.param) as server:
        if server.api == "gemini":
            monkeypatch.setenv("GEMINI_API_KEY", KEY)
            monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        yield server


def query(label="sneaker", index=0):
    return load_image(sorted((SAMPLE / "queries" / label).glob("*.png"))[index])


def request_for(memory, item=None, shown=50, allow_new=False):
    item = item or query()
    embedding = memory.encoder.encode([item.image])
    return make_requests(memory, [item.image], [item.sha256], embedding, shown, allow_new=allow_new)[0]


def reranker(fake, sleeps=None, **options):
    options.setdefault("backoff", 0.001)
    if sleeps is not None:
        options["sleep"] = sleeps.append
    return load_reranker(fake.spec, **options)


def test_request_carries_the_query_then_50_labelled_neighbors(memory60, fake):
    item = query()
    request = request_for(memory60, item)
    result = reranker(fake).rerank(request)
    assert (result.label, result.status, result.raw) == ("sneaker", "candidate", "sneaker")

    parts = fake.parts()
    images = [value for kind, value in parts if kind == "image"]
    assert len(images) == 51
    assert parts[1:3] == [("text", "Query image:"), ("image", request.query_png)]
    decoded = np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB"))
    assert np.array_equal(decoded, np.asarray(item.image))  # 28x28: sent whole, not shrunk
    # neighbours nearest first, each label then that exemplar's stored thumbnail, found independently here
    ids, distances = memory60.search(memory60.encoder.encode([item.image]), 50)
    thumbnails = memory60.exemplars.thumbnails(ids[0].tolist())
    for rank, (exemplar, distance) in enumerate(zip(ids[0], distances[0]), start=1):
        position = parts.index(("text", f'Neighbour {rank} of 50: label "{memory60.table.label_of(int(exemplar))}" '
                                        f"(distance {distance:.3f})"))
        assert parts[position + 1] == ("image", thumbnails[int(exemplar)])
    closing = parts[-1][1]
    assert closing.startswith("Which label does the query image show?")
    assert json.loads(closing[closing.index("["):]) == list(request.candidates)
    assert set(request.candidates) == set(LABELS)

    sent = fake.requests[-1]
    if fake.api == "gemini":
        assert sent.path.endswith("/models/fake-gemini:generateContent")
        assert sent.headers["x-goog-api-key"] == KEY
        assert sent.body["generationConfig"]["temperature"] == 0
    else:
        assert sent.path == "/v1/chat/completions" and sent.body["model"] == "fake-vlm"
        assert "Authorization" not in sent.headers  # no key set: none sent to a local server


@pytest.mark.parametrize("answer, label, status, matched_by", [
    ("sneaker", "sneaker", "candidate", "exact"),
    ("Sneakers.", "sneaker", "candidate", "normalised"),
    ("**Answer:** trouser", "trouser", "candidate", "exact"),
    ("The query image shows a bag, like most neighbours.", "bag", "candidate", "mentioned"),
    ("a bicycle", None, "not_a_candidate", None),
    ("sneaker or bag", None, "ambiguous", None),
])
def test_answers_are_parsed_and_non_candidates_reported(memory60, fake, answer, label, status, matched_by):
    fake.answer = answer
    request = request_for(memory60)
    assert set(request.candidates) == set(LABELS)
    result = reranker(fake).rerank(request)
    assert (result.label, result.status, result.matched_by) == (label, status, matched_by)
    assert result.raw == answer  # kept verbatim for inspection


def test_timeout_is_reported_for_that_query(memory60, fake):
    fake.script = [Step(answer="bag", delay=2.0)]
    start = time.monotonic()
    result = reranker(fake, timeout=0.3).rerank(request_for(memory60, shown=5))
    assert time.monotonic() - start < 1.8
    assert result.label is None and result.status == "error" and "timeout" in result.detail
    assert len(fake.requests) == 1  # a timeout is not retried: each try is paid for


def test_rate_limit_is_retried_with_exponential_backoff(memory60, fake):
    fake.script = [Step(status=429), Step(status=429)]
    sleeps = []
    result = reranker(fake, sleeps, backoff=0.01).rerank(request_for(memory60, shown=5))
    assert (result.label, result.attempts) == ("sneaker", 3)
    assert sleeps == [0.01, 0.02] and len(fake.requests) == 3


def test_server_retry_delay_wins_over_backoff(memory60, fake):
    if fake.api == "openai":
        fake.script = [Step(status=429, headers={"Retry-After": "0.05"})]
    else:  # Gemini puts the delay in the error's RetryInfo detail
        fake.script = [Step(status=429, body=json.dumps({"error": {
            "code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.05s"}]}}))]
    sleeps = []
    assert reranker(fake, sleeps, backoff=5).rerank(request_for(memory60, shown=5)).label == "sneaker"
    assert sleeps == [0.05]


def test_rate_limit_gives_up_after_the_last_attempt(memory60, fake):
    fake.script = [Step(status=429)] * 5
    sleeps = []
    result = reranker(fake, sleeps, attempts=2).rerank(request_for(memory60, shown=5))
    assert result.status == "error" and result.label is None and "gave up after 2 tries" in result.detail
    assert len(fake.requests) == 2 and len(sleeps) == 1


def test_server_errors_are_retried(memory60, fake):
    fake.script = [Step(status=500), Step(status=503)]
    result = reranker(fake, []).rerank(request_for(memory60, shown=5))
    assert result.label == "sneaker" and len(fake.requests) == 3


@pytest.mark.parametrize("body", ["this is not json", "{}", '{"choices": [], "candidates": []}'])
def test_malformed_responses_give_no_label(memory60, fake, body):
    fake.script = [Step(body=body)]
    result = reranker(fake).rerank(request_for(memory60, shown=5))
    assert result.status == "malformed" and result.label is None and result.detail
    assert len(fake.requests) == 1


def test_an_unreachable_server_stops_at_once(memory60, fake, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", closed)
    spec = "gemini:fake-gemini" if fake.api == "gemini" else f"openai:{closed}/v1:fake-vlm"
    sleeps = []
    with pytest.raises(RerankError, match="cannot reach"):
        load_reranker(spec, sleep=sleeps.append).rerank(request_for(memory60, shown=5))
    assert sleeps == []  # not retried: every query would fail the same way


def test_gemini_without_a_key_fails_before_any_request(monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with FakeVLM("gemini") as server:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        with pytest.raises(RerankError, match="GEMINI_API_KEY .or GOOGLE_API_KEY.; neither is set"):
            load_reranker("gemini:fake-gemini")
        assert server.requests == []


def test_refused_keys_stop_with_a_clear_error(memory60, fake, monkeypatch):
    fake.required_key = "the-right-key"
    request = request_for(memory60, shown=5)
    if fake.api == "openai":  # a server that needs a key, and none is set
        with pytest.raises(RerankError, match="set VMEM_RERANK_API_KEY") as caught:
            reranker(fake).rerank(request)
        monkeypatch.setenv("OPENAI_API_KEY", "the-right-key")
        assert reranker(fake).rerank(request).label == "sneaker"
        assert fake.requests[-1].headers["Authorization"] == "Bearer the-right-key"
    else:  # the key in the environment is wrong
        with pytest.raises(RerankError, match="API key was refused") as caught:
            reranker(fake).rerank(request)
        assert KEY not in str(caught.value)
        monkeypatch.setenv("GEMINI_API_KEY", "the-right-key")
        assert reranker(fake).rerank(request).label == "sneaker"
    assert len(fake.requests) == 2  # a refused key is not retried


def test_answers_are_cached_in_the_memory_and_a_rerun_costs_nothing(tmp_path, small_folder, fake, caplog):
    caplog.set_level("DEBUG")
    memory = new_memory(tmp_path / "mem")
    memory.exemplars.build(small_folder)
    first = request_for(memory, shown=12)
    cached = with_cache(reranker(fake), memory)
    assert plan_batch(cached, [first]).calls == 1
    assert cached.rerank(first).cached is False and len(fake.requests) == 1

    # a fresh handle on the same memory (a rerun): answered from disk, no request
    again = CachingReranker(reranker(fake), RerankCache(memory.path))
    result = again.rerank(request_for(memory, shown=12))
    assert (result.label, result.cached, len(fake.requests)) == ("sneaker", True, 1)
    assert plan_batch(again, [first]).calls == 0 and plan_batch(again, [first]).dollars == 0

    # what the model saw changed: asked again (another model, a relabelled neighbour)
    memory.exemplars.relabel([first.neighbors[0].id], "renamed")
    again.rerank(request_for(memory, shown=12))
    assert len(fake.requests) == 2

    # nothing in the memory's folder or the log holds the key
    for path in memory.path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text
    assert len(RerankCache(memory.path)) == 2
    assert RerankCache(memory.path).forget_exemplars([first.neighbors[0].id]) == 2
    memory.close()


def test_cost_estimate_counts_images_and_price(memory60, fake):
    request = request_for(memory60)
    plan = plan_batch(with_cache(reranker(fake, price_per_million_tokens=2.0), memory60), [request] * 3)
    per_image = 258 if fake.api == "gemini" else 85
    assert plan.calls == 3 and plan.input_tokens > 3 * 51 * per_image
    assert plan.input_tokens < 3 * 51 * per_image + 3 * 4000  # the text is a few thousand characters
    assert plan.dollars == pytest.approx(plan.input_tokens * 2.0 / 1e6)


@pytest.mark.parametrize("spec, message", [
    ("claude:x", "unknown re-ranker 'claude:x'; accepted: gemini:<model>"),
    ("gemini:", "unknown re-ranker"),
    ("openai:localhost:8000:llava", "unknown re-ranker"),
    ("openai:http://localhost:8000/v1", "unknown re-ranker"),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(RerankError, match=message):
        parse_spec(spec)


def test_any_object_with_a_name_and_rerank_is_a_reranker(memory60):
    class NearestLabel:  # e.g. a local model called in-process
        name = "nearest-label"

        def __init__(self):
            self.calls = 0

        def rerank(self, request):
            self.calls += 1
            label = request.neighbors[0].label
            return RerankResult(label, "candidate", label, self.name, "exact")

    plain = NearestLabel()
    assert isinstance(plain, Reranker)
    cached = with_cache(plain, memory60)
    request = request_for(memory60, shown=7)
    assert cached.rerank(request).label == memory60.table.label_of(request.neighbors[0].id)
    again = cached.rerank(request)
    assert again.cached and again.label == request.neighbors[0].label and plain.calls == 1


def test_interpretation_with_synonyms_and_new_labels():
    candidates = ["t-shirt/top", "ankle_boot", "bag"]
    assert interpret("T-shirt/Top", candidates).matched_by == "normalised"
    assert interpret("tee", candidates, synonyms={"t-shirt/top": ["tee", "t-shirt"]}).label == "t-shirt/top"
    assert interpret("It is an ankle boot.", candidates).label == "ankle_boot"
    assert interpret("boot", candidates).status == "not_a_candidate"  # never guessed from a part of a label
    new = interpret("Sandal.", candidates, allow_new=True)
    assert (new.label, new.status) == ("Sandal", "new")
    assert interpret("", candidates).status == "malformed"


def test_an_openai_key_never_travels_in_clear_text_to_another_machine(monkeypatch):
    from vmem_core.rerank.openai_compat import _key_for

    monkeypatch.delenv("VMEM_RERANK_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert _key_for("https://api.openai.com/v1") == "sk-openai"
    assert _key_for("http://localhost:8000/v1") == "sk-openai"
    assert _key_for("http://127.0.0.1:8000/v1") == "sk-openai"
    assert _key_for("http://gpu-box.lan:8000/v1") is None  # plain http to another host: not OpenAI's key
    monkeypatch.setenv("VMEM_RERANK_API_KEY", "server-key")  # a key meant for that server goes where it points
    assert _key_for("http://gpu-box.lan:8000/v1") == "server-key"
