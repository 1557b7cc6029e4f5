"""Publish -> ingest -> GET /servers/{id}/processes/{pid}: what a user sees (API built by another team)."""

from __future__ import annotations

import pytest

from tests.integration.ingest.conftest import eventually, now_utc, publish_sample, reading
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration

api_conftest = pytest.importorskip("tests.integration.api.conftest")


async def test_samples_counts_and_restarts_through_the_api(ingest, nc, database_url, redis_url, nats_url):
    user = make_user(database_url)
    server = make_server(database_url, user)
    pid = make_process(database_url, server, "nginx")
    times = [now_utc(-300 + 60 * i) for i in range(4)]
    starts = [1000, 1000, 2000, 3000]  # two restarts
    for t, start in zip(times, starts):
        await publish_sample(nc, server, t, [reading("nginx", 4, 12.5, 8.0, start)], agent_version="9.9.9")
    settings = api_conftest.api_settings(database_url, redis_url, nats_url)
    async with api_conftest.running_api(settings) as client:
        async def fetch():
            r = await client.get(f"/servers/{server.id}/processes/{pid}", headers=user.headers)
            return r.json() if r.status_code == 200 and r.json().get("samples_total") == 4 else None

        body = await eventually(fetch)
        assert body["recent_restarts"] == 2
        assert [s["recorded_at"] for s in body["samples"]] == [
            t.isoformat().replace("+00:00", "Z") for t in reversed(times)]
        assert body["samples"][0]["oldest_start_unix"] == 3000
        assert body["process"]["status"] == "up" and body["process"]["last_count"] == 4
        listing = (await client.get(f"/servers/{server.id}/processes", headers=user.headers)).json()
        assert listing["server"]["last_agent_version"] == "9.9.9"
        assert listing["processes"][0]["last_sample_at"] == times[-1].isoformat().replace("+00:00", "Z")
