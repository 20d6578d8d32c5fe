"""The crash loop (scripts/crashloop.py) at CI size: children SIGKILLed at random moments, the memory checked after each."""

import importlib

import numpy as np
import pytest

from .helpers import REPO

CI_KILLS = 30


@pytest.mark.slow
def test_random_kills_leave_a_consistent_memory(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # the forkserver's children import the script by name
    crashloop = importlib.import_module("crashloop")
    figures = crashloop.run(CI_KILLS, tmp_path, seed=7, max_delay=0.6)
    assert figures.inconsistencies == []
    assert sum(figures.kills.values()) == CI_KILLS
    # children got work done between kills, and all of it was found (a loaded machine gets less done per kill)
    assert figures.acknowledged >= CI_KILLS // 3
    killed_during = set(figures.kills) & set(crashloop.OPERATIONS)
    assert len(killed_during) >= 4, figures.kills  # kills landed inside several kinds of operation
    assert sum(figures.recoveries.values()) > 0  # reopening had something to recover: replay, rebuild or purge
    assert figures.refused_while_held > 0  # another process tried to open the memory mid-round and was kept out


def test_an_add_killed_midway_must_be_whole_or_absent(tmp_path, monkeypatch):
    """The loop's own check: an add found with some of its images, not all, is reported, not counted as applied."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    crashloop = importlib.import_module("crashloop")
    from vmem_core import VisualMemory
    from vmem_core.memory import BUILD_CHUNK

    from .helpers import png_bytes

    assert crashloop.MAX_BUILD_IMAGES < BUILD_CHUNK
    path = tmp_path / "m.vmem"
    rng = np.random.default_rng(0)
    with VisualMemory.create(path, encoder=crashloop.ENCODER) as memory:
        memory.exemplars.add([png_bytes(rng.integers(0, 256, (8, 8)))], "c0", sources=["seed"])
        memory.exemplars.add([png_bytes(rng.integers(0, 256, (8, 8)))], "c1", sources=["add-0-0"])  # one of the intended two
    model = {0: crashloop.Exemplar("c0", False)}
    intent = {"op": "add", "n": 0, "label": "c1", "sources": ["add-0-0", "add-0-1"]}
    problem, _, in_flight = crashloop.check_memory(path, model, [{"ready": True}, intent], set(),
                                                   crashloop.Figures(), snapshot=True)
    assert in_flight == "add" and problem and "half-applied: 1 of its 2 images" in problem

    whole = {**intent, "sources": ["add-0-0"]}
    figures = crashloop.Figures()
    problem, after, _ = crashloop.check_memory(path, model, [{"ready": True}, whole], set(), figures, snapshot=True)
    assert problem is None and figures.applied["add"] == 1 and after[1] == crashloop.Exemplar("c1", False)
