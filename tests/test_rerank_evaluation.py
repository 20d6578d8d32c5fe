"""Re-ranking evaluated as the paper does: the prompt's switches, the query-only ablation, every configuration scored
beside kNN at a fixed k and at its best k, against the fake VLM servers."""

from __future__ import annotations

import json

import numpy as np
import pytest


from vmem_core.analysis.evaluate import evaluate_embeddings
from vmem_core.cli import main
from vmem_core.errors import VmemError
from vmem_core.rerank.cache import cache_key
from vmem_core.rerank.evaluation import (
    RerankConfiguration,
    distinct,
    evaluate_configurations,
    paper_configurations,
)
from vmem_core.rerank.pipeline import make_requests
from vmem_core.rerank.prompt import PAPER_PROMPT, VMEM_PROMPT, PromptSwitches

from .fake_vlm import Step
from .helpers import SAMPLE, new_memory
from . import test_rerank
from .test_rerank import LABELS, query, reranker

fake = test_rerank.fake  # the fake Gemini and OpenAI servers, one test per API


@pytest.fixture
def memory60(tmp_path):
    """60 exemplars (3 labels x 20), a fresh one per test so that no test finds another's cached answers."""
    root = tmp_path / "data"
    for label in LABELS:
        (root / label).mkdir(parents=True)
        for path in sorted((SAMPLE / "memory" / label).glob("*.png"))[:20]:
            (root / label / path.name).write_bytes(path.read_bytes())
    memory = new_memory(tmp_path / "mem")
    memory.exemplars.build(root)
    yield memory
    memory.close()


def ask(memory, fake, shown, switches, item=None):
    """Send one question and return the prompt the server received, as (kind, value) pairs."""
    item = item or query()
    request = make_requests(memory, [item.image], [item.sha256], memory.encoder.encode([item.image]), shown,
                            switches=switches)[0]
    reranker(fake).rerank(request)
    return fake.parts()


def texts(parts):
    return [value for kind, value in parts if kind == "text"]


def listed(closing: str):
    """The candidate list of the closing question, or None when it lists none."""
    return json.loads(closing[closing.index("["):]) if "[" in closing else None


def test_the_query_only_ablation_shows_no_neighbour_and_lists_every_class(memory60, fake):
    parts = ask(memory60, fake, 0, VMEM_PROMPT)
    assert [kind for kind, _ in parts].count("image") == 1  # the query, nothing else
    assert not any("Neighbour" in text or "distance" in text for text in texts(parts))
    assert texts(parts)[0] == "You will see a query image. Decide which label it shows."
    assert listed(texts(parts)[-1]) == sorted(LABELS)  # every class of the memory, whatever the switches say
    assert ask(memory60, fake, 0, PAPER_PROMPT)[-1] == parts[-1]


@pytest.mark.parametrize("switches", [VMEM_PROMPT, PAPER_PROMPT, PromptSwitches(True, False),
                                      PromptSwitches(False, True)])
def test_each_switch_changes_the_prompt_and_only_its_part(memory60, fake, switches):
    item = query()
    parts = ask(memory60, fake, 50, switches, item)
    lines = [text for text in texts(parts) if text.startswith("Neighbour ")]
    assert len(lines) == 50 and [kind for kind, _ in parts].count("image") == 51
    ids, distances = memory60.search(memory60.encoder.encode([item.image]), 50)
    for rank, (exemplar, distance) in enumerate(zip(ids[0], distances[0]), start=1):
        label = f'Neighbour {rank} of 50: label "{memory60.table.label_of(int(exemplar))}"'
        assert lines[rank - 1] == (label + f" (distance {distance:.3f})" if switches.show_distances else label)
    closing = texts(parts)[-1]
    if switches.restrict_to_neighbor_labels:
        neighbour_labels = list(dict.fromkeys(memory60.table.label_of(int(i)) for i in ids[0]))
        assert listed(closing) == neighbour_labels
    else:
        assert listed(closing) is None and "label only" in closing


def test_the_paper_prompt_reads_its_answer_against_every_class(memory60):
    item = query()
    embedding = memory60.encoder.encode([item.image])
    # 5 shown are all sneakers here: restricted, only "sneaker" can be read; the paper's prompt reads any class
    restricted = make_requests(memory60, [item.image], [item.sha256], embedding, 5, switches=VMEM_PROMPT)[0]
    paper = make_requests(memory60, [item.image], [item.sha256], embedding, 5, switches=PAPER_PROMPT)[0]
    assert set(restricted.candidates) < set(LABELS)
    assert paper.candidates == tuple(sorted(LABELS)) and not paper.list_candidates
    # the cache tells the wordings apart, and vmem's own prompt keeps its key from before the switches existed
    keys = {cache_key("m", make_requests(memory60, [item.image], [item.sha256], embedding, 5, switches=s)[0])
            for s in (VMEM_PROMPT, PAPER_PROMPT, PromptSwitches(True, False), PromptSwitches(False, True))}
    assert len(keys) == 4


def test_a_negative_number_shown_is_refused_with_its_value(memory60):
    item = query()
    with pytest.raises(VmemError, match="must be 0 \\(the query alone\\) or more, got -1"):
        make_requests(memory60, [item.image], [item.sha256], memory60.encoder.encode([item.image]), -1)
    with pytest.raises(VmemError, match="'odd': neighbours shown must be 0 .* got -2"):
        RerankConfiguration("odd", -2)


def test_the_paper_configurations_and_their_deduplication():
    configurations = paper_configurations()
    assert [(c.shown, c.switches) for c in configurations] == [
        (50, PAPER_PROMPT), (50, PromptSwitches(True, False)), (50, PromptSwitches(False, True)),
        (50, VMEM_PROMPT), (0, PAPER_PROMPT)]
    again = distinct([RerankConfiguration("mine", 50, VMEM_PROMPT), *configurations,
                      RerankConfiguration("alone, switches on", 0, VMEM_PROMPT)])
    assert [c.name for c in again] == ["mine", "paper's prompt (labels only)", "+ distances",
                                       "+ answer restricted to the neighbours' labels",
                                       "query only (no neighbour shown)"]


def test_every_configuration_is_scored_beside_knn_at_fixed_and_best_k(memory60, fake):
    items = [query("sneaker", 0), query("sneaker", 1), query("bag", 0), query("bag", 1)]
    truths = ["sneaker", "sneaker", "bag", "bag"]
    embeddings = memory60.encoder.encode([i.image for i in items])
    refusal = json.dumps({"choices": [{"message": {"role": "assistant", "content": None, "refusal": "no"}}]}
                         if fake.api == "openai" else {"candidates": []})
    fake.script = [Step(answer="sneaker"), Step(answer="sneaker"), Step(answer="bag"), Step(answer="Sneakers."),
                   Step(answer="sneaker"), Step(body=refusal), Step(answer="a bicycle"), Step(answer="bag or sneaker")]
    configurations = [paper_configurations()[0], paper_configurations()[-1]]
    plans = []
    study = evaluate_configurations(memory60, reranker(fake), [i.image for i in items], [i.sha256 for i in items],
                                    [i.source for i in items], truths, embeddings, configurations, k_max=30,
                                    fixed_k=3, confirm=lambda plan: plans.append(plan) or True)
    assert len(fake.requests) == 8 and plans[0].calls == 8  # one plan, confirmed once
    assert (plans[0].queries, plans[0].configurations, plans[0].requests) == (4, 2, 8)  # 4 queries, each asked twice
    assert "8 call(s): 4 queries x 2 configurations (0 answered from the cache" in plans[0].describe("m")
    images_sent = [sum(1 for kind, _ in fake.parts(i) if kind == "image") for i in range(8)]
    assert images_sent == [51] * 4 + [1] * 4
    paper, alone = (evaluation.to_dict() for evaluation in study.evaluations)
    assert (paper["correct"], paper["answered"], paper["reranked_accuracy"]) == (3, 4, 0.75)
    assert paper["without_label"] == {} and paper["configuration"]["restrict_to_neighbor_labels"] is False
    assert (alone["correct"], alone["answered"], alone["reranked_accuracy"]) == (1, 1, 0.25)
    assert alone["without_label"] == {"malformed": 1, "not_a_candidate": 1, "ambiguous": 1}
    assert alone["knn_accuracy"] is None and alone["k"] == 0 and alone["configuration"]["candidates_listed"]

    # the kNN baselines, checked against the plain evaluation of the same queries
    to_50 = evaluate_embeddings(memory60, embeddings, truths, 50, rules=["rank"]).accuracy["rank"]
    curve = to_50[:30]
    summary = study.to_dict()
    assert summary["knn"]["fixed_k"] == {"k": 3, "accuracy": pytest.approx(curve[2])}
    assert summary["knn"]["best_over_k"] == {"k": int(np.argmax(curve)) + 1, "accuracy": pytest.approx(curve.max())}
    assert "optimistic" in summary["knn"]["best_is"]
    assert paper["knn_accuracy"] == pytest.approx(to_50[49])  # the vote over the 50 neighbours the model saw
    rows = study.rows()
    assert [row["what"].split(":")[0] for row in rows] == [
        "kNN vote (rank, fixed k=3)", "kNN vote (rank, best-over-k", "re-ranked", "re-ranked"]

    # a rerun asks nothing: every answer with a label, or a refusal to name one, is cached
    again = evaluate_configurations(memory60, reranker(fake), [i.image for i in items], [i.sha256 for i in items],
                                    [i.source for i in items], truths, embeddings, configurations, k_max=30, fixed_k=3)
    assert len(fake.requests) == 9  # only the malformed answer (not kept) is asked again
    assert again.evaluations[0].reranked_accuracy == 0.75


def test_the_cli_evaluates_the_paper_configurations_beside_the_options_one(memory60, fake, capsys):
    path = memory60.path
    memory60.close()
    code = main(["eval", str(path), str(SAMPLE / "queries"), "--rerank", fake.spec, "--limit", "3", "--yes",
                 "--rerank-ablations", "--k", "5", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    assert payload["rerank"]["configuration"]["name"] == "as given by the options"  # the options' configuration
    assert payload["rerank"]["k"] == 50 and "knn_accuracy" in payload["rerank"]  # the keys it always had
    study = payload["rerank_study"]
    names = [c["configuration"]["name"] for c in study["configurations"]]
    assert names == ["as given by the options", "paper's prompt (labels only)", "+ distances",
                     "+ answer restricted to the neighbours' labels", "query only (no neighbour shown)"]
    assert len(fake.requests) == 15 and study["knn"]["fixed_k"]["k"] == 5
    assert "15 call(s): 3 queries x 5 configurations (0 answered from the cache" in err
    assert study["plan"]["queries"] == 3 and study["plan"]["configurations"] == 5 and study["plan"]["calls"] == 15
    assert study["knn"]["best_over_k"]["accuracy"] == max(payload["accuracy"]["rank"])

    code = main(["eval", str(path), str(SAMPLE / "queries"), "--rerank", fake.spec, "--limit", "3",
                 "--rerank-ablations", "--k", "5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(fake.requests) == 15 and "every configuration, on the same 3 queries:" in out
    assert "kNN vote (rank, best-over-k: k=" in out and "re-ranked: query only (no neighbour shown)" in out


def test_the_cli_switches_reach_the_prompt(memory60, fake, capsys):
    path = memory60.path
    memory60.close()
    image = str(sorted((SAMPLE / "queries" / "sneaker").glob("*.png"))[0])
    code = main(["classify", str(path), image, "--rerank", fake.spec, "--no-rerank-distances", "--no-rerank-restrict",
                 "--json"])
    assert code == 0, capsys.readouterr().err
    assert not any("distance" in text for text in texts(fake.parts())) and listed(texts(fake.parts())[-1]) is None
    code = main(["classify", str(path), image, "--rerank", fake.spec, "--rerank-shown", "0", "--json"])
    assert code == 0, capsys.readouterr().err
    assert [kind for kind, _ in fake.parts()].count("image") == 1
    with pytest.raises(SystemExit):
        main(["classify", str(path), image, "--rerank", fake.spec, "--rerank-shown", "-1"])
    assert "--rerank-shown must be 0 (the query alone) or more, got -1" in capsys.readouterr().err
