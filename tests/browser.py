"""A real Streamlit server on localhost and a headless Debian Chromium driven by selenium (no downloaded browser)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def browser_available() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(memory: Path, timeout: float = 60) -> Iterator[str]:
    """`streamlit run app.py` on a free loopback port for `memory`; yields the base URL, stops the server after."""
    port = free_port()
    env = dict(os.environ, VMEM_MEMORY=str(memory))
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)  # a loaded machine can take a while to close the memory
        except subprocess.TimeoutExpired:
            server.kill()


@contextmanager
def chromium(width: int = 1400, height: int = 1800):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--window-size={width},{height}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, timeout: float = 90, what: str = "condition"):
    """Poll `condition(driver)` until it returns something truthy; raise with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition(driver)
            if value:
                return value
        except Exception:  # noqa: BLE001 - the page is still rendering
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- acting as a user: what a step waits for is what a user would see ----------------------------------------------
def script_running(driver) -> bool:
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']"))


def quiet(driver, seconds: float = 2.5, timeout: float = 120) -> None:
    """Wait until Streamlit's "running" widget has been gone for `seconds`: a rerun replaces the page's elements,
    and an element read during one is stale."""
    quiet_since = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        quiet_since = None if script_running(driver) else (quiet_since or time.monotonic())
        if quiet_since and time.monotonic() - quiet_since > seconds:
            return
        time.sleep(0.3)


def settle(driver, title: str) -> None:
    """Wait for the page titled `title`, then until Streamlit's "running" widget has been gone for a moment."""
    from selenium.webdriver.common.by import By

    wait_for(driver, lambda d: title in d.find_element(By.TAG_NAME, "h1").text, what=f"the {title} page")
    quiet(driver)


def settled_read(driver, read, timeout: float = 120):
    """`read(driver)` on a settled page, read again if a rerun replaced an element meanwhile (a stale element):
    reading a page mid-rerun failed a full run under load (StaleElementReferenceException)."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        quiet(driver, timeout=timeout)
        try:
            return read(driver)
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise


def button_texts(driver) -> list[str]:
    """The texts of every button on the page, once it has settled."""
    return settled_read(driver, lambda d: [b.text for b in d.find_elements("tag name", "button")])


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, pattern: str, what: str, timeout: float = 120) -> re.Match:
    """The first match of the regular expression `pattern` in the page's visible text, once there."""
    return wait_for(driver, lambda d: re.search(pattern, page_text(d)), timeout=timeout, what=what)


def click(driver, element) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    time.sleep(0.3)  # let a smooth scroll end before the click lands
    element.click()


def upload(driver, path: Path) -> None:
    """Give `path` to the page's file uploader once it is there (it renders after the page's first output: finding it
    at once failed a CI run under load)."""
    from selenium.webdriver.common.by import By

    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "input[type='file']"), what="the uploader") \
        .send_keys(str(path))


def button(driver, text: str):
    """The enabled button whose text starts with `text`, once there."""
    from selenium.webdriver.common.by import By

    return wait_for(driver, lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button")
                                            if b.text.startswith(text) and b.is_enabled()), None),
                    what=f"the '{text}' button")


def tick(driver, caption: str, prefix: bool = False) -> str:
    """Tick the (first) checkbox labelled `caption` (or whose label starts with it); returns its label."""
    from selenium.webdriver.common.by import By

    def find(d):
        return next((c for c in d.find_elements(By.CSS_SELECTOR, "[data-testid='stCheckbox']")
                     if (c.text.strip().startswith(caption) if prefix else c.text.strip() == caption)), None)

    box = wait_for(driver, find, what=f"the checkbox '{caption}'")
    label = box.text.strip()
    click(driver, box.find_element(By.TAG_NAME, "label"))
    return label


def go_to_page(driver, title: str) -> None:
    """Follow the sidebar's link to a page: unlike a new address, this keeps the session (and its sidebar settings)."""
    from selenium.webdriver.common.by import By

    links = "[data-testid='stSidebarNav'] a"
    link = wait_for(driver, lambda d: next((a for a in d.find_elements(By.CSS_SELECTOR, links)
                                            if a.text.strip().splitlines()[-1:] == [title]), None),  # after its icon
                    what=f"the sidebar link {title}")
    click(driver, link)
    settle(driver, title)


def box_select_everything(driver, chart) -> None:
    """Drag a box over the whole plot area of `chart` (in two moves, as a hand would)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    drag = chart.find_element(By.CSS_SELECTOR, ".nsewdrag")
    box = drag.rect
    ActionChains(driver).move_to_element_with_offset(drag, -box["width"] // 2 + 2, -box["height"] // 2 + 2) \
        .click_and_hold().move_by_offset(box["width"] // 2, box["height"] // 2) \
        .move_by_offset(box["width"] // 2 - 4, box["height"] // 2 - 4).release().perform()


def choose(driver, label: str, option_prefix: str) -> None:
    """Pick the option starting with `option_prefix` in the selectbox labelled `label`."""
    from selenium.webdriver.common.by import By

    box = wait_for(driver, lambda d: next((s for s in d.find_elements(By.CSS_SELECTOR, "[data-testid='stSelectbox']")
                                           if s.text.startswith(label)), None), what=f"the selectbox {label}")
    click(driver, box.find_element(By.CSS_SELECTOR, "[role='combobox'], input"))
    option = wait_for(driver, lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, "[role='option']")
                                              if o.text.startswith(option_prefix)), None),
                      what=f"the option {option_prefix}")
    option.click()
