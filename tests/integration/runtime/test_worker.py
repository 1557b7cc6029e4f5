"""The worker runtime (procwatch_messaging.worker) against real NATS and PostgreSQL: periodic jobs
across replicas, the ack / nak / dead-letter policy, the health endpoint, the drain."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import nats
import pytest
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsMessage, PullSub
from nats.js.api import AckPolicy as NatsAckPolicy
from nats.js.api import ConsumerConfig as NatsConsumerConfig
from nats.js.api import DeliverPolicy

from procwatch_contracts import subjects
from procwatch_messaging import acks
from procwatch_messaging.acks import FailurePolicy, Poison
from procwatch_messaging.worker import PullConsumer, Worker, WorkerPool
from procwatch_runtime.settings import WorkerSettings
from tests.support.streams import throwaway_stream

pytestmark = pytest.mark.integration


def settings(database_url: str, nats_url: str, **overrides) -> WorkerSettings:
    return WorkerSettings(database_url=database_url, nats_url=nats_url, **overrides)


async def until(check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s"
        await asyncio.sleep(0.02)


class Overlap:
    """A job body that records how many runs were in progress at once (across workers)."""

    def __init__(self, run_s: float = 0.15) -> None:
        self.run_s = run_s
        self.active = 0
        self.most_active = 0
        self.runs: list[str] = []

    def job(self, tag: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            try:
                await asyncio.sleep(self.run_s)
                self.runs.append(tag)
            finally:
                self.active -= 1

        return run


# --- periodic jobs ---------------------------------------------------------------------------


async def test_an_exclusive_job_runs_on_one_replica_at_a_time_across_workers_sharing_a_database(
        database_url, nats_url):
    name = f"test-exclusive-{uuid.uuid4().hex[:8]}"
    overlap = Overlap()
    a, b = Worker("job-a", settings(database_url, nats_url)), Worker("job-b", settings(database_url, nats_url))
    job_a = a.periodic(name, overlap.job("a"), every_s=0.05, jitter=0.5)
    job_b = b.periodic(name, overlap.job("b"), every_s=0.05, jitter=0.5)
    await a.start()
    await b.start()
    try:
        await until(lambda: len(overlap.runs) >= 8, what="8 runs")
    finally:
        await a.stop()
        await b.stop()
    assert overlap.most_active == 1  # never two runs at once
    assert job_a.skipped_locked + job_b.skipped_locked > 0  # the two did compete for the lock
    assert job_a.failures == job_b.failures == 0


async def test_a_job_that_is_not_exclusive_runs_on_every_replica(database_url, nats_url):
    # The control of the test above: without the lock, the same schedule does overlap.
    overlap = Overlap()
    a, b = Worker("job-a", settings(database_url, nats_url)), Worker("job-b", settings(database_url, nats_url))
    a.periodic("stats", overlap.job("a"), every_s=0.05, jitter=0.5, exclusive=False)
    b.periodic("stats", overlap.job("b"), every_s=0.05, jitter=0.5, exclusive=False)
    await a.start()
    await b.start()
    try:
        await until(lambda: {"a", "b"} <= set(overlap.runs) and overlap.most_active == 2, what="overlapping runs")
    finally:
        await a.stop()
        await b.stop()


async def test_a_raising_job_is_logged_and_runs_again_and_the_worker_keeps_going(database_url, nats_url, caplog):
    calls = []

    async def flaky() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise RuntimeError("boom")

    worker = Worker("job-flaky", settings(database_url, nats_url))
    job = worker.periodic(f"test-flaky-{uuid.uuid4().hex[:8]}", flaky, every_s=0.05)
    await worker.start()
    try:
        await until(lambda: job.runs >= 2, what="runs after the failures")
        assert job.failures == 2 and job.running and worker.started
    finally:
        await worker.stop()
    failed = [r for r in caplog.records if r.getMessage() == "job failed"]
    assert len(failed) == 2 and failed[0].job == job.name and failed[0].error == "RuntimeError"


async def test_drain_lets_the_run_in_progress_finish_and_schedules_no_more(database_url, nats_url):
    started, finished = asyncio.Event(), []

    async def slow() -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(True)

    worker = Worker("job-drain", settings(database_url, nats_url))
    job = worker.periodic(f"test-drain-{uuid.uuid4().hex[:8]}", slow, every_s=0.05)
    await worker.start()
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop()
    assert finished == [True]  # not cancelled mid-run
    assert job.runs == 1 and not job.running


# --- the ack / nak / dead-letter policy --------------------------------------------------------


async def dead_letters(nats_url: str, subject: str, n: int, timeout: float = 10.0) -> list:
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(subject, stream=subjects.DEADLETTER_STREAM,
                                                  config=NatsConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        got: list = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            try:
                got += await sub.fetch(n - len(got), timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                pass
        await sub.unsubscribe()
        return got
    finally:
        await nc.close()


async def test_a_subscriber_dead_letters_poison_with_a_reason_and_redelivers_a_transient_failure(
        database_url, nats_url):
    deadletter = f"deadletter.test.{uuid.uuid4().hex[:8]}"
    policy = FailurePolicy(transient=(OSError,), retry_base_s=0.05, retry_max_s=0.2, max_attempts=3)
    deliveries: dict[bytes, list[int]] = {}
    handled: list[bytes] = []

    async def work(msg) -> None:
        deliveries.setdefault(msg.data, []).append(acks.num_delivered(msg))
        if msg.data == b"poison":
            raise Poison("invalid: not a test event")
        if msg.data == b"flaky" and acks.num_delivered(msg) == 1:
            raise OSError("database unreachable")
        if msg.data == b"bug":
            raise KeyError("missing")
        handled.append(msg.data)

    async with throwaway_stream(nats_url, "RUNTIMEACK") as (_, js, subject, stream):
        worker = Worker("acktest", settings(database_url, nats_url))
        publish = acks.js_publisher(js)

        @worker.subscriber(subject, stream=JStream(stream, declare=False), durable=f"d{uuid.uuid4().hex[:8]}",
                           pull_sub=PullSub(batch_size=1, timeout=0.2), ack_policy=AckPolicy.MANUAL,
                           config=ConsumerConfig(ack_wait=30, max_deliver=-1))
        async def on_message(msg: NatsMessage) -> None:
            await acks.handle_one(msg.raw_message, work, policy, publish=publish, deadletter_subject=deadletter)

        await worker.start()
        try:
            for body in (b"poison", b"flaky", b"ok", b"bug"):
                await js.publish(subject, body)
            await until(lambda: sorted(handled) == [b"flaky", b"ok"] and len(deliveries.get(b"bug", [])) == 3,
                        what="handled and retried")
            parked = await dead_letters(nats_url, deadletter, 2)
            [consumer] = await js.consumers_info(stream)
            deadline = time.monotonic() + 5
            while consumer.num_ack_pending and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                [consumer] = await js.consumers_info(stream)
        finally:
            await worker.stop()

    assert deliveries[b"poison"] == [1]  # dead-lettered at once, never retried
    assert deliveries[b"flaky"] == [1, 2]  # naked, redelivered, handled
    assert deliveries[b"bug"] == [1, 2, 3]  # retried max_attempts times, then parked
    reasons = {m.data: m.headers[subjects.REASON_HEADER] for m in parked}
    assert reasons == {b"poison": "invalid: not a test event", b"bug": "processing_failed: KeyError"}
    assert all(m.headers[subjects.ORIGINAL_SUBJECT_HEADER] == subject for m in parked)
    assert consumer.num_ack_pending == 0 and consumer.num_pending == 0  # everything settled


def test_a_jetstream_subscriber_must_say_how_it_acks():
    worker = Worker("acktest", WorkerSettings())
    with pytest.raises(ValueError, match="ack_policy"):
        worker.subscriber("x.y", stream=JStream("X", declare=False), durable="d")
    with pytest.raises(ValueError, match="ack_policy"):
        worker.subscriber("x.y", ack_policy=AckPolicy.MANUAL)  # core NATS has no acks


# --- health and drain -------------------------------------------------------------------------


async def test_the_health_endpoint_reports_every_part_and_closes_on_stop(database_url, nats_url):
    async with throwaway_stream(nats_url, "RUNTIMEHEALTH") as (_, js, subject, stream):
        worker = Worker("healthtest", settings(database_url, nats_url, health_port=0), pool=WorkerPool(max_size=1))
        loop = worker.pull_loop(
            PullConsumer(subject, stream, f"d{uuid.uuid4().hex[:8]}", NatsConsumerConfig(
                ack_policy=NatsAckPolicy.EXPLICIT, ack_wait=30)),
            _ack_all, batch_size=10, batch_timeout_s=0.01, idle_poll_s=0.2, check="consumer")
        quit_task = asyncio.Event()
        worker.background("relay", quit_task.wait, check="relay")
        await worker.start()
        url = f"http://127.0.0.1:{worker.health.port}"
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.get(f"{url}/readyz")
                assert r.status_code == 200, r.text
                assert r.json() == {"status": "ready",
                                    "checks": {"postgres": "ok", "nats": "ok", "consumer": "ok", "relay": "ok"}}
                await loop.stop()
                quit_task.set()  # the background task ends
                await until(lambda: not worker.background_tasks[0].running, what="task ended")
                r = await http.get(f"{url}/readyz")
                assert r.status_code == 503
                assert r.json()["checks"] == {"postgres": "ok", "nats": "ok", "consumer": "error: RuntimeError",
                                              "relay": "error: RuntimeError"}
                assert (await http.get(f"{url}/healthz")).json() == {"status": "ok"}
        finally:
            await worker.stop()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(timeout=2) as http:
                await http.get(f"{url}/healthz")


async def _ack_all(batch) -> None:
    for msg in batch:
        await msg.ack()


async def test_run_drains_on_the_stop_signal_finishing_the_batch_in_flight(database_url, nats_url):
    async with throwaway_stream(nats_url, "RUNTIMEDRAIN") as (_, js, subject, stream):
        in_flight, done = asyncio.Event(), []

        async def slow_batch(batch) -> None:
            in_flight.set()
            await asyncio.sleep(0.3)
            for msg in batch:
                await msg.ack()
            done.extend(m.data for m in batch)

        worker = Worker("draintest", settings(database_url, nats_url), pool=WorkerPool(max_size=1))
        durable = f"d{uuid.uuid4().hex[:8]}"
        worker.pull_loop(PullConsumer(subject, stream, durable, NatsConsumerConfig(
            ack_policy=NatsAckPolicy.EXPLICIT, ack_wait=300)), slow_batch, batch_size=10, batch_timeout_s=0.01,
            idle_poll_s=0.2)
        drained = []
        worker.on_drain(lambda: drained.append(True))
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        await until(lambda: worker.started, what="worker started")
        await js.publish(subject, b"m1")
        await asyncio.wait_for(in_flight.wait(), 5)
        stop.set()  # what SIGTERM does
        await asyncio.wait_for(running, 15)
        assert drained == [True] and done == [b"m1"]  # the batch in flight finished and was acked
        info = await js.consumer_info(stream, durable)
        assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == 1
        assert worker.pool.closed and not worker.started


async def test_run_waits_out_a_broker_that_is_not_up_yet_and_still_stops(database_url):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = Worker("startretry", settings(database_url, f"nats://127.0.0.1:{port}"))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.5)  # the NATS client keeps retrying its first connection meanwhile
    assert not running.done() and not worker.started
    stop.set()
    await asyncio.wait_for(running, 10)  # no exception, no hang
    assert not worker.started
