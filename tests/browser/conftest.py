"""Fixtures of the browser tests: one stack with a token for the module, Debian's headless Chromium
driven by Playwright (never ``playwright install``), a fresh browser context per test, screenshots.

Without Chromium the tests skip on a developer machine and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from taskmesh.processes import wait_http
from tests.support import Stack

TOKEN = "dashboard-test-token"
CHROMIUM = Path(os.environ.get("TASKMESH_CHROMIUM", "/usr/bin/chromium-headless-shell"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".taskmesh" / "screenshots"
WAIT_MS = 30_000
expect.set_options(timeout=15_000)  # a machine shared by several jobs can be slow to render Swagger UI


@pytest.fixture(scope="module")
def dashboard_stack(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Stack]:
    """One stack whose gateway requires TOKEN, shared by the module's tests (a stack takes seconds to start)."""
    stack = Stack(tmp_path_factory.mktemp("dashboard"), env_extra={"TASKMESH_API_TOKENS": TOKEN})
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A store and a gateway without tokens (local mode)."""
    stack = Stack(tmp_path_factory.mktemp("open"))
    try:
        stack.start(names=("store", "gateway"), wait=False)
        wait_http(f"{stack.base_url}/api/health", ok_statuses=(200, 503), timeout=30)
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def http(dashboard_stack: Stack) -> Iterator[httpx.Client]:
    """An API client with the token, to set up and check what the browser does."""
    with httpx.Client(
        base_url=dashboard_stack.base_url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's headless Chromium under Playwright's sync API, for this module only: while it runs, the
    main thread has a running event loop, which the asyncio tests that follow must not inherit."""
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium-headless-shell (or set TASKMESH_CHROMIUM)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Browser, dashboard_stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab (own sessionStorage) at 1280×800; a screenshot of it is kept after the test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, base_url=dashboard_stack.base_url)
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        finally:
            context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def sign_in(page: Page) -> None:
    """Open the dashboard with the token already in this tab's session (as the sign-in form leaves it)."""
    page.add_init_script(f"sessionStorage.setItem('taskmesh.token', {TOKEN!r})")
