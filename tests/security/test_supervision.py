"""Finding 8 (issue 14): `procwatch up` restarted its services but not its embedded servers, so a
killed Redis stayed down and /readyz answered 503 until someone restarted the stack by hand."""

from __future__ import annotations

import json
import signal
import stat
import time

import httpx
import psutil
import pytest
import redis

from procwatch.embedded import free_port
from tests.e2e.test_up import _read_until, _start_up, _stop

pytestmark = pytest.mark.integration


def _ready(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_embedded_redis_comes_back_under_up(server_tmp_path):
    data_dir, port = server_tmp_path / "pw", free_port()
    proc = _start_up(data_dir, port)
    try:
        _read_until(proc, r"Ctrl-C stops everything")
        stack_file = data_dir / "stack.json"
        assert stat.S_IMODE(stack_file.stat().st_mode) == 0o600  # it holds the servers' passwords
        stack = json.loads(stack_file.read_text())
        api_url, redis_url = stack["api_url"], stack["redis_url"]
        deadline = time.monotonic() + 60
        while not _ready(api_url):
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.2)

        (redis_server,) = [p for p in psutil.Process(proc.pid).children(recursive=True)
                           if p.name().startswith("redis-server")]
        redis_server.send_signal(signal.SIGKILL)
        redis_server.wait(10)

        out = _read_until(proc, r"embedded server restarted", timeout=60)
        assert "embedded server exited; restarting" in out
        deadline = time.monotonic() + 60
        while not _ready(api_url):
            assert time.monotonic() < deadline, "/readyz never recovered after Redis came back"
            time.sleep(0.2)
        # Same URL (same port, same password): nothing had to be reconfigured.
        assert json.loads(stack_file.read_text())["redis_url"] == redis_url
        assert redis.Redis.from_url(redis_url, socket_timeout=5).ping()
    finally:
        assert _stop(proc) == 0
