"""The crash loop (scripts/crashloop.py) at CI size: children SIGKILLed at random moments, the memory checked after each."""

import importlib

from .conftest import REPO

CI_KILLS = 30


def test_random_kills_leave_a_consistent_memory(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # the forkserver's children import the script by name
    crashloop = importlib.import_module("crashloop")
    figures = crashloop.run(CI_KILLS, tmp_path, seed=7, max_delay=0.4)
    assert figures.inconsistencies == []
    assert sum(figures.kills.values()) == CI_KILLS
    assert figures.acknowledged >= CI_KILLS  # children got work done between kills, and all of it was found
    killed_during = set(figures.kills) & set(crashloop.OPERATIONS)
    assert len(killed_during) >= 4, figures.kills  # kills landed inside several kinds of operation
    assert sum(figures.recoveries.values()) > 0  # reopening had something to recover: replay, rebuild or purge
