"""The dashboard in a real headless browser (Debian's chromium and chromium-driver, driven by selenium):
the page loads, shows a running paper daemon's strategies, updates when a fill happens, and shows a lost
instance as lost. A screenshot is kept as an artifact ($S1MPLED_ARTIFACTS, else the test's tmp dir)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from tests.daemon_harness import Daemon, read_books, write_config
from tests.test_dashboard_server import TOKEN, DashboardProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DEADLINE_S = 45.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1200",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless chromium through Debian's chromedriver (an explicit driver path: Selenium Manager fetches nothing)."""
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options
    )
    try:
        yield driver
    finally:
        driver.quit()


def artifacts(tmp_path: Path) -> Path:
    where = Path(os.environ.get("S1MPLED_ARTIFACTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def query(driver: WebDriver, selector: str, attribute: str) -> list[str]:
    """``attribute`` of every element matching ``selector``, read in one script (the page redraws often, so
    element handles kept across calls would go stale)."""
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]) || '')"
    return [str(v) for v in driver.execute_script(script, selector, attribute)]


def trade_ids(driver: WebDriver) -> set[str]:
    return set(query(driver, "tr[data-trade-id]", "data-trade-id"))


def price_points(driver: WebDriver) -> int:
    """How many points the shortest price chart on the page has drawn."""
    return min((len(p.split()) for p in query(driver, 'figure[data-chart="price"] polyline', "points")), default=0)


def text_of(driver: WebDriver, selector: str) -> str:
    return str(driver.execute_script("return document.querySelector(arguments[0])?.textContent || ''", selector))


def test_the_page_shows_a_paper_daemon_and_follows_its_fills(tmp_path: Path, browser: WebDriver) -> None:
    """Loaded with the token, the page lists both strategies of a running paper daemon; a fill the daemon makes
    afterwards (and really made: it is in the paper exchange's books) appears on the page by itself; a
    stopped daemon is shown as lost."""
    daemon = Daemon(write_config(tmp_path), tmp_path / "daemon.log")
    daemon.wait_trading()
    (tmp_path / "token").write_text(TOKEN)
    dashboard = DashboardProcess(
        tmp_path / "dashboard.log", "--socket", str(tmp_path / "control.sock"), "--token-file", str(tmp_path / "token")
    )
    try:
        wait = WebDriverWait(browser, DEADLINE_S, poll_frequency=0.1)
        browser.get(dashboard.url + "?token=" + TOKEN)
        wait.until(lambda d: query(d, "#conn", "data-state") == ["live"])
        wait.until(lambda d: len(query(d, 'section[data-link="connected"] tr[data-strategy]', "data-strategy")) == 2)
        assert set(query(browser, "tr[data-strategy]", "data-strategy")) == {"dca-btc", "grid-eth"}
        assert query(browser, "[data-breaker]", "data-breaker") == ["closed"]

        before = trade_ids(browser)
        wait.until(lambda d: trade_ids(d) - before)  # a fill that happened after the page had loaded
        new = trade_ids(browser) - before
        books = read_books(tmp_path / "state")
        assert books is not None and new <= {t.trade_id for t in books.exchange.trades()}

        wait.until(lambda d: price_points(d) >= 8)  # enough history for the charts to say something
        shot = artifacts(tmp_path) / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes().startswith(b"\x89PNG")
        print(f"dashboard screenshot: {shot}")

        assert daemon.stop() == 0
        wait.until(lambda d: "lost" in text_of(d, 'section[data-link="lost"] .lost'))
        assert query(browser, "tr[data-strategy]", "data-strategy"), "the last known state stays on the page"
    finally:
        assert dashboard.stop() == 0, dashboard.output()
    assert TOKEN not in dashboard.output()
