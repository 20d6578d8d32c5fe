"""`vmem eval --experiment ...` and `vmem attribute`, in-process on a pixel-encoder memory of the shipped sample."""

import json
from pathlib import Path

import pytest


from vmem_core.cli import main

from .helpers import SAMPLE, new_memory, sample_folder

TAXONOMY = SAMPLE / "taxonomy.csv"


@pytest.fixture(scope="module")
def sample_memory(tmp_path_factory) -> Path:
    root = sample_folder(tmp_path_factory.mktemp("subset"), per_label=30)
    path = tmp_path_factory.mktemp("mem") / "m.vmem"
    with new_memory(path) as memory:
        memory.exemplars.build(root)
    return path


def run_json(capsys, *args):
    capsys.readouterr()
    code = main([*map(str, args), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_every_experiment_runs_from_the_cli(sample_memory, capsys):
    report = run_json(capsys, "eval", sample_memory, SAMPLE / "queries", "--experiment", "all", "--taxonomy",
                      TAXONOMY, "--sizes", 1, 5, 30, "--seeds", 2, "--new-classes", "bag", "sandal", "--held-out",
                      "sneaker", "--added", 0, 1, 5, "--k-max", 40, "--ood-images", SAMPLE.parent / "ood")
    experiments = report["experiments"]
    assert report["queries"] == 200
    assert list(experiments) == ["accuracy", "memory-size", "new-classes", "pruning", "noise", "taxonomy", "ood"]
    accuracy = experiments["accuracy"]
    assert len(accuracy["hit_rate"]) == 40 and set(accuracy["accuracy"]) == {"rank", "plurality", "distance",
                                                                             "softmax"}
    sizes = experiments["memory-size"]
    assert {row["exemplars"] for row in sizes["rows"]} == {10, 50, 300}
    assert sizes["fit"]["rank"]["slope"] < 0
    new = experiments["new-classes"]
    assert new["new_labels"] == ["bag", "sandal"] and new["new_queries"] == 40 and new["old_queries"] == 160
    assert set(experiments["pruning"]["accuracy"]) == {"none", "hard", "soft"}
    assert [row["noise"] for row in experiments["noise"]["rows"][::4]] == [0.0, 0.1, 0.2, 0.4, 0.6, 0.8]
    taxonomy = experiments["taxonomy"]
    assert taxonomy["levels"] == ["class", "group", "supergroup"]
    rows = {row["added"]: row for row in taxonomy["held_out_k1"]}
    assert rows[0]["class"] == 0.0 and rows[0]["group"] > 0.5  # an unseen sneaker still lands among footwear
    ood = experiments["ood"]
    assert ood["held_out_classes"]["held_out"] == ["bag", "sandal"] and ood["images"]["out_queries"] == 5
    assert 0.0 <= ood["held_out_classes"]["auroc"] <= 1.0


def test_plain_eval_keeps_its_keys_and_adds_the_hit_rate(sample_memory, capsys):
    report = run_json(capsys, "eval", sample_memory, SAMPLE / "queries", "--k-max", 20)
    assert {"accuracy", "best", "best_is", "queries", "k_max", "pruning", "unknown_labels", "rejected"} <= set(report)
    assert len(report["hit_rate"]) == 20 and report["hit_rate"][0] == pytest.approx(report["accuracy"]["plurality"][0])


def test_experiment_text_output_names_the_figures(sample_memory, capsys):
    assert main(["eval", str(sample_memory), str(SAMPLE / "queries"), "--experiment", "accuracy",
                 "--experiment", "new-classes"]) == 0
    out = capsys.readouterr().out
    assert "best-over-k" in out and "hit rate" in out and "pp)" in out


@pytest.mark.parametrize("args,message", [
    (["--experiment", "taxonomy"], "--taxonomy FILE"),
    (["--experiment", "new-classes", "--new-classes", "unicorn"], "'unicorn'"),
    (["--experiment", "taxonomy", "--taxonomy", "missing.csv"], "missing.csv"),
])
def test_experiment_errors_name_the_bad_value(sample_memory, capsys, args, message):
    assert main(["eval", str(sample_memory), str(SAMPLE / "queries"), *args]) == 2
    assert message in capsys.readouterr().err


def test_attribute_one_image_and_influence_over_a_query_set(sample_memory, capsys):
    image = sorted((SAMPLE / "queries" / "sneaker").glob("*.png"))[0]
    [explained] = run_json(capsys, "attribute", sample_memory, image, "--k", 5)
    neighbors = explained["neighbors"]
    assert len(neighbors) == 5
    winners = [n for n in neighbors if n["label"] == explained["label"]]
    assert sum(n["share"] for n in winners) == pytest.approx(1.0)
    assert all(n["share"] == 0 for n in neighbors if n["label"] != explained["label"])
    influence = run_json(capsys, "attribute", sample_memory, "--queries", SAMPLE / "queries", "--k", 5)
    rows = influence["exemplars"]
    assert influence["queries"] == 200 and rows
    assert sum(r["supported_correct"] + r["drove_wrong"] for r in rows) > 0
    assert [r["flips"] for r in rows] == sorted((r["flips"] for r in rows), reverse=True)
    assert main(["attribute", str(sample_memory)]) == 2
    assert "give images to explain" in capsys.readouterr().err


def test_json_output_is_strict_json_even_when_a_fit_is_undefined(sample_memory, capsys):
    # one memory size leaves the log-log fit undefined: it is null, not the bare NaN that strict parsers refuse
    capsys.readouterr()
    assert main(["eval", str(sample_memory), str(SAMPLE / "queries"), "--experiment", "memory-size", "--sizes", "5",
                 "--seeds", "1", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))
    assert report["experiments"]["memory-size"]["fit"]["rank"]["slope"] is None


def test_a_fit_over_one_memory_size_says_why_there_is_no_line(sample_memory, capsys):
    capsys.readouterr()
    assert main(["eval", str(sample_memory), str(SAMPLE / "queries"), "--experiment", "memory-size", "--sizes", "5",
                 "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out
    assert "rank: no fit: it needs a non-zero error at 2 or more memory sizes, got 1 (pass several --sizes)" in out


@pytest.mark.parametrize("size", ["0", "-3"])
def test_a_memory_size_below_1_is_refused_naming_it(sample_memory, capsys, size):
    capsys.readouterr()
    assert main(["eval", str(sample_memory), str(SAMPLE / "queries"), "--experiment", "memory-size", "--sizes", "5",
                 size, "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert f"memory sizes per class must be whole numbers of at least 1, got [5, {size}] ({size} refused)" in err


def test_a_memory_size_above_the_largest_class_is_capped_with_a_note(sample_memory, capsys):
    capsys.readouterr()
    assert main(["eval", str(sample_memory), str(SAMPLE / "queries"), "--experiment", "memory-size", "--sizes", "5",
                 "5000", "--seeds", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["experiments"]["memory-size"]
    largest = max(row["per_class"] for row in result["rows"])
    assert largest < 5000
    assert result["note"] == (f"memory size(s) 5000 per class are above the largest class ({largest} exemplars): "
                              f"run at {largest}")
    assert main(["eval", str(sample_memory), str(SAMPLE / "queries"), "--experiment", "memory-size", "--sizes", "5",
                 "--seeds", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["experiments"]["memory-size"]["note"] is None
    assert main(["eval", str(sample_memory), str(SAMPLE / "queries"), "--experiment", "memory-size", "--sizes", "5",
                 "5000", "--seeds", "1"]) == 0
    assert f"note: memory size(s) 5000 per class are above the largest class ({largest} exemplars)" in \
        capsys.readouterr().out
