"""Browser tests of the console: Playwright driving Debian's Chromium against a live server.

| fixture | gives |
|---|---|
| ``chromium_path`` | /usr/bin/chromium, installed by ``scripts/ensure-test-tools.sh`` when |
| | missing; the tests skip (with the reason) only when that install fails |
| ``browser`` | one headless Chromium for the session |
| ``console`` | a live API (uvicorn in a thread) on the test database, with two console accounts |
| | (``li`` operator, ``wang`` viewer), a recording enqueuer, and a fresh browser context |

Playwright cannot download its own browsers here, so it launches ``executable_path``.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from producers.console.auth import hash_password
from producers.http import create_app
from producers.testing import API_KEY, bridge_settings, build_test_components
from worker.enqueue import RecordingEnqueuer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PASSWORDS = {"li": "li-operator-pw-3d9", "wang": "wang-viewer-pw-7c1"}
SESSION_SECRET = "console-test-session-secret-42a7"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        result = subprocess.run(
            [str(ROOT / "scripts" / "ensure-test-tools.sh")],
            capture_output=True,
            text=True,
            check=False,
        )
        if not CHROMIUM.exists():
            pytest.skip(
                "chromium is missing and scripts/ensure-test-tools.sh could not install it "
                f"(exit {result.returncode}): {result.stderr.strip()[-300:]}"
            )
    return CHROMIUM


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright, chromium_path: Path) -> Iterator[Browser]:
    launched = playwright_driver.chromium.launch(
        executable_path=str(chromium_path),
        headless=True,
        args=["--no-sandbox", "--disable-dev-shm-usage"],
    )
    try:
        yield launched
    finally:
        launched.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Console:
    """The live console of one test: its URL, a browser page, the database, the enqueuer."""

    url: str
    context: BrowserContext
    page: Page
    sessions: sessionmaker[Session]
    enqueuer: RecordingEnqueuer

    def open(self, fragment: str = "#/overview") -> Page:
        self.page.goto(f"{self.url}/console/{fragment}")
        return self.page

    def login(self, name: str, password: str | None = None) -> Page:
        page = self.open()
        page.fill("#login-name", name)
        page.fill("#login-password", password if password is not None else PASSWORDS[name])
        page.click("#login-submit")
        return page

    def ready(self) -> Page:
        """Wait until the page rendered its route (``main[data-ready]``)."""
        self.page.wait_for_selector("main[data-ready='1']")
        return self.page


@pytest.fixture
def console(
    database_url: str, session_factory: sessionmaker[Session], browser: Browser
) -> Iterator[Console]:
    # A low iteration count keeps logins fast in tests; production hashes use the default.
    users = [
        {
            "name": name,
            "role": role,
            "password_hash": hash_password(PASSWORDS[name], iterations=1000),
        }
        for name, role in (("li", "operator"), ("wang", "viewer"))
    ]
    settings = bridge_settings(
        database_url,
        console={
            "users": users,
            "session_secret": SESSION_SECRET,
            "flower_url": "http://127.0.0.1:5555",
        },
    )
    enqueuer = RecordingEnqueuer()
    components = build_test_components(settings, session_factory, enqueuer=enqueuer)
    app = create_app(settings, components=components)
    with LiveServer(app) as server:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
        try:
            yield Console(server.url, context, context.new_page(), session_factory, enqueuer)
        finally:
            context.close()


def api_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}
