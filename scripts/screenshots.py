"""Save a screenshot of each app page, on a copy of a memory (default: the sample), for the README and for review.

    python scripts/screenshots.py [--memory sample.vmem] [--out docs/screenshots]

Needs Debian's chromium and chromium-driver. On the Unlearning page it clicks "Forget" (before and after), then
"Purge" (the certificate); that happens on the copy, so the memory given is never changed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.browser import chromium, streamlit_server, wait_for  # noqa: E402

PAGES = {"classify": "", "memory": "memory", "unlearning": "unlearning", "evaluate": "evaluate", "curate": "curate",
         "map": "map"}


def settle(driver, title: str) -> None:
    from selenium.webdriver.common.by import By

    wait_for(driver, lambda d: title in d.find_element(By.TAG_NAME, "h1").text, what=f"the {title} page")
    # Streamlit shows a status widget while the script runs; wait until it has been gone for a moment
    quiet_since = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = script_running(driver)
        quiet_since = None if running else (quiet_since or time.monotonic())
        if quiet_since and time.monotonic() - quiet_since > 2.5:
            return
        time.sleep(0.3)


def script_running(driver) -> bool:
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']"))


def main() -> None:
    from selenium.webdriver.common.by import By

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", type=Path, default=REPO / "sample.vmem")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / args.memory.name
        shutil.copytree(args.memory, copy)
        with streamlit_server(copy) as url, chromium(1400, 1500) as driver:
            for name, path in PAGES.items():
                driver.get(f"{url}/{path}")
                settle(driver, name.capitalize())
                if name == "classify":  # the first page also waits for the encoder to load
                    wait_for(driver, lambda d: "Prediction:" in d.page_source, what="the prediction")
                    settle(driver, "Classify")
                    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .bars") and all(
                        img.get_attribute("naturalWidth") not in (None, "0")
                        for img in d.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")),
                        what="the chart and every thumbnail drawn")
                if name == "unlearning":
                    wait_for(driver, lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button")
                                                     if b.text.startswith("Forget")), None),
                             what="the Forget button").click()
                    wait_for(driver, lambda d: "Forgot" in d.page_source, what="the deletion")
                    settle(driver, "Unlearning")
                    driver.save_screenshot(str(args.out / "unlearning-before-after.png"))
                    print(f"saved {args.out / 'unlearning-before-after.png'}")
                    for text in ("Purge them", "Yes, purge"):  # the button, then its confirmation
                        button = wait_for(driver, lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button")
                                                                  if b.text.startswith(text)), None),
                                          what=f"the '{text}' button")
                        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
                        time.sleep(0.5)
                        button.click()
                        settle(driver, "Unlearning")
                    try:
                        wait_for(driver, lambda d: "The certificate" in d.page_source, what="the certificate")
                    except AssertionError:
                        driver.save_screenshot(str(args.out / "unlearning-failed.png"))
                        raise
                    settle(driver, "Unlearning")
                driver.save_screenshot(str(args.out / f"{name}.png"))
                print(f"saved {args.out / f'{name}.png'}")


if __name__ == "__main__":
    main()
