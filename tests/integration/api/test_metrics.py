"""GET /metrics on the API: requests counted by route *template* (the hot reads, answered before
FastAPI's stack, included), method and status, with their latency; only for allowed networks."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from procwatch_api.request_metrics import UNMATCHED
from tests.support.factories import make_process

pytestmark = pytest.mark.integration


async def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def requests(samples, route: str, method: str, status: int) -> float:
    key = ("procwatch_api_request_duration_seconds_count",
           frozenset({"route": route, "method": method, "status": str(status)}.items()))
    return samples.get(key, 0.0)


def latency_sum(samples, route: str, method: str, status: int) -> float:
    key = ("procwatch_api_request_duration_seconds_sum",
           frozenset({"route": route, "method": method, "status": str(status)}.items()))
    return samples.get(key, 0.0)


async def test_requests_are_counted_by_route_template_method_and_status(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx")
    before = await scrape(client)
    for _ in range(2):
        assert (await client.get(f"/servers/{server.id}/processes", headers=user.headers)).status_code == 200
    assert (await client.get(f"/servers/{server.id}/processes/{pid}", headers=user.headers)).status_code == 200
    assert (await client.head(f"/servers/{server.id}/processes/{pid}", headers=user.headers)).status_code == 200
    assert (await client.get(f"/servers/{server.id}/processes")).status_code == 401
    assert (await client.get(f"/servers/{server.id}", headers=user.headers)).status_code == 200
    assert (await client.get("/no/such/path", headers=user.headers)).status_code == 404
    after = await scrape(client)

    hot_list, hot_one = "/servers/{server_id}/processes", "/servers/{server_id}/processes/{process_id}"
    assert requests(after, hot_list, "GET", 200) == requests(before, hot_list, "GET", 200) + 2
    assert requests(after, hot_list, "GET", 401) == requests(before, hot_list, "GET", 401) + 1
    assert requests(after, hot_one, "GET", 200) == requests(before, hot_one, "GET", 200) + 1
    assert requests(after, hot_one, "HEAD", 200) == requests(before, hot_one, "HEAD", 200) + 1
    # A route FastAPI answers: its template, from the routing.
    assert requests(after, "/servers/{server_id}", "GET", 200) == requests(before, "/servers/{server_id}", "GET", 200) + 1
    assert requests(after, UNMATCHED, "GET", 404) == requests(before, UNMATCHED, "GET", 404) + 1
    assert latency_sum(after, hot_list, "GET", 200) > latency_sum(before, hot_list, "GET", 200)
    # Never the raw path: no label value holds the server's id.
    assert not [key for key in after if key[0].startswith("procwatch_api_")
                and any(str(server.id) in v.split("/") for _, v in key[1])]


async def test_metrics_answer_404_to_a_client_outside_the_allowed_networks(client):
    public = httpx.ASGITransport(client.app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=public, base_url="http://api.test") as outsider:
        response = await outsider.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "procwatch_" not in response.text
