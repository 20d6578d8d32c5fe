"""`vmem classify --rerank`, `vmem eval --rerank` and `vmem search-text`, run in-process against fake servers."""

from __future__ import annotations

import io
import json

import pytest


from vmem_core.cli import main
from vmem_core.rerank import RerankCache

from .fake_vlm import FakeVLM, Step
from .helpers import SAMPLE, new_memory, sample_folder
from .test_rerank import KEY, LABELS


@pytest.fixture
def mem(tmp_path, monkeypatch):
    root = sample_folder(tmp_path / "data", LABELS, per_label=20)
    with new_memory(tmp_path / "mem") as memory:
        memory.exemplars.build(root)
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "mem"


@pytest.fixture(params=["gemini", "openai"])
def fake(request, monkeypatch):
    with FakeVLM(request.param) as server:
        if server.api == "gemini":
            monkeypatch.setenv("GEMINI_API_KEY", KEY)
            monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        yield server


def queries(label, n):
    return [str(p) for p in sorted((SAMPLE / "queries" / label).glob("*.png"))[:n]]


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_adds_the_model_answer_and_keeps_the_json_contract(mem, fake, capsys):
    images = queries("sneaker", 1) + queries("bag", 1)
    code, out, err = run(capsys, "classify", mem, *images, "--k", "5", "--rerank", fake.spec, "--yes", "--json")
    assert code == 0, err
    payload = json.loads(out)
    for item in payload:
        assert set(item) == {"image", "label", "scores", "neighbors", "rerank"}  # old keys kept, one added
        assert len(item["neighbors"]) == 5  # the vote still uses k=5; the model sees 50
        assert item["rerank"]["label"] == "sneaker" and item["rerank"]["model"] == fake.spec
    assert len(fake.requests) == 2
    assert sum(1 for kind, _ in fake.parts() if kind == "image") == 51
    assert "2 call(s) for 2 queries" in err

    # the same command again: every answer from the cache, no request
    code, out, err = run(capsys, "classify", mem, *images, "--k", "5", "--rerank", fake.spec, "--json")
    assert code == 0 and len(fake.requests) == 2
    assert all(item["rerank"]["cached"] for item in json.loads(out))


def test_classify_text_output_shows_the_answer_beside_the_vote(mem, fake, capsys):
    fake.answer = "a bicycle"
    code, out, err = run(capsys, "classify", mem, queries("sneaker", 1)[0], "--rerank", fake.spec)
    assert code == 0, err
    assert "no label (not_a_candidate: 'a bicycle' is not one of the" in out and "raw answer 'a bicycle'" in out


def test_eval_reports_knn_and_reranked_accuracy_side_by_side(mem, fake, capsys, tmp_path):
    data = SAMPLE / "queries"
    # not confirmed, and no terminal to ask on: nothing is sent
    code, out, err = run(capsys, "eval", mem, data, "--rerank", fake.spec, "--limit", "6", "--json")
    assert code == 2 and "6 model call(s) would start; add --yes to confirm (nothing was sent)" in err
    assert "6 call(s) for 6 queries (0 answered from the cache" in err and fake.requests == []

    code, out, err = run(capsys, "eval", mem, data, "--rerank", fake.spec, "--limit", "6", "--yes", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert {"accuracy", "best", "best_is", "queries", "k_max", "pruning", "unknown_labels", "rejected"} <= set(payload)
    rerank = payload["rerank"]
    assert rerank["queries"] == payload["queries"] == 6 and rerank["calls_made"] == 6 and len(fake.requests) == 6
    rows = rerank["per_query"]
    truths = [row["true"] for row in rows]
    # the fake always answers "sneaker": right exactly where the truth is sneaker (and it was a candidate)
    assert rerank["reranked_accuracy"] == pytest.approx(sum(t == "sneaker" for t in truths) / 6)
    assert rerank["knn_accuracy"] == pytest.approx(sum(r["knn"] == r["true"] for r in rows) / 6)
    assert rerank["k"] == 50 and rerank["plan"]["calls"] == 6
    assert payload["sample"] == {"size": 6, "of": 200, "seed": 0}

    # the same sample again costs nothing, and the text output puts both accuracies side by side
    code, out, err = run(capsys, "eval", mem, data, "--rerank", fake.spec, "--limit", "6")
    assert code == 0, err
    assert len(fake.requests) == 6 and "0 call(s) for 6 queries (6 answered from the cache" in err
    assert "kNN vote (rank, k=50)" in out and f"re-ranked by {fake.spec}" in out
    assert "0 call(s) made" in out
    assert out.startswith("6 queries (a random sample of 6 of 200, seed 0); the model is shown the 50 nearest")


def test_eval_confirmation_on_a_terminal(mem, fake, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, err = run(capsys, "eval", mem, SAMPLE / "queries", "--rerank", fake.spec, "--limit", "3")
    assert code == 2 and "start? [y/N]" in err and "cancelled" in err and fake.requests == []
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, err = run(capsys, "eval", mem, SAMPLE / "queries", "--rerank", fake.spec, "--limit", "3", "--json")
    assert code == 0 and len(fake.requests) == 3


def test_a_batch_stopped_by_the_server_resumes_from_the_cache(mem, fake, capsys):
    fake.script = [Step(answer="bag"), Step(answer="bag"), Step(status=404)]
    args = ("eval", mem, SAMPLE / "queries", "--rerank", fake.spec, "--limit", "4", "--yes")
    code, out, err = run(capsys, *args)
    assert code == 2 and "(stopped at query 3 of 4; the answers received before it are cached" in err
    assert len(fake.requests) == 3
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    assert len(fake.requests) == 5  # only the two unanswered queries were asked again
    assert [r["cached"] for r in json.loads(out)["rerank"]["per_query"]] == [True, True, False, False]


def test_missing_key_is_one_clear_line(mem, capsys, monkeypatch):
    with FakeVLM("gemini") as server:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        code, out, err = run(capsys, "eval", mem, SAMPLE / "queries", "--rerank", "gemini:fake", "--limit", "2",
                             "--yes")
        assert code == 2 and server.requests == []
    assert err.startswith("vmem: error: gemini re-ranking needs an API key in GEMINI_API_KEY")


def test_limit_without_rerank_samples_the_plain_evaluation_and_says_so(mem, capsys):
    code, out, err = run(capsys, "eval", mem, SAMPLE / "queries", "--limit", "7", "--seed", "3", "--k-max", "5",
                         "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["queries"] == 7 and payload["sample"] == {"size": 7, "of": 200, "seed": 3}
    code, out, err = run(capsys, "eval", mem, SAMPLE / "queries", "--limit", "7", "--seed", "3", "--k-max", "5")
    assert code == 0, err
    assert out.splitlines()[0] == "7 queries (a random sample of 7 of 200, seed 3), k = 1..5, pruning none"
    # every query evaluated, with or without a --limit above their number: no sample to speak of
    for limit in ((), ("--limit", "500")):
        code, out, err = run(capsys, "eval", mem, SAMPLE / "queries", *limit, "--k-max", "5", "--json")
        assert code == 0 and json.loads(out)["sample"] is None and json.loads(out)["queries"] == 200
    code, out, err = run(capsys, "eval", mem, SAMPLE / "queries", "--k-max", "5")
    assert out.splitlines()[0] == "200 queries, k = 1..5, pruning none"


def test_bad_spec_and_options(mem, capsys):
    code, out, err = run(capsys, "classify", mem, queries("bag", 1)[0], "--rerank", "claude:opus")
    assert code == 2 and "unknown re-ranker 'claude:opus'; accepted: gemini:<model>" in err
    with pytest.raises(SystemExit):
        main(["eval", str(mem), str(SAMPLE / "queries"), "--limit", "0"])
    assert "--limit must be at least 1, got 0" in capsys.readouterr().err


def test_rerank_ablations_without_a_model_is_refused_not_ignored(mem, capsys):
    code, out, err = run(capsys, "eval", mem, SAMPLE / "queries", "--limit", "3", "--rerank-ablations")
    assert code == 2 and out == ""
    assert "--rerank-ablations compares re-ranking configurations: it needs --rerank SPEC" in err


def test_a_negative_price_is_refused_before_any_call(mem, fake, capsys):
    code, out, err = run(capsys, "classify", mem, queries("bag", 1)[0], "--rerank", fake.spec, "--price-per-mtok",
                         "-3", "--yes")
    assert code == 2 and "--price-per-mtok must be a price in US dollars, 0 or more, got -3.0" in err
    assert fake.requests == []


def test_text_queries_on_an_image_only_memory_say_why(mem, capsys):
    code, out, err = run(capsys, "search-text", mem, "a red sneaker")
    assert code == 2 and "embeds images only; text search and zero-shot scores need a CLIP encoder" in err
    code, out, err = run(capsys, "classify", mem, queries("bag", 1)[0], "--zero-shot")
    assert code == 2 and "embeds images only" in err


def test_a_purge_forgets_answers_given_with_the_purged_exemplar_in_view(mem, fake, capsys):
    for label in ("bag", "trouser"):
        code, out, err = run(capsys, "classify", mem, queries(label, 1)[0], "--rerank", fake.spec, "--rerank-shown",
                             "3", "--json")
        assert code == 0, err
    assert len(RerankCache(mem)) == 2
    shown_to_bag = json.loads(out)[0]["neighbors"]  # the trouser query's; k=50 lists every exemplar
    code, out, err = run(capsys, "classify", mem, queries("bag", 1)[0], "--k", "3", "--json")
    nearest_bag = json.loads(out)[0]["neighbors"][0]["id"]
    assert nearest_bag not in [n["id"] for n in shown_to_bag[:3]]
    assert run(capsys, "delete", mem, nearest_bag)[0] == 0
    code, out, err = run(capsys, "purge", mem, nearest_bag, "--json")
    assert code == 0, err
    assert len(RerankCache(mem)) == 1  # the bag answer is gone, the trouser answer stays


def test_app_passes_the_reranker_to_the_page_and_rejects_a_bad_spec(mem, capsys, launched_apps):
    code, out, err = run(capsys, "app", mem, "--rerank", "gemini")
    assert code == 2 and "unknown re-ranker 'gemini'" in err and launched_apps == []
    assert run(capsys, "app", mem, "--rerank", "openai:http://localhost:8000/v1:llava")[0] == 0
    assert launched_apps[0][1]["VMEM_RERANK"] == "openai:http://localhost:8000/v1:llava"
