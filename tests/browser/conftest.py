"""Browser fixtures: a real `vitrine demo` server in a subprocess and headless Chromium.

Chromium is the system's (Debian's `chromium`, or VITRINE_CHROMIUM); these tests fail
rather than skip when it is missing, so a machine without it cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from servers import ROOT, free_port, running, server_env, with_demo_shop  # noqa: F401 - ROOT and free_port for the browser tests
from server.identity import TokenSigner
from server.settings import Settings

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
SERVER_START_TIMEOUT_S = 120  # the demo imports its data and trains its model first


def wait_until(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; that value, or the last one after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@dataclass
class VitrineServer:
    """A running `vitrine demo` process and read-only views of its state."""

    url: str
    data_dir: Path
    process: subprocess.Popen
    signer: TokenSigner = field(init=False)

    def __post_init__(self) -> None:
        settings = Settings.load(environ={}, data_dir=self.data_dir)
        self.signer = TokenSigner(settings.signing_keys(), settings.token_max_age_days * 86400)

    def query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        """Rows from the server's SQLite database, opened read-only."""
        conn = sqlite3.connect(f"file:{self.data_dir / 'vitrine.db'}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def visitor_id(self, page: Page) -> str:
        """The visitor id in the token the embed script keeps in the page's localStorage."""
        token = page.evaluate("() => localStorage.getItem('vitrine:demo:token')")
        visitor = self.signer.visitor_id("demo", token)
        assert visitor, f"no valid visitor token in localStorage: {token!r}"
        return visitor

    def events(self, visitor_id: str, type: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM events WHERE shop = 'demo' AND visitor_id = ? AND type = ?", visitor_id, type)

    def wait_for_events(self, visitor_id: str, type: str, timeout: float = 6.0) -> list[sqlite3.Row]:
        # The script batches events (~1 s) and flushes on pagehide; sendBeacon is fire-and-forget.
        return wait_until(lambda: self.events(visitor_id, type), timeout)


@pytest.fixture(scope="session")
def vitrine_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VitrineServer]:
    data_dir = tmp_path_factory.mktemp("vitrine-data")
    with_demo_shop(data_dir)  # without its hold-out and experiments (tests/servers.py)
    # The developer's own VITRINE_* settings must not change what the demo does here; the
    # demo trains its model on first start, and a short tuning budget keeps the suite quick.
    env = server_env(VITRINE_TRAIN_TIME_BUDGET_S="10")
    # No simulated month: these tests look at what real visitors' pages do.
    with running("demo", data_dir, env, data_dir / "server.log", SERVER_START_TIMEOUT_S, args=("--no-simulate",)) as serving:
        yield VitrineServer(url=serving.url, data_dir=data_dir, process=serving.process)


def chromium_path() -> str:
    path = os.environ.get("VITRINE_CHROMIUM") or shutil.which("chromium")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            "Chromium is needed for the browser tests and was not found: install it "
            "(`apt-get install chromium`) or point VITRINE_CHROMIUM at its executable."
        )
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Make fresh browser contexts (fresh cookies and localStorage: a new visitor); closed after the test."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = browser.new_context(**{"viewport": {"width": 1200, "height": 800}, **options})
        context.set_default_timeout(8000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def context(new_context: Callable[..., BrowserContext]) -> BrowserContext:
    return new_context()


class PageProblems:
    """Uncaught errors on a page, and errors the embed script swallowed and logged."""

    def __init__(self, page: Page) -> None:
        self.uncaught: list[str] = []
        self.swallowed: list[str] = []
        self.console_errors: list[str] = []
        page.on("pageerror", lambda error: self.uncaught.append(str(error)))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if text.startswith("vitrine:"):
            self.swallowed.append(text)
        # A refused connection or a 404 is logged by the browser itself, not by a script.
        elif message.type == "error" and not text.startswith("Failed to load resource"):
            self.console_errors.append(text)

    def assert_none(self) -> None:
        assert self.uncaught == [], f"uncaught errors on the page: {self.uncaught}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"
        assert self.swallowed == [], f"the embed script caught errors of its own: {self.swallowed}"


@pytest.fixture
def watch() -> Callable[[Page], PageProblems]:
    return PageProblems


@pytest.fixture
def screenshot() -> Callable[[Page, str], None]:
    """Save a screenshot as $VITRINE_SCREENSHOTS/vitrine-NAME.png when that directory is set."""
    target = os.environ.get("VITRINE_SCREENSHOTS")

    def take(page: Page, name: str) -> None:
        if target:
            page.screenshot(path=str(Path(target) / f"vitrine-{name}.png"))

    return take
