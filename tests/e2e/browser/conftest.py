"""Browser tests: Debian's chromium driven by pytest-playwright (`executable_path`: Playwright's own
download is not used), against one `procwatch up` (embedded servers, every service, the real agent)
for the whole directory."""

from __future__ import annotations

import os

import pytest

from procwatch.screenshots import CHROMIUM_ARGS, RunningUp, chromium_path


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
