"""OutboxRelay against real PostgreSQL and NATS JetStream."""

from __future__ import annotations

import asyncio
import random
import time

import nats
import psycopg
import pytest

from procwatch_db.urls import libpq_url
from procwatch_messaging.outbox import INSERT_OUTBOX_ROW_SQL, OutboxRelay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def outbox_ids_unique_on_the_shared_broker(database_url):
    """Rows without a msg_id publish as `outbox-<id>`. Other tests' databases publish their own
    small ids to the same PROCESS_EVENTS stream, whose duplicate window would drop ours as
    copies: start this database's ids far away from theirs."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(f"alter sequence outbox_events_id_seq restart with {random.randint(10**12, 10**15)}")


def insert_rows(database_url: str, subject: str, payloads: list[str], msg_ids=None) -> list[int]:
    msg_ids = msg_ids or [None] * len(payloads)
    with psycopg.connect(libpq_url(database_url)) as conn:
        return [
            conn.execute(INSERT_OUTBOX_ROW_SQL, (subject, msg_id, payload)).fetchone()[0]
            for payload, msg_id in zip(payloads, msg_ids, strict=True)
        ]


def unpublished(database_url: str, ids: list[int]) -> list[int]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(
            "select id from outbox_events where id = any(%s) and published_at is null order by id", (ids,)
        ).fetchall()
    return [r[0] for r in rows]


async def read_stream(js, subject: str, expected: int, deadline_s: float = 5.0) -> list:
    sub = await js.subscribe(subject, ordered_consumer=True)
    got = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            try:
                got.append(await sub.next_msg(timeout=0.2))
            except nats.errors.TimeoutError:
                pass
        # Anything beyond `expected` would be a duplicate: give it a moment to show up.
        try:
            got.append(await sub.next_msg(timeout=0.2))
        except nats.errors.TimeoutError:
            pass
    finally:
        await sub.unsubscribe()
    return got


def fresh_subject() -> str:
    return f"processes.changed.{random.randint(10**12, 10**15)}"


async def test_publishes_in_id_order_with_msg_id_headers_and_marks_rows(database_url, js):
    subject = fresh_subject()
    ids = insert_rows(database_url, subject, ['{"n":1}', '{"n":2}', '{"n":3}'], [None, "custom-id-" + subject, None])
    relay = OutboxRelay(database_url, js)
    try:
        assert await relay.publish_pending() >= 3
    finally:
        await relay.close()
    assert unpublished(database_url, ids) == []
    msgs = await read_stream(js, subject, 3)
    assert [m.data for m in msgs] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [f"outbox-{ids[0]}", "custom-id-" + subject, f"outbox-{ids[2]}"]


async def test_republishing_a_row_is_dropped_by_the_duplicate_window(database_url, js):
    subject = fresh_subject()
    ids = insert_rows(database_url, subject, ['{"once":true}'])
    relay = OutboxRelay(database_url, js)
    try:
        await relay.publish_pending()
        # A crash after publish but before marking: the row is sent again.
        with psycopg.connect(libpq_url(database_url)) as conn:
            conn.execute("update outbox_events set published_at = null where id = %s", (ids[0],))
        await relay.publish_pending()
    finally:
        await relay.close()
    msgs = await read_stream(js, subject, 1)
    assert len(msgs) == 1


async def test_rows_written_while_nats_is_unreachable_are_published_later(database_url, nats_url, js):
    subject = fresh_subject()
    ids = insert_rows(database_url, subject, ['{"late":1}', '{"late":2}'])
    dead_nc = await nats.connect(nats_url)
    dead_js = dead_nc.jetstream()
    await dead_nc.close()  # every publish on it now fails
    broken = OutboxRelay(database_url, dead_js)
    try:
        with pytest.raises(Exception):
            await broken.publish_pending()
    finally:
        await broken.close()
    assert unpublished(database_url, ids) == ids

    relay = OutboxRelay(database_url, js, poll_interval=0.1)
    task = asyncio.create_task(relay.run())
    try:
        deadline = time.monotonic() + 5
        while unpublished(database_url, ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert unpublished(database_url, ids) == []
    msgs = await read_stream(js, subject, 2)
    assert [m.data for m in msgs] == [b'{"late":1}', b'{"late":2}']


async def test_run_survives_a_failing_pass_and_wake_triggers_a_prompt_publish(database_url, nats_url, js):
    dead_nc = await nats.connect(nats_url)
    dead_js = dead_nc.jetstream()
    await dead_nc.close()
    subject = fresh_subject()
    insert_rows(database_url, subject, ['{"x":1}'])
    relay = OutboxRelay(database_url, dead_js, poll_interval=0.05)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.3)  # several failing passes happen here
    assert not task.done(), "the relay loop must never die on a publish error"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    good = OutboxRelay(database_url, js, poll_interval=60)  # only wake() can make it publish in time
    task = asyncio.create_task(good.run())
    try:
        ids = insert_rows(database_url, subject, ['{"x":2}'])
        good.wake()
        deadline = time.monotonic() + 5
        while unpublished(database_url, ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert unpublished(database_url, ids) == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_concurrent_relays_publish_each_row_once(database_url, js):
    subject = fresh_subject()
    ids = insert_rows(database_url, subject, [f'{{"i":{i}}}' for i in range(40)])
    relays = [OutboxRelay(database_url, js, batch_size=7) for _ in range(3)]
    try:
        counts = await asyncio.gather(*(r.publish_pending() for r in relays))
    finally:
        for r in relays:
            await r.close()
    assert sum(counts) >= 40
    assert unpublished(database_url, ids) == []
    msgs = await read_stream(js, subject, 40)
    assert sorted(m.data for m in msgs) == sorted(f'{{"i":{i}}}'.encode() for i in range(40))


async def test_cancelling_right_after_a_wake_stops_the_loop(database_url, js):
    # Regression: with asyncio.wait_for (Python 3.11) a cancel racing a wake() was lost
    # and run() never returned, hanging every shutdown.
    for _ in range(20):
        relay = OutboxRelay(database_url, js, poll_interval=0.2)
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0)
        relay.wake()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3)
        assert task in done, "run() must end when cancelled"


def rows_of(database_url: str, ids: list[int]) -> list[tuple]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute("select id, subject, msg_id, payload from outbox_events where id = any(%s) order by id",
                            (ids,)).fetchall()


async def test_publish_committed_sends_at_once_once_the_relay_has_drained_the_outbox(database_url, js):
    subject = fresh_subject()
    relay = OutboxRelay(database_url, js, poll_interval=60)
    try:
        early = insert_rows(database_url, subject, ['{"n":0}'])
        async with relay.ordered():
            # Not drained yet (a row may be left from before): the pass decides, in id order.
            assert await relay.publish_committed(rows_of(database_url, early)) == 0
        assert unpublished(database_url, early) == early
        await relay.publish_pending()  # drains, publishing {"n":0}
        ids = insert_rows(database_url, subject, ['{"n":1}', '{"n":2}'])
        async with relay.ordered():
            assert await relay.publish_committed(rows_of(database_url, ids)) == 2
        assert unpublished(database_url, ids) == []
    finally:
        await relay.close()
    msgs = await read_stream(js, subject, 3)
    assert [m.data for m in msgs] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


async def test_publish_committed_on_a_dead_broker_leaves_the_rows_to_the_relay_and_stops_the_fast_path(
        database_url, nats_url, js):
    subject = fresh_subject()
    dead_nc = await nats.connect(nats_url)
    broker = {"js": dead_nc.jetstream()}  # the relay asks for the JetStream context on every publish
    relay = OutboxRelay(database_url, lambda: broker["js"], poll_interval=60, publish_timeout=5)
    try:
        await relay.publish_pending()  # drained (whatever other tests left is published)
        await dead_nc.close()
        ids = insert_rows(database_url, subject, ['{"d":1}'])
        async with relay.ordered():
            assert await relay.publish_committed(rows_of(database_url, ids)) == 0  # never raises
        assert unpublished(database_url, ids) == ids
        # Later rows must not overtake it: the fast path is off until a pass drains again.
        later = insert_rows(database_url, subject, ['{"d":2}'])
        broker["js"] = js  # the broker is back
        async with relay.ordered():
            assert await relay.publish_committed(rows_of(database_url, later)) == 0
        await relay.publish_pending()
    finally:
        await relay.close()
    assert unpublished(database_url, ids + later) == []
    msgs = await read_stream(js, subject, 2)
    assert [m.data for m in msgs] == [b'{"d":1}', b'{"d":2}']


async def test_publish_committed_outside_ordered_is_refused(database_url, js):
    relay = OutboxRelay(database_url, js)
    with pytest.raises(RuntimeError):
        await relay.publish_committed([(1, "x", None, "{}")])
