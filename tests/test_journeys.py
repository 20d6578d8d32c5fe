"""The journeys a user takes through the app, walked in a real headless Chromium by the steps that take the README's
screenshots (scripts/screenshots.py), each checked against what the page said and what the memory holds after.

Two sessions at once is tests/test_browser.py's test_two_sessions_the_second_delete_confirmation_says_what_moved.
"""

import os
import re

import pytest

from scripts import screenshots as journey
from vmem_core import VisualMemory
from vmem_core.ingest.datasets import scan_dataset

from .browser import browser_available, chromium, streamlit_server
from .helpers import SAMPLE, sample_folder

pytestmark = pytest.mark.skipif(
    not browser_available() and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)

RULE, K = "plurality", 1


@pytest.fixture
def planted_memory(tmp_path):
    """Bags, sneakers and trousers (8 each, the default encoder), and one exemplar labelled trouser placed on a bag
    query that the memory otherwise gets right: at k=1 that query is predicted trouser. Returns the memory's path,
    the planted id, and the queries that deleting it fixes and breaks (worked out from plain searches)."""
    data = sample_folder(tmp_path / "data", ("bag", "sneaker", "trouser"), per_label=8)
    queries = scan_dataset(SAMPLE / "queries")
    with VisualMemory.create(tmp_path / "mem.vmem") as memory:
        memory.exemplars.build(data)
        embeddings = memory.exemplars.encode([q.path for q in queries])
        results = memory.search.classify_embeddings(embeddings, k=K, rule=RULE)
        index = [i for i, (q, r) in enumerate(zip(queries, results)) if q.label == r.label == "bag"][1]
        (planted,) = memory.exemplars.add_embeddings(embeddings[index][None], ["trouser"])
        found, _ = memory.search(embeddings, 2)
        leaning = [i for i in range(len(queries)) if found[i, 0] == planted]
        after = {i: memory.table.label_of(int(found[i, 1])) for i in leaning}
        nearest_left = [memory.table.label_of(int(row[1] if row[0] == planted else row[0])) for row in found]
    return {"path": tmp_path / "mem.vmem", "planted": planted, "query": queries[index].source,
            "bag_errors_after": sum(q.label == "bag" != label for q, label in zip(queries, nearest_left)),
            "fixed": sum(after[i] == queries[i].label for i in leaning),
            "broken": sum(queries[i].label == "trouser" != after[i] for i in leaning)}


@pytest.mark.slow
def test_the_journeys_in_a_real_browser(planted_memory, tmp_path):
    shots = journey.Shots(tmp_path / "screenshots")
    planted = planted_memory["planted"]
    with streamlit_server(planted_memory["path"]) as url, chromium(1400, 1500) as driver:
        # upload and classify
        trouser = sorted((SAMPLE / "queries" / "trouser").glob("*.png"))[0]
        assert journey.classify_an_upload(driver, url, trouser, shots) == "trouser"

        # change rule and k: the gallery then says so
        assert journey.change_rule_and_k(driver, RULE, K) == f"from k={K} neighbours ({RULE} voting, pruning none)"

        # evaluate and fix an error from the confusion matrix: click (bag, trouser), delete the planted driver
        fixed = journey.fix_an_error(driver, "bag", "trouser", shots, exemplar=planted)
        assert fixed["deleted"] == planted and planted_memory["fixed"] >= 1
        assert (fixed["fixed"], fixed["broken"]) == (planted_memory["fixed"], planted_memory["broken"])
        assert "quer" in fixed["listed"] and "of class bag predicted trouser" in fixed["listed"]
        # a class's bar lists all of that class's errors, as they stand after the fix
        journey.click_bar(driver, "bag")
        journey.wait_for_text(driver, rf"\b{planted_memory['bag_errors_after']} quer(y|ies) of class bag predicted "
                                      r"\(any wrong\)", "the bag bar's errors")

        # add, then delete with the confirmation
        bag = sorted((SAMPLE / "queries" / "bag").glob("*.png"))[-1]
        added = journey.add_then_delete(driver, url, bag, "bag", shots)
        assert added["added"].startswith("Added 1 exemplar(s) labelled 'bag'")

        # curate: accept a suggestion's relabel
        curated = journey.accept_a_curate_suggestion(driver, url, shots)

        # the map: a box over every point selects every live exemplar (24 built, +1 planted, -1 fixed)
        assert journey.select_on_the_map(driver, url, shots) == "Selected: 24 exemplar(s)"

        # forget and purge: the certificate
        unlearned = journey.forget_and_purge(driver, url, shots)
        forgotten = [int(i) for i in re.search(r"\(([\d, ]+)\)$", unlearned["forgot"]).group(1).split(", ")]
        assert unlearned["verdict"].startswith(f"All checks passed: {len(forgotten)} exemplar(s) removed")
        assert len(unlearned["checks"]) == 4 and all(c.startswith("check_circle") for c in unlearned["checks"])

    with VisualMemory.open(planted_memory["path"]) as memory:
        tombstoned = memory.exemplars.tombstoned_ids()
        assert planted in tombstoned and added["id"] in tombstoned  # deleted, restorable: not purged
        assert not set(forgotten) & set(tombstoned) and memory.exemplars.rows(forgotten).empty  # purged: gone
        if curated["id"] not in forgotten:
            assert memory.table.label_of(curated["id"]) == curated["label"]
    assert sorted(p.name for p in shots.folder.iterdir()) == sorted(f"{name}.png" for name in journey.SHOTS)
    assert all(p.stat().st_size > 10_000 for p in shots.folder.iterdir())
