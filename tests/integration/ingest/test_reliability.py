"""Failures lose nothing: publish failure after commit, PostgreSQL down, graceful shutdown."""

from __future__ import annotations


import pytest

from procwatch_contracts import subjects
from procwatch_contracts.messages import SampleRecorded, WatchListReply
from tests.integration.ingest.conftest import (
    eventually, now_utc, publish_sample, query, reading, stream_messages,
)
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


class _FailingPublisher:
    """A publisher whose publish fails: the process 'crashes' between commit and publish."""

    def __init__(self):
        self.calls = 0

    async def publish_async(self, *a, **kw):
        self.calls += 1
        raise ConnectionError("simulated crash after commit")


async def test_crash_between_commit_and_publish_loses_no_event(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    pid = make_process(database_url, server, "nginx")
    t0, t1 = now_utc(-20), now_utc(-10)
    await publish_sample(nc, server, t0, [reading("nginx", 1, oldest=100)])
    await eventually(lambda: query(database_url, "select samples_total from watched_processes where id=%s",
                                   (pid,)) == [(1,)])

    failing = _FailingPublisher()
    real = ingest.batches.publisher
    ingest.batches.publisher = lambda: failing
    try:
        await publish_sample(nc, server, t1, [reading("nginx", 1, oldest=200)])
        await eventually(lambda: failing.calls >= 1)
    finally:
        ingest.batches.publisher = real
    # Committed before the failed publish; published again (in place, or by a redelivery) and now announced.
    events = await eventually(lambda: _events(nc, server.id, 2))
    assert query(database_url, "select samples_total from watched_processes where id=%s", (pid,)) == [(2,)]
    second = SampleRecorded.model_validate_json(events[1].data)
    (row_id,) = query(database_url, "select id from process_samples where watched_process_id=%s and recorded_at=%s",
                      (pid, t1))[0]
    s = second.samples[0]
    assert (s.sample_id, s.previous_oldest_start_unix, s.previous_recorded_at, s.is_latest) == (row_id, 100, t0, True)

    # A replay of an already-published tick (new Nats-Msg-Id) re-publishes the same event id: JetStream drops it.
    await publish_sample(nc, server, t1, [reading("nginx", 1, oldest=200)])
    before = ingest.stats.samples_duplicate
    await eventually(lambda: ingest.stats.samples_duplicate > before)
    assert len(await stream_messages(nc, subjects.SAMPLE_EVENTS_STREAM, subjects.samples_recorded(server.id), 2,
                                     timeout=1)) == 2
    assert query(database_url, "select samples_total from watched_processes where id=%s", (pid,)) == [(2,)]


async def _events(nc, server_id, n):
    got = await stream_messages(nc, subjects.SAMPLE_EVENTS_STREAM, subjects.samples_recorded(server_id), n, timeout=1)
    return got if len(got) >= n else None


async def test_watch_list_request_reply(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    make_process(database_url, server, "nginx")
    make_process(database_url, server, "cron", enabled=False)
    make_process(database_url, server, "api")
    ok = await nc.request(subjects.agent_config(server.id), b'{"v": 1}', timeout=5,
                          headers={"Authorization": f"Bearer {server.agent_key}"})
    reply = WatchListReply.model_validate_json(ok.data)
    assert reply == WatchListReply(server_id=server.id, process_names=["api", "nginx"],
                                   interval_seconds=ingest.settings.interval_seconds)
    bad = await nc.request(subjects.agent_config(server.id), b"{}", timeout=5,
                           headers={"Authorization": "Bearer pwa_wrong"})
    refused = WatchListReply.model_validate_json(bad.data)
    assert refused.error == "unauthorized" and refused.process_names == []
    missing = await nc.request(subjects.agent_config(server.id), b"", timeout=5)
    assert WatchListReply.model_validate_json(missing.data).error == "unauthorized"


class _FlakyPublisher:
    """Fails its first `failures` publishes (a stream without a leader), then hands over to the real one."""

    def __init__(self, real, failures: int):
        self.real, self.failures, self.calls = real, failures, 0

    async def publish_async(self, *a, **kw):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("no stream leader yet")
        return await self.real.publish_async(*a, **kw)


async def test_a_failed_event_publish_is_retried_in_place_so_events_keep_their_order(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    pid = make_process(database_url, server, "nginx")
    times = [now_utc(-40 + 5 * i) for i in range(6)]
    real = ingest.batches.publisher
    flaky = _FlakyPublisher(real(), failures=3)
    ingest.batches.publisher = lambda: flaky
    retried = ingest.stats.batches_retried
    try:
        for i, at in enumerate(times):
            await publish_sample(nc, server, at, [reading("nginx", 1 + i % 2)])
        await eventually(lambda: query(database_url, "select samples_total from watched_processes where id=%s",
                                       (pid,)) == [(len(times),)])
        events = await eventually(lambda: _events(nc, server.id, len(times)))
    finally:
        ingest.batches.publisher = real
    assert flaky.calls > 3
    # Nothing was handed back for redelivery: no event came out of order, every sample was the latest.
    assert ingest.stats.batches_retried == retried
    parsed = [SampleRecorded.model_validate_json(m.data) for m in events]
    assert [e.sampled_at for e in parsed] == times
    assert all(s.is_latest for e in parsed for s in e.samples)
