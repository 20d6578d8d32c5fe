"""The experiment registry: every experiment is in it, and each entry's run, text report and figures work together."""

import importlib.util
import json

import plotly.graph_objects as go
import pytest

from vmem_core.analysis import claims, registry
from vmem_core.analysis.experiments import accuracy_and_hit_rate, ood_auroc, reliability_from_loo
from vmem_core.analysis.neighbor_cache import build_cache
from vmem_core.cli import build_parser
from vmem_core.errors import VmemError
from vmem_core.voting import VoteSettings

from .conftest import REPO
from .test_experiments import blobs


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every registered experiment on small overlapping classes (the taxonomy groups c0+c1 and c2+c3)."""
    taxonomy = tmp_path_factory.mktemp("taxonomy") / "taxonomy.csv"
    taxonomy.write_text("class,group\nc0,low\nc1,low\nc2,high\nc3,high\n")
    memory, labels, queries, query_labels = blobs(per_class=30)
    options = registry.ExperimentOptions(vote=VoteSettings(k=5, threshold=3, top_n=5), k_max=20, sizes=(1, 5, 30),
                                         seeds=(0, 1), noise=(0.0, 0.5), taxonomy=taxonomy, added=(0, 2))
    outside = queries[:7]  # scored against the queries by the same distance
    found = registry.run_experiments_on_arrays(memory, labels, queries, query_labels, options=options,
                                               ood_embeddings=outside)
    return found, (memory, labels, queries, query_labels)


def test_the_registry_holds_every_experiment_and_the_cli_offers_exactly_those():
    assert tuple(registry.REGISTRY) == registry.EXPERIMENTS == (
        "accuracy", "memory-size", "new-classes", "pruning", "noise", "taxonomy", "ood")
    eval_parser = build_parser()._subparsers._group_actions[0].choices["eval"]
    [experiment] = [a for a in eval_parser._actions if a.dest == "experiment"]
    assert list(experiment.choices) == [*registry.REGISTRY, "all"]
    for name, entry in registry.REGISTRY.items():
        assert entry.name == name and entry.title and callable(entry.run)


def test_running_every_experiment_gives_every_result(results):
    found, (memory, labels, queries, query_labels) = results
    assert list(found) == list(registry.REGISTRY)
    # the accuracy entry runs the library function on the same search, with the settings' rule parameters
    cache = build_cache(memory, labels, queries, query_labels, k=20)
    expected = accuracy_and_hit_rate(cache, settings=VoteSettings(k=5)).to_dict()
    assert found["accuracy"]["best_over_k"] == expected["best_over_k"]
    assert found["pruning"]["threshold"] == 3.0 and "accuracy_at_k5" in found["pruning"]
    assert found["memory-size"]["k"] == found["noise"]["k"] == found["new-classes"]["k"] == 5
    assert set(found["ood"]) == {"held_out_classes", "images"} and found["ood"]["images"]["out_queries"] == 7
    assert found["ood"]["held_out_classes"]["held_out"] == ["c3"]  # default: the last label

def test_the_paper_protocols_sit_beside_the_projects_settings(results):
    found, (memory, labels, queries, query_labels) = results
    cache = build_cache(memory, labels, queries, query_labels, k=20)
    paper = found["pruning"]["paper"]
    assert paper["top_n"] == 100 and paper["paper_threshold"] == 128 and paper["sweep"][-1]["threshold"] is None
    reliability = reliability_from_loo(build_cache(memory, labels, k=100), 100)
    assert [row["pruned"] for row in paper["sweep"][:-1]] == [int((reliability >= t).sum())
                                                              for t in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)]
    assert set(found["memory-size"]["fit_loglog"]) == set(found["memory-size"]["fit"])
    assert [row["new_labels"] for row in found["new-classes"]["each_class"]] == [["c0"], ["c1"], ["c2"], ["c3"]]
    assert len(found["noise"]["random_class_rows"]) == len(found["noise"]["rows"])
    every = found["taxonomy"]["every_class"]
    assert every["held_out"] == ["c0", "c1", "c2", "c3"] and every["others_per_class"] == 50 and every["k"] == 1
    assert [row["added"] for row in every["added_k1"]] == [0, 1, 2, 5, 10, 20, 30]  # 50 capped at the 30 there are
    by_k = found["ood"]["held_out_classes"]["by_k"]
    assert [row["k"] for row in by_k] == [1, 10, 20]  # 100 capped at the search depth
    assert by_k[1]["auroc"] == ood_auroc(cache, ["c3"], 10).auroc
    json.dumps(found, allow_nan=False)  # strict JSON: no inf or nan


def test_each_report_prints_its_result(results):
    found, _ = results
    for name, result in found.items():
        lines = registry.REGISTRY[name].report(result, 5)
        assert lines and all(isinstance(line, str) for line in lines), name
    best = found["accuracy"]["best_over_k"]["rank"]
    assert f"{best['accuracy']:>11.4f} (k={best['k']})" in registry.REGISTRY["accuracy"].report(found["accuracy"], 5)[1]
    pruning = "\n".join(registry.REGISTRY["pruning"].report(found["pruning"], 5))
    assert f"hard pruning skips {found['pruning']['pruned']} of 120 exemplars (v >= 3)" in pruning
    text = registry.text_report(found, 5)
    assert text.startswith("\n== accuracy ==\nrule ") and [line for line in text.splitlines()
                                                          if line.startswith("== ")] == [
        f"== {name} ==" for name in registry.REGISTRY]


def test_each_experiment_draws_its_figures(results):
    found, _ = results
    drawn = registry.figures(found, 5)
    # pruning and taxonomy: the project's settings, then the paper's; ood: held-out classes, and other images
    assert [name for name, _ in drawn] == ["accuracy", "memory-size", "new-classes", "pruning", "pruning", "noise",
                                           "taxonomy", "taxonomy", "ood", "ood"]
    for name, figure in drawn:
        assert isinstance(figure, go.Figure) and figure.data and figure.layout.title.text, name
    pruning_title = next(figure for name, figure in drawn if name == "pruning").layout.title.text
    assert pruning_title.startswith(f"Pruning at k=5: hard skips {found['pruning']['pruned']} of 120")


def test_unknown_experiments_and_missing_options_are_named():
    memory, labels, queries, query_labels = blobs(per_class=5, queries_per_class=2)
    with pytest.raises(VmemError, match=r"'nope'; accepted: accuracy, memory-size, .*, ood"):
        registry.run_experiments_on_arrays(memory, labels, queries, query_labels, ["accuracy", "nope"])
    assert registry.REGISTRY["taxonomy"].requires == {"taxonomy": "FILE (CSV: class,group,... one row per label)"}
    with pytest.raises(VmemError, match="taxonomy experiment needs a mapping file"):
        registry.run_experiments_on_arrays(memory, labels, queries, query_labels, ["taxonomy"])


def test_an_experiment_added_to_the_registry_reaches_the_cli_report_and_the_results_script(monkeypatch, tmp_path):
    """Adding an experiment is one registry entry: the runner, the text report, the figures and the results page
    pick it up without being told its name."""
    def run(context):
        return {"queries": len(context.cache), "nearest": float(context.cache.distances[:, 0].mean())}

    toy = registry.Experiment("toy", "Mean distance to the nearest exemplar", run,
                              lambda r, k: [f"{r['queries']} queries, mean nearest distance {r['nearest']:.4f}"],
                              lambda r, k: [go.Figure(go.Bar(y=[r["nearest"]]), layout_title_text="toy")])
    monkeypatch.setitem(registry.REGISTRY, "toy", toy)
    memory, labels, queries, query_labels = blobs(per_class=5, queries_per_class=2)
    found = registry.run_experiments_on_arrays(memory, labels, queries, query_labels, ["toy"])
    assert found["toy"]["queries"] == 8
    nearest = found["toy"]["nearest"]
    assert registry.text_report(found, 10) == f"\n== toy ==\n8 queries, mean nearest distance {nearest:.4f}\n"
    assert [name for name, _ in registry.figures(found, 10)] == ["toy"]

    spec = importlib.util.spec_from_file_location("results_script", REPO / "scripts" / "results.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    exported = []
    monkeypatch.setattr(script, "export", lambda fig, out, name: exported.append(name) or f"![{name}]")
    meta = {"date": "today", "seconds": 1, "cores": 2, "cached": True, "memory": 20, "queries": 8, "idx_dir": "x",
            "encoder": "test", "k_max": 5}
    report = script.write_report(found, tmp_path, meta)
    assert "## Mean distance to the nearest exemplar (`toy`)" in report
    assert f"8 queries, mean nearest distance {found['toy']['nearest']:.4f}" in report and exported == ["toy_1"]


def test_the_results_page_opens_with_the_claims_table(results, monkeypatch, tmp_path):
    found, _ = results
    spec = importlib.util.spec_from_file_location("results_script", REPO / "scripts" / "results.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "export", lambda fig, out, name: f"![{name}]")
    monkeypatch.setattr(script, "FIXED_K", 5)  # the fixture's runs vote at k=5
    meta = {"date": "today", "seconds": 1, "cores": 2, "cached": True, "memory": 120, "queries": 60, "idx_dir": "x",
            "encoder": "test", "k_max": 20, "held_out_queries": 15, "limit": 40}
    report = script.write_report(found, tmp_path, meta)
    assert "A subsample, not the full result: the first 40 images" in report
    assert report.index("## Claims: the paper against this run") < report.index("## 1. Accuracy vs k")
    # without claim evidence every claim is listed, not comparable, and no row cites an issue
    table = report[report.index("## Claims"):report.index("### Criteria, fixed")]
    assert table.count("not comparable (not run in this report)") == len(claims.CLAIMS)
    assert "issue" not in table.lower()
    for heading in ("The paper's hard pruning", "The paper's protocol: the chosen labels", "each of the 4 classes held",
                    "The paper's score (its fig. 12)", "each class in turn is the new one"):
        assert heading in report, heading
