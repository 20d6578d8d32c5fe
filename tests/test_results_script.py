"""scripts/results.py beyond the registry's experiments: --device, and the re-ranking and unlearning parts that need
a real memory (their sections and verdicts, computed from what the library measured)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from vmem_core import devices
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
    row = script.unlearning_verdict({"unlearning": measured})
    assert row[0] == "unlearning" and '"< 20 ms"' in row[1]
    fast = measured["delete_ms"]["median"] < 20
    assert row[4].startswith("holds" if fast else "does not hold") and "certificate exact, no bytes left" in row[4]
    failed = {**measured, "certificate": {"passed": False, "checks": [
        {"name": "byte scan", "passed": False, "detail": "found"}, {"name": "exactness", "passed": True,
                                                                   "detail": ""}]}}
    assert script.unlearning_verdict({"unlearning": failed})[4].startswith("does not hold")
    assert "FAILED: byte scan" in script.unlearning_verdict({"unlearning": failed})[4]
    assert script.unlearning_verdict({})[4] == "not comparable (not run in this report)"


def test_without_a_model_the_report_says_no_real_figure_exists(script, tmp_path):
    result = script.run_reranking(None, "", None, None, None, 5)
    assert result == {"status": "no model", "reason": "no --rerank SPEC given and $VMEM_RERANK is not set"}
    report = script.write_report({"re-ranking": result}, tmp_path, META)
    assert "**No real figure exists yet**: no --rerank SPEC given" in report
    assert "verified end to end against the test suite's fake server" in report and "| accuracy |" not in report
    row = script.reranking_verdict({"re-ranking": result})
    assert row[4] == "not comparable: no model reachable here" and "83.5% -> 88.5%" in row[1]


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
    row = script.reranking_verdict({"re-ranking": result})
    gain = 1.0 - best["accuracy"]
    assert row[4] == ("holds" if gain > 0 else "does not hold") + f" ({100 * gain:+.2f} pp over kNN at its best k)"
    assert "query only 0.00%" in row[3]
