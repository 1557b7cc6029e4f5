"""Browser tests: Debian's chromium driven by pytest-playwright (`executable_path`: Playwright's own
download is not used), against one `procwatch up` (embedded servers, every service, the real agent)
for the whole directory."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserType, Playwright, sync_playwright

from procwatch.screenshots import CHROMIUM_ARGS, RunningUp, chromium_path


# Playwright's sync API runs its own event loop on this thread for as long as it is started, and
# pytest-asyncio cannot run a test while that loop exists. pytest-playwright starts it once per
# session: every async test after these (tests/integration, ...) would fail. So Playwright, the
# browser type and the browser live for this package only.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    pw = sync_playwright().start()
    yield pw
    pw.stop()


@pytest.fixture(scope="package")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    return getattr(playwright, browser_name)


@pytest.fixture(scope="package")
def browser(browser_type: BrowserType, browser_type_launch_args: dict) -> Iterator[Browser]:
    launched = browser_type.launch(**browser_type_launch_args)
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    executable = chromium_path()
    if executable is None:
        message = "chromium not found: apt-get install chromium, or set CHROMIUM_PATH"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the browser tests (.ci/run installs chromium)
        pytest.skip(message)  # a laptop without chromium skips them, loudly (-ra)
    return {**browser_type_launch_args, "executable_path": executable, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """`procwatch up` with its agent on this machine (a one-second tick keeps the tests quick)."""
    stack = RunningUp(tmp_path_factory.mktemp("browser") / "pw", env={"PROCWATCH_INGEST_INTERVAL_SECONDS": "1"})
    try:
        yield stack
    finally:
        assert stack.stop() == 0


@pytest.fixture(scope="package")
def browser_context_args() -> dict:
    """pytest-playwright's (session-scoped, it asks for playwright) without its device option."""
    return {}
