"""The status page in a real browser: Debian's headless Chromium driven by Selenium against
the real server on 127.0.0.1. Open the page, see the state, click Pause and see "Paused",
search a file name and download its old version, compare the bytes.

Chromium starts with a new empty profile and everything that would reach the network
turned off (the machine has no outside network). A screenshot is kept in the test's tmp
dir; with BTFS_STATUS_PAGE_SHOT=PATH in the environment, one more there (the README's:
`make status-page-shot`)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (make install installs them)")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_pause_search_and_download_an_old_version(web_daemon, browser, tmp_path):
    from selenium.webdriver.common.by import By

    w = web_daemon
    browser.get(w.url)
    wait_for(lambda: text_of(browser, "state") == "Watching", 20, "the state")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#backups tbody tr")) == 2,
             20, "the backups")
    assert "pending changes" in text_of(browser, "figures")

    browser.find_element(By.ID, "pause").click()
    wait_for(lambda: text_of(browser, "state") == "Paused", 10, "Paused")
    assert w.status()["state"] == "paused"  # the daemon itself, not only the page

    box = browser.find_element(By.ID, "search")
    box.send_keys("notes")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    hit = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".hit"), 20, "a hit")[0]
    assert hit.find_element(By.CLASS_NAME, "path").text == str(w.src / "docs" / "notes.txt")
    links = hit.find_elements(By.CSS_SELECTOR, "a.download")
    assert len(links) == 2  # oldest first
    browser.save_screenshot(str(tmp_path / "status-page.png"))
    shot = os.environ.get("BTFS_STATUS_PAGE_SHOT")
    if shot:
        shutil.copyfile(tmp_path / "status-page.png", shot)

    links[0].click()
    saved = browser.downloads / "notes.txt"
    wait_for(lambda: saved.exists() and saved.stat().st_size == len(w.old), 30, "the download")
    time.sleep(0.2)  # Chromium renames its .crdownload into place when complete
    assert saved.read_bytes() == w.old

    browser.find_element(By.ID, "resume").click()
    wait_for(lambda: text_of(browser, "state") == "Watching", 10, "Watching again")

    # The oldest backup's tree, opened at the tracked directory: docs/, then its files.
    browser.find_elements(By.CSS_SELECTOR, "#backups tbody tr")[-1].click()
    row = wait_for(lambda: [r for r in browser.find_elements(By.CSS_SELECTOR, "#tree tbody tr")
                            if r.text.startswith("docs/")], 10, "docs/ in the tree")[0]
    row.click()
    wait_for(lambda: "notes.txt 3.0 MiB" in text_of(browser, "tree"), 10, "the old notes.txt")


def test_the_page_without_its_token_shows_nothing(web_daemon, browser):
    w = web_daemon
    browser.get(w.base + "/")
    assert "missing or wrong token" in browser.page_source
    assert "notes" not in browser.page_source
