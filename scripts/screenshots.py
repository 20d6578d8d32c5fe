"""Walk the app's journeys in a headless Chromium and keep a screenshot of each page: the one place that takes them.

    python scripts/screenshots.py [--memory sample.vmem] [--out docs/screenshots]

The journeys, in order (each waits for what a user would see, and says what it saw):
classify an uploaded image; change the rule and k; evaluate, click a cell of the confusion matrix and delete the
exemplar that drove one of its errors; add an exemplar, then delete it through the confirmation; accept a curate
suggestion; box-select on the map; forget and purge on Unlearning (its certificate). tests/test_journeys.py walks the
same steps on a small memory and checks what they report. Everything happens on a copy of the memory given, which is
never changed. Needs Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.browser import (  # noqa: E402
    box_select_everything,
    button,
    choose,
    chromium,
    click,
    go_to_page,
    settle,
    streamlit_server,
    tick,
    upload,
    wait_for,
    wait_for_text,
)

SHOWN_QUERIES = 10  # of a confusion-matrix cell, as pages/evaluate.py lists them
# every screenshot the journeys keep, in the order they are taken
SHOTS = ("classify", "evaluate", "memory", "curate", "map", "unlearning-before-after", "unlearning",
         "purge-certificate")


@dataclass
class Shots:
    """Where screenshots go (None: nowhere); `save` waits for the page to settle first."""

    folder: Optional[Path]

    def save(self, driver, name: str, title: str) -> None:
        if name not in SHOTS:
            raise ValueError(f"unknown screenshot {name!r}; the journeys keep {', '.join(SHOTS)}")
        settle(driver, title)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(self.folder / f"{name}.png"))


# --- the confusion matrix ------------------------------------------------------------------------------------------
def plotly_chart(driver, title: str):
    """The plotly chart whose title starts with `title`."""
    from selenium.webdriver.common.by import By

    return wait_for(driver, lambda d: next((p for p in d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
                                            if any(t.text.startswith(title) for t in
                                                   p.find_elements(By.CSS_SELECTOR, ".gtitle"))), None),
                    what=f"the chart '{title}'")


def click_confusion_cell(driver, true_label: str, predicted: str) -> None:
    """Click the confusion matrix where the column `predicted` crosses the row `true_label` (by their tick labels)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    chart = plotly_chart(driver, "Confusion matrix")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
    time.sleep(0.5)

    def centre(selector: str, text: str) -> dict:
        tick_label = next(t for t in chart.find_elements(By.CSS_SELECTOR, selector) if t.text == text)
        return driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                     "return {x: r.x + r.width / 2, y: r.y + r.height / 2};", tick_label)

    column, row = centre(".xtick text", predicted), centre(".ytick text", true_label)
    drag = chart.find_element(By.CSS_SELECTOR, ".nsewdrag")
    area = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                 "return {x: r.x + r.width / 2, y: r.y + r.height / 2};", drag)
    ActionChains(driver).move_to_element_with_offset(drag, int(column["x"] - area["x"]), int(row["y"] - area["y"])) \
        .pause(0.5).click().perform()


def click_bar(driver, label: str) -> None:
    """Click the bar of class `label` in the accuracy-per-class chart."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    chart = plotly_chart(driver, "Accuracy per class")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
    time.sleep(0.5)
    labels = [t.text for t in chart.find_elements(By.CSS_SELECTOR, ".xtick text")]
    bar = chart.find_elements(By.CSS_SELECTOR, ".bars .point path")[labels.index(label)]
    # plotly's drag layer lies over the bars and takes the click there, as it does for a hand on the mouse
    ActionChains(driver).move_to_element(bar).pause(0.5).click().perform()


# --- the journeys -----------------------------------------------------------------------------------------------------
def classify_an_upload(driver, url: str, image: Path, shots: Shots) -> str:
    """Open the app, upload `image` on Classify; returns the upload's prediction (the first heading)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    settle(driver, "Classify")
    wait_for_text(driver, r"Prediction: ", "the default sample's prediction", timeout=180)  # the encoder loads first
    upload(driver, image)
    headings = wait_for(driver, lambda d: [h.text for h in d.find_elements(By.TAG_NAME, "h3")
                                           if h.text.startswith("Prediction: ")][1:] and
                        [h.text for h in d.find_elements(By.TAG_NAME, "h3") if h.text.startswith("Prediction: ")],
                        what="a prediction for the upload beside the sample's")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .bars") and all(
        img.get_attribute("naturalWidth") not in (None, "0")
        for img in d.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")),
        what="the chart and every thumbnail drawn")
    shots.save(driver, "classify", "Classify")
    return headings[0].removeprefix("Prediction: ")


def change_rule_and_k(driver, rule: str, k: int) -> str:
    """In the sidebar, pick `rule` and lower k to `k` (by the keyboard); returns what Classify then says of the vote."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    choose(driver, "Voting rule", rule)
    wait_for_text(driver, rf"\({rule} voting", f"{rule} voting on Classify")
    # the slider's thumb is a visually hidden range input: focus it and use the arrow keys, as a keyboard user would
    slider = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid='stSidebar'] "
                                                                        "[data-testid='stSlider'] input[type='range']"),
                      what="the k slider")
    driver.execute_script("arguments[0].focus();", slider)
    now = int(slider.get_attribute("value"))
    ActionChains(driver).send_keys(*([Keys.ARROW_LEFT] * (now - k) if now > k else [Keys.ARROW_RIGHT] * (k - now))) \
        .perform()
    return wait_for_text(driver, rf"from k={k} neighbours \({rule} voting[^)]*\)", f"k={k} on Classify").group(0)


def fix_an_error(driver, true_label: str, predicted: str, shots: Shots, exemplar: Optional[int] = None) -> dict:
    """On Evaluate (reached by the sidebar, keeping the session's rule and k): click the confusion-matrix cell,
    tick `exemplar` among the listed queries' voters (default: the first query's top driver), delete it through the
    confirmation, and read what the re-evaluation says. Returns {"listed", "deleted", "report", "fixed", "broken"}."""
    go_to_page(driver, "Evaluate")
    click_confusion_cell(driver, true_label, predicted)
    listed = wait_for_text(driver, rf"(\d+) quer(?:y|ies) of class {re.escape(true_label)} predicted "
                           rf"{re.escape(predicted)}", "the cell's queries listed").group(0)
    driver_label = tick(driver, f"{predicted} (id {'' if exemplar is None else f'{exemplar})'}", prefix=True)
    deleted = int(re.search(r"\(id (\d+)\)", driver_label).group(1))
    click(driver, button(driver, "Delete 1 selected"))
    wait_for_text(driver, rf"delete exemplar\(s\) {deleted} \(as of change #\d+\)", "the confirmation naming it")
    click(driver, button(driver, "Yes, delete"))
    report = wait_for_text(driver, r"Re-evaluated: (\d+) fixed, (\d+) broken[^\n]*", "the re-evaluation")
    wait_for_text(driver, rf"Fixed: {report.group(1)}", "the list of fixed queries")
    # the matrix, what the change did, and the cell's queries left, in one view
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", plotly_chart(driver, "Confusion matrix"))
    shots.save(driver, "evaluate", "Evaluate")
    return {"listed": listed, "deleted": deleted, "report": report.group(0), "fixed": int(report.group(1)),
            "broken": int(report.group(2))}


def add_then_delete(driver, url: str, image: Path, label: str, shots: Shots) -> dict:
    """On Memory, add `image` labelled `label` (one the memory has), then delete it through the confirmation.
    Returns {"added", "id", "deleted"} as the page said them."""
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/memory")
    settle(driver, "Memory")
    expander = wait_for(driver, lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "details")
                                                if "Add exemplars" in e.text), None), what="Add exemplars")
    if expander.get_attribute("open") is None:  # folded: its controls are not visible, so not clickable
        click(driver, expander.find_element(By.TAG_NAME, "summary"))
    upload(driver, image)
    choose(driver, "Label", label)  # the first of the page's two boxes so named: the one inside "Add exemplars"
    click(driver, button(driver, "Add to memory"))
    added = wait_for_text(driver, r"Added 1 exemplar\(s\) labelled '([^']+)' \(ids (\d+)\)", "the addition")
    label, new_id = added.group(1), int(added.group(2))
    tick(driver, f"NEW {label} (id {new_id})")
    click(driver, button(driver, "Delete 1 selected"))
    wait_for_text(driver, rf"delete exemplar\(s\) {new_id} \(as of change #\d+\)", "the confirmation naming it")
    shots.save(driver, "memory", "Memory")
    click(driver, button(driver, "Yes, delete"))
    deleted = wait_for_text(driver, rf"Deleted 1 exemplar\(s\): {new_id}\.", "the deletion").group(0)
    return {"added": added.group(0), "id": new_id, "deleted": deleted}


def accept_a_curate_suggestion(driver, url: str, shots: Shots) -> dict:
    """On Curate, accept the first suggestion's relabel through the confirmation. Returns {"id", "label", "done"}."""
    driver.get(f"{url}/curate")
    settle(driver, "Curate")
    wait_for_text(driver, r"Suggestions: the \d+ exemplars most likely mislabelled", "the suggestions")
    shots.save(driver, "curate", "Curate")
    relabel = button(driver, "Make it ")
    label = relabel.text.removeprefix("Make it ").strip()
    click(driver, relabel)
    asked = wait_for_text(driver, rf"Relabel exemplar (\d+) as '{re.escape(label)}'\?", "the confirmation")
    click(driver, button(driver, "Yes, relabel"))
    done = wait_for_text(driver, rf"Relabelled exemplar {asked.group(1)} as '{re.escape(label)}'\.", "the relabel")
    return {"id": int(asked.group(1)), "label": label, "done": done.group(0)}


def select_on_the_map(driver, url: str, shots: Shots) -> str:
    """On Map, drag a box over every point; returns the selection's heading."""
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/map")
    settle(driver, "Map")
    chart = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .nsewdrag") and
                     d.find_element(By.CSS_SELECTOR, ".js-plotly-plot"), what="the map")
    box_select_everything(driver, chart)
    heading = wait_for_text(driver, r"Selected: \d+ exemplar\(s\)", "the selection").group(0)
    wait_for_text(driver, r"nearest first", "more like this")
    shots.save(driver, "map", "Map")
    return heading


def forget_and_purge(driver, url: str, shots: Shots) -> dict:
    """On Unlearning (a new session: the default rule and k), forget the exemplars behind the first query's
    prediction, then purge them through the confirmation. Returns {"forgot", "verdict", "checks"}."""
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/unlearning")
    settle(driver, "Unlearning")
    click(driver, button(driver, "Forget"))
    forgot = wait_for_text(driver, r"Forgot \d+ exemplar\(s\) \([\d, ]+\)", "the deletion").group(0)
    shots.save(driver, "unlearning-before-after", "Unlearning")
    for text in ("Purge them", "Yes, purge"):  # the button, then its confirmation
        click(driver, button(driver, text))
        settle(driver, "Unlearning")
    verdict = wait_for_text(driver, r"(All checks passed|A check FAILED)[^\n]*", "the certificate", timeout=300)
    shots.save(driver, "unlearning", "Unlearning")
    heading = next(h for h in driver.find_elements(By.TAG_NAME, "h2") if h.text.startswith("5. The certificate"))
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)
    shots.save(driver, "purge-certificate", "Unlearning")
    # one line per check, after its icon (a Material Symbols ligature, whose text is the icon's name)
    checks = [m.text for m in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMarkdownContainer'] p")
              if m.text.startswith(("check_circle", "cancel"))]
    return {"forgot": forgot, "verdict": verdict.group(0), "checks": checks}


# --- the sample memory's screenshots ----------------------------------------------------------------------------------
def error_to_fix(memory_path: Path, rule: str, k: int) -> tuple[str, str, int]:
    """A confusion-matrix cell (true, predicted) of the shipped query split at `rule`, `k`, and an exemplar that drove
    one of its first listed queries, chosen as the one whose deletion fixes the most queries net of those it breaks
    (read before the app opens the memory: one process at a time)."""
    from vmem_core import VisualMemory, resources
    from vmem_core.analysis.attribution import exemplar_influence
    from vmem_core.analysis.error_drilldown import cell_queries, evaluation_run, voters
    from vmem_core.ingest.datasets import scan_dataset
    from vmem_core.voting import VoteSettings

    items = scan_dataset(resources.sample_data() / "queries")
    settings = VoteSettings(k=k, rule=rule)
    with VisualMemory.open(memory_path) as memory:
        embeddings, truth = memory.exemplars.encode([i.path for i in items]), [i.label for i in items]
        run = evaluation_run(memory, embeddings, truth, [i.source for i in items], settings)
        influence = exemplar_influence(memory, embeddings, truth, settings)
    gain = dict(zip(influence["id"], influence["flips_to_correct"] - influence["flips_to_wrong"]))
    candidates = []
    for index in np.flatnonzero(~run.correct):
        result = run.results[index]
        cell = (run.true_labels[index], result.label)
        if result.label is None or index not in cell_queries(run, *cell)[:SHOWN_QUERIES]:
            continue
        top = voters(result)[0].neighbor.id
        candidates.append((gain.get(top, 0), cell, top))
    _, cell, exemplar = max(candidates, key=lambda c: c[0])
    return cell[0], cell[1], int(exemplar)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", type=Path, default=REPO / "sample.vmem")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    shots = Shots(args.out)
    samples = REPO / "data" / "fashion-mnist"
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / args.memory.name
        shutil.copytree(args.memory, copy)
        rule, k = "plurality", 1
        true_label, predicted, exemplar = error_to_fix(copy, rule, k)
        with streamlit_server(copy) as url, chromium(1400, 1500) as driver:
            trouser = sorted((samples / "queries" / "trouser").glob("*.png"))[0]
            print("classify:", classify_an_upload(driver, url, trouser, shots))
            print("rule and k:", change_rule_and_k(driver, rule, k))
            print("evaluate:", fix_an_error(driver, true_label, predicted, shots, exemplar))
            bag = sorted((samples / "queries" / "bag").glob("*.png"))[-1]
            print("memory:", add_then_delete(driver, url, bag, "bag", shots))
            print("curate:", accept_a_curate_suggestion(driver, url, shots))
            print("map:", select_on_the_map(driver, url, shots))
            print("unlearning:", forget_and_purge(driver, url, shots))
    print(f"saved {', '.join(f'{name}.png' for name in SHOTS)} in {args.out}")


if __name__ == "__main__":
    main()
