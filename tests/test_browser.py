"""End to end in a real headless Chromium: upload an image on Classify and see the neighbour gallery."""

import os
import shutil

import pytest

from vmem_core import VisualMemory

from .browser import (
    box_select_everything,
    browser_available,
    button,
    button_texts,
    chromium,
    click,
    streamlit_server,
    tick,
    upload,
    wait_for,
)
from .helpers import SAMPLE, sample_folder

pytestmark = pytest.mark.skipif(
    not browser_available() and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def real_memory(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    data = sample_folder(root / "data", ("bag", "sneaker", "trouser"), per_label=6)
    with VisualMemory.create(root / "mem.vmem") as memory:  # the default encoder, as a user would have
        memory.exemplars.build(data)
    return root / "mem.vmem"


@pytest.mark.slow
def test_upload_shows_prediction_and_neighbor_gallery(real_memory):
    from selenium.webdriver.common.by import By

    query = sorted((SAMPLE / "queries" / "trouser").glob("*.png"))[0]
    with streamlit_server(real_memory) as url, chromium() as driver:
        driver.get(url)
        wait_for(driver, lambda d: "Classify" in d.find_element(By.TAG_NAME, "h1").text, what="the Classify page")
        wait_for(driver, lambda d: any("Prediction:" in h.text for h in d.find_elements(By.TAG_NAME, "h3")),
                 what="the default sample's prediction")
        upload(driver, query)
        headings = wait_for(
            driver,
            lambda d: [h.text for h in d.find_elements(By.TAG_NAME, "h3") if "Prediction:" in h.text][1:] and
            [h.text for h in d.find_elements(By.TAG_NAME, "h3") if "Prediction:" in h.text],
            what="a prediction for the upload beside the sample's",
        )
        heading = headings[0]  # uploads are listed before picked samples
        assert heading == "Prediction: trouser"
        captions = wait_for(
            driver,
            lambda d: [c.text for c in d.find_elements(By.CSS_SELECTOR, "[data-testid='stCaptionContainer']")
                       if "of win" in c.text] or None,
            what="the neighbour gallery",
        )
        assert len(captions) == 20  # k = 10 neighbours for each of the two queries
        assert "w 25% of vote" in captions[0] and captions[0].startswith("#0") and "trouser" in captions[0]
        images = [img for img in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")
                  if img.get_attribute("naturalWidth") not in (None, "0")]
        assert len(images) >= 22  # both queries and their ten neighbours each, all loaded
        assert driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")  # the class-score chart rendered


def test_two_sessions_the_second_delete_confirmation_says_what_moved(real_memory, tmp_path):
    """Two browser tabs on one memory press Delete on the same exemplar; the first confirms; the second's
    confirmation then says that the exemplar was deleted meanwhile, and changes nothing."""
    shutil.copytree(real_memory, tmp_path / "mem.vmem")
    with streamlit_server(tmp_path / "mem.vmem") as url, chromium() as first, chromium() as second:
        for driver in (first, second):
            driver.get(f"{url}/memory")
            tick(driver, "bag (id 0)")
            click(driver, button(driver, "Delete 1 selected"))
            wait_for(driver, lambda d: "delete exemplar(s) 0 (as of change #" in d.page_source,
                     what="the confirmation naming id 0 and the change counter")
        click(first, button(first, "Yes, delete"))
        wait_for(first, lambda d: "Deleted 1 exemplar(s): 0." in d.page_source, what="the first deletion")
        click(second, button(second, "Yes, delete"))
        wait_for(second, lambda d: "memory changed since you pressed Delete" in d.page_source
                 and "0 was live ('bag'), now deleted ('bag')" in d.page_source, what="the second tab told what moved")
        second.save_screenshot(str(tmp_path / "two-sessions.png"))
        assert "Yes, delete" not in button_texts(second)  # read once the page settled, never mid-rerun
    with VisualMemory.open(tmp_path / "mem.vmem") as memory:
        assert len(memory) == 17 and memory.exemplars.tombstoned_ids() == [0]


@pytest.mark.slow
def test_map_box_selection_shows_the_exemplars_and_more_like_this(real_memory, tmp_path):
    """In a real browser the WebGL map answers a box drag: the selected exemplars' thumbnails and "more like this"."""
    from selenium.webdriver.common.by import By

    shutil.copytree(real_memory, tmp_path / "mem.vmem")
    with streamlit_server(tmp_path / "mem.vmem") as url, chromium() as driver:
        driver.get(f"{url}/map")
        wait_for(driver, lambda d: "Map" in d.find_element(By.TAG_NAME, "h1").text, what="the Map page")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .nsewdrag"),
                 what="the map's plot area")
        box_select_everything(driver, driver.find_element(By.CSS_SELECTOR, ".js-plotly-plot"))
        heading = wait_for(driver, lambda d: [h.text for h in d.find_elements(By.TAG_NAME, "h3")
                                              if h.text.startswith("Selected:")], what="the selection")
        assert heading == ["Selected: 18 exemplar(s)"]
        wait_for(driver, lambda d: "nearest first" in d.page_source, what="more like this")
