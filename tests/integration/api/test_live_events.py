"""GET /events over a real uvicorn, fed by a real ingest through real NATS: a committed sample reaches
its user's browser and nobody else's, Last-Event-ID resumes, and a browser that stops reading is
dropped without holding back one that reads."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertEvent, AlertServer
from tests.integration.fuzz.conftest import live_api
from tests.integration.ingest.conftest import (  # noqa: F401 - ingest and nc are fixtures
    eventually, ingest, nc, publish_sample, query, reading,
)
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration

CLIENT_QUEUE = 300  # holds one message of the last test (251 events)


@pytest.fixture(scope="module")
def api(database_url, redis_url, nats_url):
    with live_api(database_url, redis_url, nats_url, live_client_queue=CLIENT_QUEUE,
                  live_heartbeat_s=1.0) as running:
        yield running


class Stream:
    """One SSE client reading in the background; `events` holds the parsed frames."""

    def __init__(self, api, token: str, last_event_id: str | None = None) -> None:
        self.api, self.events = api, []
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self._headers = headers
        self.status: int | None = None
        self.opened = False

    async def __aenter__(self) -> Stream:
        self._client = httpx.AsyncClient(base_url=self.api.base_url, timeout=None)
        self._task = asyncio.create_task(self._read())
        await eventually(lambda: self.opened)
        return self

    async def _read(self) -> None:
        async with self._client.stream("GET", "/events", headers=self._headers) as response:
            self.status = response.status_code
            buffer = b""
            async for chunk in response.aiter_raw():
                *blocks, buffer = (buffer + chunk).split(b"\n\n")
                for block in blocks:
                    lines = [line for line in block.decode().split("\n") if not line.startswith(":")]
                    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
                    if block.startswith(b"retry:"):
                        self.opened = True
                    elif "event" in fields:
                        fields["data"] = orjson.loads(fields["data"])
                        self.events.append(fields)

    def of(self, kind: str, **match) -> list[dict]:
        return [e for e in self.events if e["event"] == kind and all(e["data"].get(k) == v for k, v in match.items())]

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()


async def _ready(api) -> None:
    await eventually(lambda: api.app.state.live.subscribed, timeout=20)


def _at(seconds_ago: float) -> datetime:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).replace(microsecond=0)


async def test_a_committed_sample_reaches_its_users_stream_and_no_other(api, ingest, nc, database_url):
    await _ready(api)
    alice, bob = make_user(database_url), make_user(database_url)
    a_server, b_server = make_server(database_url, alice), make_server(database_url, bob)
    a_proc = make_process(database_url, a_server, "nginx")
    make_process(database_url, b_server, "nginx")
    async with Stream(api, alice.token) as a_stream, Stream(api, bob.token) as b_stream:
        await publish_sample(nc, a_server, _at(5), [reading("nginx", count=3, cpu=12.5, mem=4.0)])
        sample = (await eventually(lambda: a_stream.of("sample", process_id=a_proc)))[0]
        assert {k: v for k, v in sample["data"].items() if k != "last_sample_at"} == {
            "server_id": a_server.id, "process_id": a_proc, "status": "up", "last_count": 3,
            "last_cpu_pct": 12.5, "last_memory_pct": 4.0}
        assert datetime.fromisoformat(sample["data"]["last_sample_at"]) > _at(10)
        assert a_stream.of("server", server_id=a_server.id, online=True)
        # Bob's stream works (his own sample arrives) and never carried Alice's.
        await publish_sample(nc, b_server, _at(4), [reading("nginx", count=0, cpu=0, mem=0, oldest=None)])
        down = (await eventually(lambda: b_stream.of("sample", server_id=b_server.id)))[0]
        assert down["data"]["status"] == "down"
        assert not [e for e in b_stream.events if e["data"].get("server_id") == a_server.id]


async def test_last_event_id_resumes_with_the_missed_events(api, ingest, nc, database_url):
    await _ready(api)
    user = make_user(database_url)
    server = make_server(database_url, user)
    proc = make_process(database_url, server, "redis")
    async with Stream(api, user.token) as first:
        await publish_sample(nc, server, _at(30), [reading("redis", count=1)])
        seen = (await eventually(lambda: first.of("sample", process_id=proc)))[-1]["id"]
    await eventually(lambda: api.app.state.live.clients_of(user.id) == 0)
    for i, count in enumerate((2, 3)):  # while the browser is away
        await publish_sample(nc, server, _at(20 - i), [reading("redis", count=count)])
    await eventually(lambda: ingest_committed(database_url, proc, 3))
    async with Stream(api, user.token, last_event_id=seen) as again:
        missed = await eventually(lambda: len(again.of("sample", process_id=proc)) >= 2 and again.of("sample"))
        assert [e["data"]["last_count"] for e in missed] == [2, 3]
        assert not again.of("reset")
    async with Stream(api, user.token, last_event_id="another-boot-1") as stale:
        await eventually(lambda: stale.of("reset"))


async def test_alerts_reach_their_users_stream_and_server_offline_moves_the_server(api, nc, database_url):
    await _ready(api)
    user, other = make_user(database_url), make_user(database_url)
    server = make_server(database_url, user)

    def offline(state: str, owner: int) -> bytes:
        return AlertEvent(id=f"so-{state}-{owner}", type="server_offline", state=state, occurred_at=datetime.now(UTC),
                          user_id=owner, server=AlertServer(id=server.id, hostname=server.hostname), value=90.0,
                          threshold=60.0, reason="recovered" if state == "resolved" else None).model_dump_json().encode()

    async with Stream(api, user.token) as stream, Stream(api, other.token) as other_stream:
        # As the alerter publishes them (subject alerts.<server>.server, after its commit).
        await nc.publish(subjects.server_alerts(server.id), offline("firing", user.id))
        await eventually(lambda: stream.of("server", server_id=server.id, online=False))
        assert stream.of("alert")[0]["data"]["type"] == "server_offline"
        await nc.publish(subjects.server_alerts(server.id), offline("resolved", user.id))
        await eventually(lambda: stream.of("server", server_id=server.id, online=True))
        await nc.publish(subjects.server_alerts(server.id), offline("firing", other.id))
        await eventually(lambda: other_stream.of("alert"))
        assert len(stream.of("alert")) == 2


def ingest_committed(database_url: str, process_id: int, count: int) -> bool:
    return query(database_url, "select samples_total from watched_processes where id = %s", (process_id,))[0][0] >= count


async def test_a_browser_that_stops_reading_is_dropped_and_never_holds_back_one_that_reads(
        api, ingest, nc, database_url):
    await _ready(api)
    user = make_user(database_url, "scale")
    server = make_server(database_url, user)
    # The server's kernel buffers a stalled socket's stream up to its autotuned send buffer (4 MiB
    # by default on Linux): what it takes before the API sees the client as slow is ~20,000 events.
    names = [f"worker-{i}" for i in range(250)]
    for name in names:
        make_process(database_url, server, name)
    hub = api.app.state.live
    dropped_before = hub.dropped_clients
    # The stalled browser: a raw socket with a tiny receive buffer that reads the headers, then nothing.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", api.port))
    stalled.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user.token}\r\n\r\n".encode())
    try:
        async with Stream(api, user.token) as reader:
            await eventually(lambda: hub.clients_of(user.id) == 2)
            messages = 100
            for i in range(messages):
                await publish_sample(nc, server, _at(600 - i), [reading(n, count=1, cpu=float(i)) for n in names])
            done = await eventually(lambda: len(reader.of("server", server_id=server.id)) >= messages, timeout=60)
            assert done and len(reader.of("sample", server_id=server.id)) == messages * len(names)
            assert hub.dropped_clients > dropped_before
    finally:
        stalled.close()
