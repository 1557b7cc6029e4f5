"""GET of the list and get routes is answered before FastAPI's stack (hot_reads.answer); FastAPI's own
routes still answer it under a root_path. Both must give the same answer, byte for byte, in every case."""

from __future__ import annotations

import httpx
import pytest

from procwatch_api import hot_reads
from tests.integration.api.conftest import api_settings, insert_samples, running_api, utc
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration

ROOT = "/pw"


def via_fastapi(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The same app, reached with a root_path: the fast path steps aside and FastAPI routes the request."""
    transport = httpx.ASGITransport(client.app, root_path=ROOT)  # type: ignore[attr-defined]
    return httpx.AsyncClient(transport=transport, base_url="http://api.test" + ROOT)


async def both(client, path: str, headers: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
    async with via_fastapi(client) as slow:
        return await client.get(path, headers=headers), await slow.get(path, headers=headers)


async def test_fast_path_and_fastapi_routes_answer_identically(client, database_url, user, server, other_user):
    pid = make_process(database_url, server, "nginx", cpu_threshold_pct=80)
    make_process(database_url, server, "redis-server")
    insert_samples(database_url, pid, [(utc(30 - i), 1 if i % 9 else 0, 1000 + i // 10) for i in range(30)])
    foreign = make_server(database_url, other_user, "theirs")
    cases = [
        (f"/servers/{server.id}/processes", user.headers),
        (f"/servers/{server.id}/processes/{pid}", user.headers),
        (f"/servers/{server.id}/processes/{pid + 10_000}", user.headers),
        (f"/servers/{foreign.id}/processes", user.headers),
        (f"/servers/{foreign.id}/processes/{pid}", user.headers),
        ("/servers/abc/processes", user.headers),
        (f"/servers/{server.id}/processes/-1", user.headers),
        (f"/servers/{server.id}/processes/{pid}", {}),
        (f"/servers/{server.id}/processes", {"Authorization": "Bearer pwt_not_a_token"}),
        (f"/servers/{server.id}/processes", {"Authorization": "Basic abc"}),
    ]
    statuses = set()
    for path, headers in cases:
        fast, slow = await both(client, path, headers)
        assert (fast.status_code, fast.headers.multi_items(), fast.content) == \
            (slow.status_code, slow.headers.multi_items(), slow.content), path
        statuses.add(fast.status_code)
    assert statuses == {200, 401, 404}


async def test_the_fast_path_answers_the_hot_reads(client, database_url, user, server, monkeypatch):
    """FastAPI's route functions are not reached without a root_path (else this test measures nothing)."""
    pid = make_process(database_url, server, "nginx")
    reached = []

    async def spy(*args, **kwargs):
        reached.append(args)
        return await original(*args, **kwargs)

    original = hot_reads.get_process
    monkeypatch.setattr(hot_reads, "get_process", spy)
    assert (await client.get(f"/servers/{server.id}/processes/{pid}", headers=user.headers)).status_code == 200
    assert len(reached) == 1 and reached[0][0] is client.app.state  # type: ignore[attr-defined]
    # HEAD of it too, without the body.
    head = await client.head(f"/servers/{server.id}/processes/{pid}", headers=user.headers)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    assert len(reached) == 2
    # Everything else still goes through FastAPI: a trailing slash, another method.
    assert (await client.get(f"/servers/{server.id}/processes/{pid}/", headers=user.headers)).status_code == 404
    assert (await client.patch(f"/servers/{server.id}/processes/{pid}", headers=user.headers)).status_code == 405
    assert len(reached) == 2


async def test_rate_limit_answers_the_same_on_both_paths(database_url, redis_url, nats_url):
    user = make_user(database_url, "pro")
    server = make_server(database_url, user, "limited")
    async with running_api(api_settings(database_url, redis_url, nats_url, rate_limit_per_minute=2)) as c:
        answers = []
        for _ in range(4):  # 4 > 2: the shared limit is passed whichever path counts
            fast, slow = await both(c, f"/servers/{server.id}/processes", user.headers)
            answers += [fast, slow]
    limited = [r for r in answers if r.status_code == 429]
    assert len(limited) >= 2
    for r in limited:
        body = r.json()
        assert body["error"] == "rate_limited" and body["limit"] == 2
        assert r.headers["retry-after"] == str(body["retry_after"])
