"""The `vmem` command line, run as a user would: real encoder, real processes, JSON contracts, one-line errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO, SAMPLE, png_header_only, sample_folder, vmem


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    return sample_folder(tmp_path_factory.mktemp("subset"), per_label=15)


@pytest.fixture(scope="module")
def built(tmp_path_factory, subset) -> Path:
    memory = tmp_path_factory.mktemp("cli") / "mem.vmem"
    result = vmem("build", subset, "--memory", memory, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["added"] == 150 and report["exemplars"] == 150 and len(report["labels"]) == 10
    return memory


@pytest.mark.slow
def test_classify_json_contract(built):
    queries = [sorted((SAMPLE / "queries" / label).glob("*.png"))[0] for label in ("trouser", "bag")]
    result = vmem("classify", built, *queries, "--k", "7", "--voting", "plurality", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [item["image"] for item in payload] == [str(q) for q in queries]
    for item in payload:
        assert set(item) == {"image", "label", "scores", "neighbors"}
        assert len(item["neighbors"]) == 7
        assert [n["rank"] for n in item["neighbors"]] == list(range(7))
        assert all(set(n) == {"id", "label", "distance", "rank", "weight"} for n in item["neighbors"])
        distances = [n["distance"] for n in item["neighbors"]]
        assert distances == sorted(distances)
        assert sum(item["scores"].values()) == pytest.approx(7)  # plurality: one vote each
        assert item["label"] == max(item["scores"], key=item["scores"].get)
    assert [item["label"] for item in payload] == ["trouser", "bag"]


@pytest.mark.slow
def test_stats_json_contract(built):
    result = vmem("stats", built, "--json")
    stats = json.loads(result.stdout)
    assert stats["exemplars"] == 150 and stats["labels"]["sneaker"] == 15
    assert stats["encoder"] == "efficientnet-lite0" and stats["dim"] == 1280
    assert stats["index_backend"]["name"] == "hnswlib" and stats["index_backend"]["live"] == 150
    text = vmem("stats", built).stdout
    assert f"index: hnswlib at {Path(built) / 'index'}, 150 searchable" in text


@pytest.mark.slow
def test_eval_json_contract(built):
    result = vmem("eval", built, SAMPLE / "queries", "--k-max", "30", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload["accuracy"]) == {"rank", "plurality", "distance", "softmax"}
    for rule, curve in payload["accuracy"].items():
        assert len(curve) == 30 and all(0 <= a <= 1 for a in curve)
        best = payload["best"][rule]
        assert best["accuracy"] == max(curve) and curve[best["k"] - 1] == best["accuracy"]
    assert payload["best_is"].startswith("best-over-k")
    assert payload["queries"] == 200
    assert payload["accuracy"]["rank"][9] > 0.6  # 15 exemplars per class already classify most queries


@pytest.mark.slow
def test_add_delete_restore_round_trip(tmp_path, built):
    memory = tmp_path / "copy.vmem"
    shutil.copytree(built, memory)
    photo = REPO / "data" / "ood" / "chelsea.jpg"
    added = vmem("add", memory, photo, "--label", "cat", "--json")
    assert added.returncode == 0, added.stderr
    (new_id,) = json.loads(added.stdout)["ids"]
    top = json.loads(vmem("classify", memory, photo, "--k", "1", "--json").stdout)[0]
    assert top["label"] == "cat" and top["neighbors"][0]["id"] == new_id
    assert vmem("delete", memory, new_id).returncode == 0
    top = json.loads(vmem("classify", memory, photo, "--k", "1", "--json").stdout)[0]
    assert top["label"] != "cat"
    assert vmem("restore", memory, new_id).returncode == 0
    assert json.loads(vmem("stats", memory, "--json").stdout)["labels"]["cat"] == 1


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: (d / "notes.png").write_text("plain text"), "notes.png: not a recognised image"),
        (lambda d: (d / "empty.jpg").write_bytes(b""), "empty.jpg: empty file"),
        (lambda d: (d / "bomb.png").write_bytes(png_header_only(30000, 30000)), "bomb.png: "),
        (lambda d: None, "missing.png: no such file"),
    ],
)
def test_bad_image_add_is_one_line_and_changes_nothing(tmp_path, built, make, expected):
    make(tmp_path)
    target = next(iter(tmp_path.iterdir()), tmp_path / "missing.png")
    before = vmem("stats", built, "--json").stdout
    result = vmem("add", built, target, "--label", "x")
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert vmem("stats", built, "--json").stdout == before


@pytest.mark.parametrize(
    "args, expected",
    [
        (["delete", "{mem}", "99999"], "unknown exemplar id(s): 99999"),
        (["stats", "{tmp}/nowhere"], "no such memory directory"),
        (["build", "{tmp}/nodata", "--memory", "{tmp}/m"], "nodata: no such file or directory"),
        (["classify", "{mem}", "{tmp}/nope.jpg"], "nope.jpg: no such file"),
        (["eval", "{mem}", "{tmp}", "--k-max", "0"], "--k-max must be at least 1, got 0"),
        (["classify", "{mem}", "{tmp}/x.png", "--pruning", "soft", "--top-n", "-1"], "--top-n must be at least 1"),
        (["delete", "{mem}", "99999999999999999999999"], "is not an exemplar id"),
        (["build", "{tmp}/latin1.csv", "--memory", "{tmp}/m"], "latin1.csv: not UTF-8 text"),
        (["stats", "{tmp}/badconfig"], "badconfig/vmem.json: not a vmem memory"),
    ],
)
def test_other_errors_are_clear(tmp_path, built, args, expected):
    (tmp_path / "latin1.csv").write_bytes("path,label\ncaf\xe9.png,caf\xe9\n".encode("latin-1"))
    (tmp_path / "badconfig").mkdir()
    (tmp_path / "badconfig" / "vmem.json").write_text("[]")
    result = vmem(*[a.format(mem=built, tmp=tmp_path) for a in args])
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("data, expected", [
    ("nodata", "nodata: no such file or directory"),
    ("empty", "empty: no labelled images found"),
    ("tabs.csv", "tab"),
    ("latin1.csv", "latin1.csv: not UTF-8 text"),
])
def test_a_rejected_build_leaves_no_memory_behind(tmp_path, data, expected):
    (tmp_path / "empty").mkdir()
    (tmp_path / "latin1.csv").write_bytes("path,label\ncaf\xe9.png,caf\xe9\n".encode("latin-1"))
    image = next((SAMPLE / "memory" / "bag").glob("*.png"))
    (tmp_path / "tabs.csv").write_text(f"path,label\n{image},bag\n{image},\"a\tbag\"\n")
    memory = tmp_path / "new.vmem"
    result = vmem("build", tmp_path / data, "--memory", memory)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not memory.exists(), "a refused build created an empty memory"


def test_vmem_warnings_reach_the_terminal(tmp_path, built):
    # the CLI once set the root logger to ERROR (logging.getLogger("root") is the root logger), which silenced every
    # warning vmem gives, -v or not: here the one line saying that a missing index is being rebuilt
    memory = tmp_path / "copy.vmem"
    shutil.copytree(built, memory)
    shutil.rmtree(memory / "index")
    result = vmem("stats", memory)
    assert result.returncode == 0, result.stderr
    assert f"vmem: rebuilding the index of {memory} from its database: no index snapshot" in result.stderr


def test_wrong_encoder_is_refused(tmp_path, subset):
    memory = tmp_path / "pix.vmem"
    # a memory whose recorded encoder differs from the default: building into it with the default must refuse
    config = {"format": "vmem-memory", "version": 1, "encoder": {"name": "open_clip:RN50:openai",
              "identity": "open_clip:RN50:openai", "dim": 1024}, "index": {}}
    memory.mkdir()
    (memory / "vmem.json").write_text(json.dumps(config))
    result = vmem("build", subset, "--memory", memory, "--encoder", "efficientnet-lite0")
    assert result.returncode == 2
    assert "built with encoder 'open_clip:RN50:openai'" in result.stderr and "Traceback" not in result.stderr


def test_build_with_a_larger_efficientnet(tmp_path):
    data = sample_folder(tmp_path / "few", ("bag", "trouser"), per_label=3)
    memory = tmp_path / "lite1.vmem"
    result = vmem("build", data, "--memory", memory, "--encoder", "efficientnet-lite1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 6
    stats = json.loads(vmem("stats", memory, "--json").stdout)
    assert stats["encoder"] == "efficientnet-lite1" and stats["dim"] == 1280
    query = sorted((SAMPLE / "queries" / "trouser").glob("*.png"))[0]
    classified = json.loads(vmem("classify", memory, query, "--k", "3", "--json").stdout)
    assert classified[0]["label"] == "trouser"


@pytest.mark.slow
def test_sample_memory_accuracy(tmp_path):
    """The shipped sample: 1,000 exemplars, 200 held-out queries. Rank voting at k=10 must beat 0.75."""
    memory = tmp_path / "sample.vmem"
    assert vmem("build", SAMPLE / "memory", "--memory", memory).returncode == 0
    payload = json.loads(vmem("eval", memory, SAMPLE / "queries", "--json").stdout)
    assert payload["accuracy"]["rank"][9] > 0.75
    assert all(payload["best"][rule]["accuracy"] > 0.75 for rule in payload["best"])


def test_vmem_app_serves_the_memory(built):
    import time
    import urllib.request

    from .browser import free_port

    port = free_port()
    # a session of its own: `vmem app` starts streamlit as its child, and both must stop at the end
    server = subprocess.Popen([sys.executable, "-m", "vmem_core.cli", "app", str(built), "--port", str(port),
                               "--headless"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
                    assert reply.read() == b"ok"
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "vmem app did not start"
                time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


@pytest.mark.slow
def test_delete_warns_of_near_duplicates_and_purge_certifies(tmp_path, built):
    memory = tmp_path / "copy.vmem"
    shutil.copytree(built, memory)
    from PIL import Image

    photo = REPO / "data" / "ood" / "coffee.jpg"
    recompressed = tmp_path / "coffee-again.jpg"  # the same photo saved again: other bytes, nearly the same vector
    Image.open(photo).save(recompressed, quality=80)
    first = json.loads(vmem("add", memory, photo, "--label", "cup", "--json").stdout)["ids"][0]
    second = json.loads(vmem("add", memory, recompressed, "--label", "cup", "--json").stdout)["ids"][0]
    deleted = vmem("delete", memory, first)
    assert deleted.returncode == 0
    assert f"exemplar {first} has near-duplicates still in memory: {second} (distance 0.0" in deleted.stderr
    result = vmem("purge", memory, "--all", "--json")
    assert result.returncode == 0, result.stderr
    certificate = json.loads(result.stdout)
    assert certificate["ids"] == [first] and certificate["passed"] is True
    assert {"purge_id", "removed", "digest_before", "digest_after", "checks", "purge_seconds"} <= set(certificate)
    assert [c["passed"] for c in certificate["checks"]] == [True, True, True, True]
    again = vmem("purge", memory, first)
    assert again.returncode == 2 and "unknown or already purged exemplar id(s)" in again.stderr
    verified = vmem("audit", "verify", memory, "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True
    log = json.loads(vmem("audit", memory, "--json").stdout)
    assert [entry["action"] for entry in log][-5:] == ["add", "add", "delete", "purge", "certify"]


@pytest.mark.slow
def test_build_sets_a_new_memorys_index_parameters_and_keeps_an_old_ones(tmp_path, subset):
    memory = tmp_path / "tuned.vmem"
    result = vmem("build", subset, "--memory", memory, "--index-m", 8, "--index-ef-construction", 40,
                  "--index-ef", 60, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads((memory / "vmem.json").read_text())["index"] == {"M": 8, "ef_construction": 40, "ef_search": 60}
    stats = json.loads(vmem("stats", memory, "--json").stdout)
    assert stats["index"] == {"M": 8, "ef_construction": 40, "ef_search": 60}

    # an existing memory's graph is fixed: a different M is refused, naming both values, and nothing is added
    more = tmp_path / "more" / "shirt"
    more.mkdir(parents=True)
    shutil.copy(sorted((SAMPLE / "queries" / "shirt").glob("*.png"))[0], more / "extra.png")
    result = vmem("build", more.parent, "--memory", memory, "--index-m", 12)
    assert result.returncode == 2
    assert "--index-m 12 (this memory has 8)" in result.stderr and "Traceback" not in result.stderr
    assert json.loads(vmem("stats", memory, "--json").stdout)["exemplars"] == stats["exemplars"]
    # the same values, or none, are accepted
    result = vmem("build", more.parent, "--memory", memory, "--index-m", 8, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["exemplars"] == stats["exemplars"] + 1


def test_tune_on_an_exact_index_says_the_beam_is_unused(tmp_path, built):
    memory = tmp_path / "exact.vmem"
    shutil.copytree(built, memory)
    assert vmem("migrate", memory, "--to", "exact").returncode == 0
    result = vmem("tune", memory, "--index-ef", 200)
    assert result.returncode == 0, result.stderr
    assert "search beam ef 128 -> 200 kept, but unused: this memory's index is exact search" in result.stdout
    assert "queries use max(ef, k)" not in result.stdout


def test_build_refuses_a_non_positive_index_parameter(tmp_path, subset):
    memory = tmp_path / "bad.vmem"
    result = vmem("build", subset, "--memory", memory, "--index-ef", 0)
    assert result.returncode == 2
    assert "--index-ef 0: must be a positive integer" in result.stderr
    assert not memory.exists()


@pytest.mark.slow
def test_tune_changes_the_search_beam_and_keeps_it(tmp_path, built, subset):
    memory = tmp_path / "tune.vmem"
    shutil.copytree(built, memory)
    result = vmem("tune", memory, "--index-ef", 256, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"index": {"M": 16, "ef_construction": 200, "ef_search": 256}, "previous": {"ef_search": 128}}
    assert json.loads(vmem("stats", memory, "--json").stdout)["index"]["ef_search"] == 256
    assert "search ef 256" in vmem("stats", memory).stdout
    result = vmem("tune", memory, "--index-ef", -3)
    assert result.returncode == 2 and "search beam ef -3: must be a positive integer" in result.stderr
    assert json.loads(vmem("stats", memory, "--json").stdout)["index"]["ef_search"] == 256
    # build still refuses to change the graph, and points at tune for the beam
    # (from a real dataset: a folder without labelled images is refused before the memory is opened)
    result = vmem("build", subset, "--memory", memory, "--index-ef", 64)
    assert result.returncode == 2 and f"vmem tune {memory} --index-ef N" in result.stderr
