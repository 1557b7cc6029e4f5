"""Graceful lifecycle: SIGTERM drains in flight work; readiness reports a dead dependency fast."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import nats
import pytest
from procwatch_contracts import subjects

from tests.faults.conftest import ServiceProcess
from tests.integration.api.conftest import api_settings, closed_port_url, running_api
from tests.integration.ingest.conftest import eventually, query, reading, sample_body
from tests.support.factories import make_process, make_server, make_user

pytestmark = [pytest.mark.faults, pytest.mark.integration]

N_SERVERS, N_TICKS = 20, 30


async def _consumer(js, durable):
    try:
        return await js.consumer_info(subjects.AGENT_SAMPLES_STREAM, durable)
    except Exception:
        return None


async def test_sigterm_mid_burst_drains_and_a_restart_stores_everything_exactly_once(
        database_url, nats_url, redis_url, tmp_path):
    user = make_user(database_url, "scale")
    servers = [make_server(database_url, user) for _ in range(N_SERVERS)]
    pids = [make_process(database_url, s, "worker") for s in servers]
    durable = f"lifecycle-{uuid.uuid4().hex[:8]}"
    env = {"DATABASE_URL": database_url, "NATS_URL": nats_url, "REDIS_URL": redis_url,
           "PROCWATCH_INGEST_DURABLE": durable, "PROCWATCH_INGEST_WATCHLIST_QUEUE": durable,
           "PROCWATCH_INGEST_DELIVER_POLICY": "new", "PROCWATCH_INGEST_BATCH_SIZE": "40",
           "PROCWATCH_INGEST_BATCH_TIMEOUT_MS": "20", "LOG_LEVEL": "INFO",
           # Far beyond the test's deadlines: a message the stopped instance kept unacked would miss them.
           "PROCWATCH_INGEST_ACK_WAIT_S": "300"}
    ingest = ServiceProcess("ingest", env, tmp_path / "ingest.log").start()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await eventually(lambda: _consumer(js, durable), 30)
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)

        async def burst():
            for tick in range(N_TICKS):
                at = base + timedelta(seconds=10 * tick)
                for s in servers:
                    await js.publish(subjects.agent_samples(s.id),
                                     sample_body(s.id, at, [reading("worker", count=1 + tick, oldest=1000 + tick)]),
                                     headers={"Authorization": f"Bearer {s.agent_key}",
                                              "Nats-Msg-Id": f"{durable}-{s.id}-{tick}"})
                await asyncio.sleep(0.05)

        publisher = asyncio.create_task(burst())
        def stored() -> int:
            return query(database_url, "select count(*) from process_samples where watched_process_id = any(%s)",
                         (pids,))[0][0]

        await eventually(lambda: stored() >= 60, 30)
        assert not publisher.done(), "the burst ended before the SIGTERM: nothing was in flight"
        t0 = time.monotonic()
        ingest.signal(signal.SIGTERM)
        rc = await asyncio.to_thread(ingest.wait, 30)
        stop_s = time.monotonic() - t0
        assert rc == 0, ingest.output()[-3000:]
        assert stop_s < 10
        at_stop = stored()
        await publisher
        assert at_stop < N_SERVERS * N_TICKS, "stopped after the burst was fully stored"

        # Drained: whatever the stopped instance had taken was committed and acked, or handed back (nak)
        # for immediate redelivery; nothing waits for ack_wait (300 s) before the restart picks it up.
        ingest.start()
        await eventually(lambda: stored() == N_SERVERS * N_TICKS, 30)

        async def settled():
            i = await _consumer(js, durable)
            return i.num_pending == 0 and i.num_ack_pending == 0
        await eventually(settled, 15)
        dupes = query(database_url, "select watched_process_id, recorded_at, count(*) from process_samples"
                      " where watched_process_id = any(%s) group by 1, 2 having count(*) > 1", (pids,))
        assert dupes == []
        last = dict(query(database_url, "select id, samples_total from watched_processes where id = any(%s)", (pids,)))
        assert set(last.values()) == {N_TICKS}
        newest = query(database_url, "select distinct last_count, last_oldest_start_unix, last_sample_at"
                       " from watched_processes where id = any(%s)", (pids,))
        assert newest == [(N_TICKS, 1000 + N_TICKS - 1, base + timedelta(seconds=10 * (N_TICKS - 1)))]
    finally:
        ingest.stop()
        await nc.close()


async def test_readyz_is_503_fast_when_redis_is_unreachable_and_healthz_stays_200(database_url, nats_url):
    async with running_api(api_settings(database_url, closed_port_url("redis"), nats_url)) as client:
        t0 = time.monotonic()
        r = await client.get("/readyz")
        assert time.monotonic() - t0 < 2.5
        assert r.status_code == 503
        assert r.json()["status"] == "not_ready" and r.json()["checks"]["redis"].startswith("error")
        assert r.json()["checks"]["postgres"] == "ok"
        assert (await client.get("/healthz")).status_code == 200


async def _get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"http://127.0.0.1:{port}{path}")


async def test_ingest_health_endpoint_reports_ready_and_a_dead_database(database_url, nats_url):
    from procwatch_ingest.app import IngestApp

    from tests.integration.ingest.conftest import ingest_settings

    app = IngestApp(ingest_settings(database_url, nats_url, health_port=0))
    await app.start()
    try:
        r = await _get(app.health.port, "/readyz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": {"postgres": "ok", "nats": "ok", "consumer": "ok"}}
        assert (await _get(app.health.port, "/healthz")).json() == {"status": "ok"}
        assert (await _get(app.health.port, "/nope")).status_code == 404
    finally:
        await app.stop()
    assert not app.health.listening

    dead_db = closed_port_url("postgresql") + "/procwatch"
    app = IngestApp(ingest_settings(dead_db, nats_url, health_port=0, health_timeout_s=1.0))
    await app.start()
    try:
        t0 = time.monotonic()
        r = await _get(app.health.port, "/readyz")
        assert time.monotonic() - t0 < 2.5
        assert r.status_code == 503
        assert r.json()["checks"]["postgres"].startswith("error") and r.json()["checks"]["nats"] == "ok"
        assert (await _get(app.health.port, "/healthz")).status_code == 200
    finally:
        await app.stop()


async def test_api_answers_503_fast_not_500_when_postgres_is_unreachable(redis_url, nats_url):
    dead_db = closed_port_url("postgresql") + "/procwatch"
    async with running_api(api_settings(dead_db, redis_url, nats_url)) as client:
        for method, path in [("GET", "/servers"), ("GET", "/servers/1/processes"), ("POST", "/servers")]:
            t0 = time.monotonic()
            r = await client.request(method, path, headers={"Authorization": "Bearer pwt_whatever"},
                                     json={"hostname": "x"} if method == "POST" else None)
            assert time.monotonic() - t0 < 2.0
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "service_unavailable" and r.headers["retry-after"] == "1"
        assert (await client.get("/readyz")).status_code == 503


async def test_alerter_health_endpoint_reports_ready_and_a_dead_database(database_url, nats_url):
    from procwatch_alerter.app import AlerterApp

    from tests.integration.alerter.conftest import alerter_settings

    settings = alerter_settings(database_url, nats_url, 2_000_000_001).model_copy(update={"health_port": 0})
    app = AlerterApp(settings)
    await app.start()
    try:
        r = await _get(app.health.port, "/readyz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": {"postgres": "ok", "nats": "ok", "consumer": "ok",
                                                         "outbox_relay": "ok"}}
        assert (await _get(app.health.port, "/healthz")).status_code == 200
    finally:
        await app.stop()

    dead_db = closed_port_url("postgresql") + "/procwatch"
    settings = alerter_settings(dead_db, nats_url, 2_000_000_002).model_copy(
        update={"health_port": 0, "health_timeout_s": 1.0})
    app = AlerterApp(settings)
    await app.start()
    try:
        t0 = time.monotonic()
        r = await _get(app.health.port, "/readyz")
        assert time.monotonic() - t0 < 2.5
        assert r.status_code == 503 and r.json()["checks"]["postgres"].startswith("error"), r.text
        assert r.json()["checks"]["nats"] == "ok"
    finally:
        await app.stop()
