"""The console in a real headless browser (Debian's Chromium through Selenium), as the
browser test and the README's city walkthrough drive it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from support import wait_for

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@contextmanager
def headless_chromium() -> Iterator[WebDriver]:
    """Chromium from Debian's packages (``hack/obtain.sh browser``); a missing one fails."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise AssertionError(f"no browser: {', '.join(missing)} missing (hack/obtain.sh browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(flag)
    # Chromium leaves its singleton socket's folder in TMPDIR when it quits: its own one,
    # removed here, keeps /tmp as the run found it.
    with tempfile.TemporaryDirectory(prefix="aios-chromium-") as scratch:
        service = webdriver.ChromeService(str(CHROMEDRIVER), env={**os.environ, "TMPDIR": scratch})
        driver = webdriver.Chrome(options, service)
        try:
            yield driver
        finally:
            driver.quit()


def sign_in(driver: WebDriver, url: str, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{url}/inbox")
    assert driver.current_url.endswith("/signin"), "pages need a session"
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.signin button").click()
    # Signed in once the console sent us on to the inbox (the click returns before that).
    wait_for(lambda: driver.current_url.endswith("/inbox"), 30, 0.2, "signed in")


def card(driver: WebDriver, url: str, action_id: str = "", timeout: float = 120) -> WebElement:
    """The inbox's card of ``action_id`` (any action's without one), once an action waits
    (the page is read on load)."""
    selector = f'article[data-action-id="{action_id}"]' if action_id else "article[data-action-id]"

    def shown() -> WebElement | None:
        driver.get(f"{url}/inbox")
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        return found[0] if found else None

    found: WebElement = wait_for(shown, timeout, what=lambda: driver.page_source[-2000:])
    return found


def screenshot(driver: WebDriver, directory: Path, name: str) -> None:
    """The page as ``console-NAME.png``, copied where ``AIOS_SCREENSHOTS`` points (the
    README's images come from there)."""
    path = directory / f"console-{name}.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000, path
    wanted = os.environ.get("AIOS_SCREENSHOTS")
    if wanted:
        shutil.copy(path, Path(wanted) / path.name)


def live_text(driver: WebDriver, selector: str) -> str:
    """The text of an element in the overview's live part, read again when a refresh
    swapped it between finding and reading."""

    def read() -> str | None:
        try:
            return driver.find_element(By.CSS_SELECTOR, selector).text or None
        except StaleElementReferenceException:
            return None

    text: str = wait_for(read, 30, 0.2, f"{selector} in the overview")
    return text
