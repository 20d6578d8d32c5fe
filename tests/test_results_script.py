"""scripts/results.py beyond the registry's experiments: --device, and the re-ranking and unlearning parts that need
a real memory (their sections and verdicts, computed from what the library measured)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from vmem_core import devices
from vmem_core.analysis import claim_evidence, claims
from vmem_core.analysis.unlearning import measure_unlearning
from vmem_core.rerank.evaluation import evaluate_configurations, paper_configurations

from .fake_vlm import Step
from .helpers import REPO
from .test_rerank import query, reranker
from .test_rerank_evaluation import fake, memory60  # noqa: F401 (fixtures: the fake servers, a 60-exemplar memory)

SCRIPT = REPO / "scripts" / "results.py"
META = {"date": "today", "seconds": 1, "cores": 2, "cached": True, "memory": 60, "queries": 4, "idx_dir": "x",
        "encoder": "test", "k_max": 20}


@pytest.fixture
def script(monkeypatch):
    spec = importlib.util.spec_from_file_location("results_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "export", lambda fig, out, name: f"![{name}]")
    yield module
    devices.set_default_device(None)


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_an_unknown_device_is_refused_naming_it_and_what_is_accepted():
    done = run_script("--device", "gpu", "--limit", "5")
    assert done.returncode == 2
    assert "--device 'gpu' is not one vmem knows; accepted: auto, cpu, cuda, cuda:N (N = 0, 1, ...)" in done.stderr


@pytest.mark.skipif(devices.cuda_available(), reason="this machine has CUDA devices")
def test_a_cuda_device_that_torch_does_not_see_ends_the_script_with_the_reason():
    done = run_script("--device", "cuda:1", "--limit", "5")
    assert done.returncode == 1
    assert "results: device 'cuda:1' requested, but torch sees no CUDA device; accepted here: auto, cpu" in done.stderr


def test_the_chosen_device_is_the_process_default_and_the_report_names_it(script, tmp_path):
    chosen = script.choose_device("cpu")
    assert (chosen.name, devices.default_device()) == ("cpu", "cpu")  # what the encoder and exact_top_k now use
    report = script.write_report({}, tmp_path, {**META, "device": chosen.name, "device_name": chosen.description})
    assert "Device (encoding and exact search): `cpu`." in report
    assert "Device (encoding and exact search): not recorded." in script.write_report({}, tmp_path, META)


def test_unlearning_section_and_verdict_come_from_the_measurement(script, memory, tmp_path):
    ids, vectors = memory.exemplars.embeddings()
    measured = {**measure_unlearning(memory, deletions=4, probes=vectors), "build_seconds": 1.0}
    report = script.write_report({"unlearning": measured}, tmp_path, META)
    assert "## Unlearning" in report and "purged in one certified purge" in report
    assert f"{measured['delete_ms']['median']:.2f} / {measured['delete_ms']['p95']:.2f}" in report
    assert "| exactness | yes | 12 probe queries" in report
    timing = claim_evidence.unlearning_timing(measured)
    assert len(measured["delete_ms_all"]) == 4
    p95 = claims.BY_ID["delete-latency"].verdict(timing["delete-latency"])
    assert p95.verdict in (claims.HOLDS, claims.INCONCLUSIVE, claims.FAILS) and "median" in p95.reason
    failed = {**measured, "certificate": {"passed": False, "checks": [
        {"name": "byte scan", "passed": False, "detail": "found"}, {"name": "exactness", "passed": True,
                                                                   "detail": ""}]}}
    purge = claims.BY_ID["purge"].verdict(claim_evidence.unlearning_timing(failed)["purge"])
    assert purge.verdict == claims.FAILS and "byte scan" in purge.reason
    assert claims.BY_ID["purge"].verdict(None).verdict == claims.NOT_COMPARABLE


def test_without_a_model_the_report_says_no_real_figure_exists(script, tmp_path):
    result = script.run_reranking(None, "", None, None, None, 5)
    assert result == {"status": "no model", "reason": "no --rerank SPEC given and $VMEM_RERANK is not set"}
    report = script.write_report({"re-ranking": result}, tmp_path, META)
    assert "**No real figure exists yet**: no --rerank SPEC given" in report
    assert "verified end to end against the test suite's fake server" in report and "| accuracy |" not in report
    found = claims.BY_ID["reranking"].verdict(claim_evidence.reranking_evidence(result))
    assert (found.verdict, found.reason) == (claims.NOT_COMPARABLE, "no --rerank SPEC given and $VMEM_RERANK is not set")


def test_a_measured_study_becomes_the_section_and_its_verdict(script, memory60, fake, tmp_path):  # noqa: F811
    items = [query("sneaker", 0), query("bag", 0)]
    fake.script = [Step(answer="sneaker"), Step(answer="bag")] * 4 + [Step(answer="a bicycle")] * 2
    study = evaluate_configurations(memory60, reranker(fake), [i.image for i in items], [i.sha256 for i in items],
                                    [i.source for i in items], ["sneaker", "bag"],
                                    memory60.encoder.encode([i.image for i in items]), paper_configurations(),
                                    k_max=20, fixed_k=5)
    result = {"status": "measured", "spec": fake.spec, **study.to_dict()}
    report = script.write_report({"re-ranking": result}, tmp_path, META)
    assert "| re-ranked: paper's prompt (labels only) | 50 | no | no | 100.00 | 2 of 2 |  |" in report
    assert "| re-ranked: query only (no neighbour shown) | 0 | no | yes | 0.00 | 0 of 2 | 2 not a candidate |" in report
    best = study.knn_best()
    assert f"best-over-k (k={best['k']}, chosen on these queries)" in report


def test_report_only_reproduces_the_committed_report_byte_for_byte(script, monkeypatch):
    """docs/RESULTS.md is what write_report makes of the committed results.json and meta.json (the figures' links
    are the export's; the PNGs themselves are not compared)."""
    import json

    monkeypatch.setattr(script, "export", lambda fig, out, name: f"![{name}](results/{name}.png)")
    docs = REPO / "docs"
    results = json.loads((docs / "results" / "results.json").read_text())
    meta = json.loads((docs / "results" / "meta.json").read_text())
    assert script.write_report(results, docs, meta) == (docs / "RESULTS.md").read_text()


def test_the_committed_report_opens_with_a_claims_table_of_16_rows_or_more_none_citing_an_issue():
    text = (REPO / "docs" / "RESULTS.md").read_text()
    first = text.index("## ")
    assert text[first:].startswith("## Claims: the paper against this run")
    table = text[first:text.index("### Criteria, fixed")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| claim |")]
    assert len(rows) >= 16
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert len(cells) == 5 and all(cells[:3]), row
        assert cells[4].split(" (")[0] in claims.VERDICTS, row
        assert "issue" not in row.lower(), row
