"""`vmem relabel`, `ls`, `curate` and `map`: the app's curation on the command line. Their --json keys are a
contract; bad input is one line, exit 2, and changes nothing; with the app holding the memory they run there."""

import json
from pathlib import Path

import pytest

from vmem_core import VisualMemory
from vmem_core.cli import main

from .helpers import held_by_a_host, memory_state, vmem


@pytest.fixture
def mem(tmp_path, small_folder) -> Path:
    """A closed 12-exemplar memory (bag 0-3, sneaker 4-7, trouser 8-11) with the pixel encoder."""
    path = tmp_path / "mem"
    with VisualMemory.create(path, encoder="test-pixels") as memory:
        memory.exemplars.build(small_folder)
    return path


@pytest.fixture
def empty(tmp_path) -> Path:
    path = tmp_path / "empty"
    VisualMemory.create(path, encoder="test-pixels").close()
    return path


def run(capsys, *args):
    """`vmem ARGS` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:  # argparse refuses a bad option value before any command runs
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def refused(capsys, *args, says: str) -> str:
    """Run a command that must be refused: exit 2, no traceback, its last stderr line naming `says`."""
    status, out, err = run(capsys, *args)
    assert status == 2, (out, err)
    assert "Traceback" not in err and out == ""
    line = err.strip().splitlines()[-1]
    assert says in line, line
    return line


# --- relabel ---------------------------------------------------------------------------------------------------------
def test_relabel_json_contract_and_the_change_is_kept(mem, capsys):
    status, out, _ = run(capsys, "relabel", mem, 1, 2, 2, "sneaker", "--json")
    assert status == 0
    payload = json.loads(out)
    assert set(payload) == {"ids", "label", "changed", "previous", "new_label"}
    assert payload["ids"] == [1, 2] and payload["label"] == "sneaker" and payload["changed"] == [1, 2]
    assert payload["previous"] == [{"id": 1, "label": "bag"}, {"id": 2, "label": "bag"}]
    assert payload["new_label"] is False
    with VisualMemory.open(mem) as memory:
        assert [memory.table.label_of(i) for i in (0, 1, 2)] == ["bag", "sneaker", "sneaker"]
        assert memory.exemplars.label_changes()["new_label"].tolist() == ["sneaker", "sneaker"]


def test_relabel_to_a_new_label_needs_new(mem, capsys):
    before = memory_state(mem)
    line = refused(capsys, "relabel", mem, 1, "hat", says="label 'hat' is not in mem")
    assert "'bag', 'sneaker', 'trouser'" in line and "--new" in line
    assert memory_state(mem) == before
    status, out, _ = run(capsys, "relabel", mem, 1, "hat", "--new", "--json")
    assert status == 0 and json.loads(out)["new_label"] is True
    with VisualMemory.open(mem) as memory:
        assert memory.table.label_of(1) == "hat" and "hat" in memory.table.labels


@pytest.mark.parametrize("ids, says", [
    (["3", "99"], "unknown exemplar id(s): 99"),
    (["x1"], "'x1' is not an exemplar id"),
])
def test_relabel_refuses_unknown_ids_and_changes_nothing(mem, capsys, ids, says):
    before = memory_state(mem)
    refused(capsys, "relabel", mem, *ids, "sneaker", says=says)
    assert memory_state(mem) == before  # not even id 3, which exists


def test_relabel_refuses_deleted_exemplars(mem, capsys):
    with VisualMemory.open(mem) as memory:
        memory.exemplars.delete([3])
    before = memory_state(mem)
    refused(capsys, "relabel", mem, 3, "sneaker", says="exemplar(s) 3 are deleted; restore them first")
    assert memory_state(mem) == before


def test_relabel_on_an_empty_memory_names_the_unknown_id(empty, capsys):
    refused(capsys, "relabel", empty, 0, "bag", says="is not in empty")  # the label is checked first


# --- ls --------------------------------------------------------------------------------------------------------------
def test_ls_json_contract_filters_and_pages(mem, capsys):
    status, out, _ = run(capsys, "ls", mem, "--json", "--limit", "5", "--offset", "5")
    payload = json.loads(out)
    assert status == 0 and set(payload) == {"total", "offset", "limit", "exemplars"}
    assert (payload["total"], payload["offset"], payload["limit"]) == (12, 5, 5)
    assert [row["id"] for row in payload["exemplars"]] == [5, 6, 7, 8, 9]
    keys = {"id", "label", "source", "sha256", "added_at", "deleted_at"}
    assert all(set(row) == keys for row in payload["exemplars"])

    def ids(*options):
        status, out, err = run(capsys, "ls", mem, "--json", *options)
        assert status == 0, err
        return [row["id"] for row in json.loads(out)["exemplars"]]

    assert ids("--label", "trouser") == [8, 9, 10, 11]
    assert ids("--source", "SNEAKER/") == [4, 5, 6, 7]  # a substring of the source, any case
    with VisualMemory.open(mem) as memory:
        memory.exemplars.delete([0, 9])
        added = memory.exemplars.browse(limit=1)["added_at"][0]
    assert ids("--label", "bag") == [1, 2, 3]
    assert ids("--deleted", "only") == [0, 9] and ids("--deleted", "only", "--label", "trouser") == [9]
    assert ids("--deleted", "all", "--label", "bag") == [0, 1, 2, 3]
    day = added.date()
    assert ids("--since", day.isoformat(), "--until", day.isoformat(), "--limit", "3") == [1, 2, 3]
    assert ids("--until", (day.replace(year=day.year - 1)).isoformat()) == []
    status, out, err = run(capsys, "ls", mem, "--deleted", "all", "--limit", "4")
    assert out.split()[:2] == ["0", "bag"] and "deleted" in out.splitlines()[0]
    assert "1-4 of 12; next page: --offset 4" in err


def test_ls_bad_input(mem, empty, capsys):
    refused(capsys, "ls", mem, "--label", "hat", says="--label 'hat' is not a label of mem; accepted: 'bag'")
    refused(capsys, "ls", mem, "--since", "2026-13-01", says="'2026-13-01' is not a date; accepted: YYYY-MM-DD")
    refused(capsys, "ls", mem, "--offset", "-1", says="--offset must be 0 or more, got -1")
    refused(capsys, "ls", mem, "--limit", "0", says="--limit must be at least 1, got 0")
    refused(capsys, "ls", mem, "--since", "2026-12-06", "--until", "2026-12-01", says="is after --until")
    status, out, _ = run(capsys, "ls", empty, "--json")  # an empty memory lists nothing: not an error
    assert status == 0 and json.loads(out) == {"total": 0, "offset": 0, "limit": 50, "exemplars": []}


# --- curate ----------------------------------------------------------------------------------------------------------
def test_curate_json_contract_finds_a_flipped_label(mem, capsys):
    with VisualMemory.open(mem) as memory:
        memory.exemplars.relabel([9], "bag")  # a trouser labelled bag
    status, out, _ = run(capsys, "curate", mem, "--json", "--limit", "3", "--k", "3")
    assert status == 0
    payload = json.loads(out)
    assert set(payload) == {"exemplars", "k", "voting", "top_n", "suggestions"}
    assert (payload["exemplars"], payload["k"], payload["voting"], payload["top_n"]) == (12, 3, "rank", 10)
    suggestions = payload["suggestions"]
    assert 0 < len(suggestions) <= 3
    assert all(set(s) == {"id", "label", "v", "suggested_label", "score", "reason"} for s in suggestions)
    assert [s["score"] for s in suggestions] == sorted((s["score"] for s in suggestions), reverse=True)
    # with four exemplars a class and a pixel encoder the flipped one is among the first three, not always first
    flipped = {s["id"]: s for s in suggestions}[9]
    assert (flipped["label"], flipped["suggested_label"]) == ("bag", "trouser")
    assert flipped["v"] >= 1 and 0 < flipped["score"] <= 2


def test_curate_agrees_with_the_library_and_refuses_an_empty_memory(mem, empty, capsys):
    from vmem_core import VoteSettings
    from vmem_core.analysis.curate import suspicious_exemplars

    status, out, _ = run(capsys, "curate", mem, "--json", "--voting", "plurality")
    with VisualMemory.open(mem) as memory:
        expected = suspicious_exemplars(memory, VoteSettings(k=10, rule="plurality"))
    assert [(s["id"], s["suggested_label"]) for s in json.loads(out)["suggestions"]] == [
        (s.id, s.suggested_label) for s in expected]
    before = memory_state(empty)
    refused(capsys, "curate", empty, says="holds 0 live exemplar(s); curation")
    assert memory_state(empty) == before


# --- map -------------------------------------------------------------------------------------------------------------
def test_map_writes_a_standalone_page_and_leaves_the_memory_as_it_was(mem, tmp_path, capsys):
    with VisualMemory.open(mem) as memory:
        memory.exemplars.delete([5])
    before = memory_state(mem)
    out_file = tmp_path / "map.html"
    status, out, _ = run(capsys, "map", mem, "--out", out_file, "--deleted", "--json")
    assert status == 0
    payload = json.loads(out)
    assert set(payload) == {"out", "method", "colour", "points", "deleted"}
    assert payload == {"out": str(out_file), "method": "pca", "colour": "label", "points": 11, "deleted": 1}
    page = out_file.read_text()
    # standalone: plotly.js itself is in the page (megabytes), no <script src=...> to fetch it from the network
    assert "<html>" in page[:100] and "Plotly.newPlot" in page and "<script src" not in page and len(page) > 10**6
    assert '"name":"trouser"' in page and "deleted (not purged)" in page
    assert memory_state(mem) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_map_bad_input_writes_nothing(mem, empty, tmp_path, capsys):
    refused(capsys, "map", empty, "--out", tmp_path / "e.html", says="holds no live exemplars")
    refused(capsys, "map", mem, "--out", tmp_path / "m.png", says="accepted: a path ending in .html")
    refused(capsys, "map", mem, "--out", tmp_path / "no" / "m.html", says="does not exist")
    refused(capsys, "map", mem, "--out", mem / "m.html", says="is inside the memory folder")
    refused(capsys, "map", mem, "--out", tmp_path / "m.html", "--method", "tsne", says="invalid choice: 'tsne'")
    assert not list(tmp_path.glob("*.html")) and not (mem / "m.html").exists()


# --- with the app holding the memory ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_four_commands_run_in_the_process_that_holds_the_memory(mem, tmp_path):
    with held_by_a_host(mem):
        relabelled = vmem("relabel", "mem", 9, "bag", "--json", cwd=mem.parent)  # a relative path, too
        assert relabelled.returncode == 0, relabelled.stderr
        assert "is open in the vmem app" in relabelled.stderr and json.loads(relabelled.stdout)["changed"] == [9]
        listed = vmem("ls", mem, "--label", "bag", "--json")  # the holder's memory shows the change at once
        assert [row["id"] for row in json.loads(listed.stdout)["exemplars"]] == [0, 1, 2, 3, 9]
        curated = vmem("curate", mem, "--json", "--k", "3", "--limit", "3")
        assert curated.returncode == 0, curated.stderr
        assert 9 in [s["id"] for s in json.loads(curated.stdout)["suggestions"]]
        mapped = vmem("map", mem, "--out", "map.html", "--json", cwd=tmp_path)  # written where the caller said
        assert mapped.returncode == 0, mapped.stderr
        assert json.loads(mapped.stdout)["out"] == str(tmp_path / "map.html") and (tmp_path / "map.html").exists()
        unknown = vmem("relabel", mem, 99, "bag")
        assert unknown.returncode == 2 and unknown.stderr.strip().splitlines()[-1].startswith(
            "vmem: error: unknown exemplar id(s): 99")
    with VisualMemory.open(mem) as memory:  # one memory: the holder's change is on disk, made in the CLI's name
        assert memory.table.label_of(9) == "bag"
        assert [(e.action, e.actor.split(" via ")[1]) for e in memory.audit.log()][-1:] == [
            ("relabel", "cli through app")]


@pytest.mark.slow
def test_a_read_only_app_runs_the_reading_commands_and_refuses_relabel(mem, tmp_path, monkeypatch):
    from vmem_core.access import READ_ONLY_ENV

    monkeypatch.setenv(READ_ONLY_ENV, "1")  # the holder inherits it, as `vmem app --read-only` sets it
    before = memory_state(mem)
    with held_by_a_host(mem):
        for command in (("ls", mem, "--json"), ("curate", mem, "--json"),
                        ("map", mem, "--out", tmp_path / "m.html", "--json")):
            result = vmem(*command)
            assert result.returncode == 0 and "is open in the vmem app" in result.stderr, result.stderr
        refused = vmem("relabel", mem, 9, "bag")
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines()[-1] == ("vmem: error: the app holding this memory is read-only: "
                                                          "'relabel' is refused; accepted: stats, classify, eval, "
                                                          "attribute, search-text, audit, ls, curate, map")
    assert memory_state(mem) == before


# --- neighbours ----------------------------------------------------------------------------------------------------
def test_neighbours_builds_a_missing_table_saves_it_and_rebuilds_on_request(capsys, mem):
    import numpy as np

    from vmem_core.storage.layout import NEIGHBOUR_TABLE
    from vmem_core.storage.neighbour_table import _load

    table_file = mem / NEIGHBOUR_TABLE
    table_file.unlink(missing_ok=True)  # a memory from before there were tables
    status, out, _ = run(capsys, "neighbour-table", mem, "--json")
    first = json.loads(out)
    assert status == 0 and first["built"] and not first["rebuilt"] and first["saved"] and table_file.exists()
    assert first["exemplars"] == 12 and first["depth"] >= 11
    saved = _load(table_file)[0]
    with VisualMemory.open(mem) as memory:  # the saved rows are the leave-one-out neighbours a full search finds
        ids, neighbours, _ = memory.search.memory_neighbors(11)
        memory.exemplars.delete([int(ids[0])])
    assert np.array_equal(saved.ids, ids) and np.array_equal(saved.neighbours[:, :11], neighbours)

    status, out, _ = run(capsys, "neighbour-table", mem, "--json")  # after a delete: brought up to date, not rebuilt
    second = json.loads(out)
    assert status == 0 and not second["built"] and second["exemplars"] == 11 and second["change"] > first["change"]
    assert _load(table_file)[0].seq == second["change"]

    status, out, err = run(capsys, "neighbour-table", mem, "--rebuild")
    assert status == 0 and out.startswith("neighbour table rebuilt: 11 exemplars")


def test_neighbours_refuses_what_is_not_a_memory(capsys, tmp_path):
    status, out, err = run(capsys, "neighbour-table", tmp_path / "nothing")
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1 and "nothing" in err


def test_classify_text_says_when_the_memory_keeps_no_neighbour_table(capsys, mem, small_folder, monkeypatch):
    from vmem_core.cli import commands
    from vmem_core.storage.layout import NEIGHBOUR_TABLE

    monkeypatch.setattr(commands, "TABLE_HINT_EXEMPLARS", 0)  # the 12-exemplar memory stands for a large one
    image = sorted(Path(small_folder).rglob("*.png"))[0]
    (mem / NEIGHBOUR_TABLE).unlink(missing_ok=True)
    status, out, err = run(capsys, "classify", mem, image)
    assert status == 0 and f"`vmem neighbour-table {mem}` builds and keeps one" in err
    assert not (mem / NEIGHBOUR_TABLE).exists()  # a read never writes: the note is all it leaves
    assert run(capsys, "neighbour-table", mem)[0] == 0
    status, out, err = run(capsys, "classify", mem, image)
    assert status == 0 and "neighbour table" not in err


def test_neighbour_table_says_not_saved_when_its_file_cannot_be_written(capsys, caplog, mem, monkeypatch):
    from vmem_core.storage import neighbour_table
    from vmem_core.storage.layout import NEIGHBOUR_TABLE

    assert run(capsys, "neighbour-table", mem)[0] == 0 and (mem / NEIGHBOUR_TABLE).exists()
    with VisualMemory.open(mem) as memory:
        memory.exemplars.delete([3])

    def full_disk(path, table):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(neighbour_table, "_save", full_disk)
    status, out, err = run(capsys, "neighbour-table", mem, "--json")
    report = json.loads(out)
    # the file still holds the table from before the delete: it is there, but not this table
    assert status == 0 and report["exemplars"] == 11 and report["saved"] is False
    assert "not saved ([Errno 28] No space left on device)" in caplog.text
    status, out, _ = run(capsys, "neighbour-table", mem)
    assert out.rstrip().endswith("(not saved: see the warning above)")
