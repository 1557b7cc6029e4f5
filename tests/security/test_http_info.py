"""Issue 14, finding 11 (the items fixed rather than decided; docs/decisions.md has the rest):
a trailing slash answered 307 with the Host header reflected in Location; HEAD on GET routes answered
405; failed authentication was never rate limited; `admin create-user --email ""` succeeded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.api.conftest import api_settings, running_api
from tests.support.factories import make_server, make_user

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def test_a_trailing_slash_is_404_with_the_error_body_and_no_reflected_host(database_url, redis_url, nats_url):
    user = make_user(database_url)
    async with running_api(api_settings(database_url, redis_url, nats_url)) as client:
        answer = await client.get("/servers/", headers={**user.headers, "Host": "evil.example"})
    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert answer.json()["error"] == "not_found"


async def test_head_is_answered_on_get_routes(database_url, redis_url, nats_url):
    user = make_user(database_url)
    server = make_server(database_url, user)
    async with running_api(api_settings(database_url, redis_url, nats_url)) as client:
        for path in ("/healthz", "/servers", f"/servers/{server.id}", f"/servers/{server.id}/processes"):
            get = await client.get(path, headers=user.headers)
            head = await client.head(path, headers=user.headers)
            assert head.status_code == get.status_code == 200, path
            assert head.content == b"" and head.headers["content-length"] == get.headers["content-length"], path


async def test_failed_authentication_is_rate_limited_per_address(database_url, redis_url, nats_url):
    async with running_api(api_settings(database_url, redis_url, nats_url, failed_auth_per_minute=5)) as client:
        transport = httpx.ASGITransport(client.app, client=("198.51.100.7", 4000))  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as guesser:
            statuses = [(await guesser.get("/servers", headers={"Authorization": f"Bearer pwt_guess{i}"})).status_code
                        for i in range(12)]
    assert statuses[:5] == [401] * 5
    assert 429 in statuses[5:]


def test_admin_refuses_an_empty_or_malformed_email(database_url):
    env = {**os.environ, "DATABASE_URL": database_url}
    for email in ("", "not-an-email", "two@@example.test"):
        done = subprocess.run([sys.executable, "-m", "procwatch.cli", "admin", "create-user", "--email", email],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, (email, done.stdout)
        assert "email" in done.stderr
