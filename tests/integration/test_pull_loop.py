"""BatchPullLoop against a real NATS JetStream: natural batching, top-up, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import time
import uuid

import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from procwatch_messaging.pull import BatchPullLoop, fetch_waiting
from tests.support.streams import throwaway_stream

pytestmark = pytest.mark.integration


@pytest.fixture
async def stream(nats_url):
    """A throwaway stream and subject of its own; yields (js, subject, name)."""
    async with throwaway_stream(nats_url, "PULLTEST") as (_, js, subject, name):
        yield js, subject, name


class Recorder:
    """A handler that records each batch (and when it got it), acks it, and can be held."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[bytes]]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.holding = asyncio.Event()

    async def __call__(self, batch) -> None:
        self.batches.append((time.monotonic(), [m.data for m in batch]))
        self.holding.set()
        await self.release.wait()
        for m in batch:
            await m.ack()

    async def wait_for(self, n_messages: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(len(b) for _, b in self.batches) < n_messages:
            assert time.monotonic() < deadline, f"only {self.batches} arrived"
            await asyncio.sleep(0.01)


async def _pull_subscription(js, subject, stream_name, durable: str | None = None):
    """A pull subscription (explicit acks) on `durable`, by default a new one of its own."""
    return await js.pull_subscribe(subject, durable=durable or f"d{uuid.uuid4().hex[:8]}", stream=stream_name,
                                   config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30))


def make_loop(js, subject, stream_name, handle, **kw) -> BatchPullLoop:
    durable = f"d{uuid.uuid4().hex[:8]}"  # the same one if the loop ever subscribes again
    return BatchPullLoop(lambda: _pull_subscription(js, subject, stream_name, durable), handle, idle_poll_s=0.3,
                         **kw)


@asynccontextmanager
async def running(js, subject, stream_name, handle, **kw) -> AsyncIterator[BatchPullLoop]:
    loop = make_loop(js, subject, stream_name, handle, **kw)
    await loop.start()
    try:
        yield loop
    finally:
        await loop.stop()


async def test_an_idle_handler_gets_a_lone_message_without_waiting_for_the_batch_timeout(stream):
    js, subject, name = stream
    rec = Recorder()
    async with running(js, subject, name, rec, batch_size=100, batch_timeout_s=3.0):
        await asyncio.sleep(0.1)  # the loop is waiting in a fetch
        sent = time.monotonic()
        await js.publish(subject, b"one")
        await rec.wait_for(1, timeout=2.0)  # the old loop topped up for the whole 3 s
        got_at, data = rec.batches[0]
        assert data == [b"one"]
        assert got_at - sent < 1.0


async def test_messages_piling_up_while_the_handler_is_busy_form_the_next_batch_in_order(stream):
    js, subject, name = stream
    rec = Recorder()
    async with running(js, subject, name, rec, batch_size=100, batch_timeout_s=0.02, max_in_flight=1):
        rec.release.clear()
        await js.publish(subject, b"first")
        await asyncio.wait_for(rec.holding.wait(), 5)
        for i in range(20):
            await js.publish(subject, f"m{i}".encode())
        rec.release.set()
        await rec.wait_for(21)
        assert [b for _, b in rec.batches] == [[b"first"], [f"m{i}".encode() for i in range(20)]]


async def test_with_a_batch_in_flight_a_partial_batch_is_topped_up_until_that_batch_finishes(stream):
    js, subject, name = stream
    rec = Recorder()
    async with running(js, subject, name, rec, batch_size=100, batch_timeout_s=5.0, max_in_flight=2):
        rec.release.clear()
        await js.publish(subject, b"a")
        await asyncio.wait_for(rec.holding.wait(), 5)  # batch [a] in flight, held
        await js.publish(subject, b"b")  # fetched while [a] is in flight: held back...
        await asyncio.sleep(0.2)
        for name_ in (b"c", b"d", b"e"):
            await js.publish(subject, name_)
        await asyncio.sleep(0.2)
        assert [b for _, b in rec.batches] == [[b"a"]]  # ...not handed over yet
        released = time.monotonic()
        rec.release.set()  # [a] finishes: the held batch takes what arrived meanwhile
        await rec.wait_for(5)
        # The top-up is one short fetch: on a quiet machine the held batch takes all of
        # c, d, e; on a loaded one a late reply leaves some for the next batch, right after.
        batches = [b for _, b in rec.batches]
        assert batches[0] == [b"a"] and batches[1][0] == b"b"
        assert [m for b in batches for m in b] == [b"a", b"b", b"c", b"d", b"e"]  # all of them, in order
        assert rec.batches[1][0] - released < 1.0  # not after the 5 s batch timeout


async def test_stop_finishes_the_batch_in_flight_and_leaves_nothing_unacked(stream):
    js, subject, name = stream
    rec = Recorder()
    loop = make_loop(js, subject, name, rec, batch_size=10, batch_timeout_s=0.05, max_in_flight=2)
    await loop.start()
    for i in range(50):
        await js.publish(subject, f"s{i}".encode())
    await rec.wait_for(1)
    await loop.stop()
    assert not loop.subscribed  # unsubscribed; the durable stays
    handled = sum(len(b) for _, b in rec.batches)
    assert 0 < handled <= 50
    # Every batch handed over was handled and acked, whatever else had reached the
    # subscription was handed back (nak), so nothing waits for ack_wait.
    [durable] = await js.consumers_info(name)
    deadline = time.monotonic() + 5
    while durable.num_ack_pending and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        [durable] = await js.consumers_info(name)
    assert durable.num_ack_pending == 0
    assert durable.ack_floor.stream_seq == handled


# --- fetch_waiting: the batch fetch without a task per message ------------------------------


async def test_fetch_waiting_takes_what_waits_in_order_and_returns_at_once_when_the_stream_runs_dry(stream):
    js, subject, name = stream
    for i in range(30):
        await js.publish(subject, f"m{i}".encode())
    psub = await _pull_subscription(js, subject, name)

    first = await fetch_waiting(psub, 10, timeout=2.0)
    started = time.monotonic()
    rest = await fetch_waiting(psub, 100, timeout=2.0)  # 20 left: the server's 404 ends it, not the timeout
    took = time.monotonic() - started
    empty = await fetch_waiting(psub, 100, timeout=2.0)

    assert [m.data for m in first] == [f"m{i}".encode() for i in range(10)]
    assert [m.data for m in rest] == [f"m{i}".encode() for i in range(10, 30)]
    assert took < 1.0
    assert empty == []
    for m in first + rest:
        await m.ack()
    deadline = time.monotonic() + 5  # the server applies acks asynchronously
    while (pending := (await psub.consumer_info()).num_ack_pending) != 0:
        assert time.monotonic() < deadline, f"{pending} messages still unacked"
        await asyncio.sleep(0.02)


async def test_fetch_waiting_hands_out_messages_an_earlier_request_left_in_the_subscription_first(stream):
    js, subject, name = stream
    for i in range(5):
        await js.publish(subject, f"m{i}".encode())
    psub = await _pull_subscription(js, subject, name)
    # An earlier pull request whose messages arrived after its caller stopped waiting (a timeout).
    await psub._nc.publish(psub._nms, b'{"batch": 3, "no_wait": true}', psub._deliver)
    deadline = time.monotonic() + 5
    while psub._sub._pending_queue.qsize() < 3:
        assert time.monotonic() < deadline, "the earlier request's messages never arrived"
        await asyncio.sleep(0.01)

    got = await fetch_waiting(psub, 10, timeout=2.0)

    assert [m.data for m in got] == [f"m{i}".encode() for i in range(5)]  # leftovers first, then the rest
    assert psub._sub._pending_queue.empty() and psub._sub._pending_size == 0  # the 404 was taken too


async def test_the_loop_batches_a_backlog_with_fetch_waiting_and_waits_for_new_messages_when_idle(stream):
    js, subject, name = stream
    for i in range(250):
        await js.publish(subject, f"m{i}".encode())
    rec = Recorder()
    async with running(js, subject, name, rec, batch_size=100, batch_timeout_s=0.05):
        await rec.wait_for(250)
        sent = time.monotonic()
        await js.publish(subject, b"late")  # the loop is now in nats-py's waiting fetch
        await rec.wait_for(251, timeout=3.0)
    sizes = [len(b) for _, b in rec.batches]
    assert sizes[:3] == [100, 100, 50]
    assert [d for _, b in rec.batches for d in b] == [f"m{i}".encode() for i in range(250)] + [b"late"]
    assert rec.batches[-1][0] - sent < 1.0


# --- the nats-py internals fetch_waiting and BatchPullLoop.stop read ----------------------------


async def test_nats_py_internals_used_by_fetch_waiting__if_this_fails_re_check_pull_py_against_the_new_nats_py(
        stream):
    """procwatch_messaging.pull reads private attributes of nats-py's pull subscription; nats-py is
    pinned (libs/messaging/pyproject.toml) to the minor version this test was last green on.

    If this fails after a nats-py upgrade: read nats-py's `PullSubscription.fetch` /
    `_fetch_one` / `_fetch_n` and `Subscription.next_msg` in the new version, adapt
    `fetch_waiting` and `BatchPullLoop.stop` in libs/messaging/src/procwatch_messaging/pull.py
    (or go back to `psub.fetch`), run this file, then widen the pin."""
    import importlib.metadata

    import nats.js.api
    from nats.aio.client import Client
    from nats.aio.subscription import Subscription

    version = importlib.metadata.version("nats-py")
    assert version.startswith("2.16."), (
        f"nats-py {version} is outside the range pull.py was checked against (2.16.x): "
        "re-check fetch_waiting / BatchPullLoop.stop, then update the pin in libs/messaging/pyproject.toml")
    js, subject, name = stream
    psub = await _pull_subscription(js, subject, name)
    try:
        what = "re-check procwatch_messaging.pull against this nats-py"
        assert isinstance(psub._nc, Client), what
        assert isinstance(psub._sub, Subscription), what
        assert isinstance(psub._sub._pending_queue, asyncio.Queue), what
        assert isinstance(psub._sub._pending_size, int), what
        # The pull request's subject and the inbox the messages come back to.
        assert isinstance(psub._nms, str) and psub._nms.startswith("$JS.API.CONSUMER.MSG.NEXT."), what
        assert psub._nms.endswith(f".{name}.{(await psub.consumer_info()).name}"), what
        assert isinstance(psub._deliver, str) and psub._deliver == psub._sub.subject, what
        assert nats.js.api.Header.STATUS == "Status", what
        assert nats.js.api.StatusCode.CONTROL_MESSAGE == "100", what
        # What the queue holds: the messages themselves, their size counted in _pending_size.
        await js.publish(subject, b"probe")
        await psub._nc.publish(psub._nms, b'{"batch": 1, "no_wait": true}', psub._deliver)
        msg = await asyncio.wait_for(psub._sub._pending_queue.get(), 5)
        assert msg.data == b"probe" and psub._sub._pending_size >= len(b"probe"), what
        psub._sub._pending_size -= len(msg.data)
        await msg.ack()
    finally:
        await psub.unsubscribe()
