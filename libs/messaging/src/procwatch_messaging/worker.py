"""The runtime of every broker worker (ingest, the alerter, the notifier): one way to start,
consume, run jobs, report health and stop.

A service's app.py only declares what runs, then hands over:

    worker = Worker("alerter", settings, pool=WorkerPool(min_size=1, max_size=4))
    worker.pull_loop(PullConsumer(subject, stream, durable, config), handlers.on_batch, batch_size=200, ...)
    worker.subscriber(subject, stream=JStream(...), ack_policy=AckPolicy.MANUAL, ...)(handler)
    worker.background("outbox_relay", relay.run, flush=relay.publish_pending)
    worker.periodic("offline-servers", detect, every_s=15)           # one replica at a time
    worker.part("retention", retention.start, retention.stop)           # a part with its own schedule
    worker.on_drain(lambda: handlers.stopping.set())
    await worker.run()                                                 # until SIGTERM / SIGINT

Start (`start()`): connect to NATS (reconnecting forever), declare the streams
(procwatch_messaging.streams), open the PostgreSQL pool, start the FastStream subscribers, the
pull loops, the background tasks, the periodic jobs and the parts, then the health endpoint.
`run()` retries a start that fails (dependencies not up yet) with backoff.

Drain (`stop()`, on SIGTERM / SIGINT in `run()`): the on_drain hooks (handlers stop taking
work), then stop pulling: the pull loops finish their batches in flight (commit, publish,
ack) and nak what else reached them; the FastStream subscribers finish the message in hand;
the periodic jobs finish their run and the parts stop; the background tasks get one last `flush` and are
cancelled; then the broker connection is drained, the pool and the health endpoint closed.

Health (procwatch_runtime.health, one implementation): `postgres` and `nats` always, plus one
check per pull loop or background task given a `check` name; all read public state.
Metrics (`GET /metrics` on the health port, procwatch_runtime.metrics): each scrape first reads
the pull loops' JetStream consumer info (pending, ack pending, redelivered), one request per
consumer per scrape, never per message.
The pull loops are the ones of procwatch_messaging.pull: the runtime adds nothing per message.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from faststream import AckPolicy
from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from psycopg_pool import AsyncConnectionPool

from procwatch_db.urls import libpq_url
from procwatch_messaging.pull import BatchPullLoop, Handle
from procwatch_messaging.streams import StreamLimits, ensure_streams, limits_for
from procwatch_messaging.jobs import Job, PeriodicJob
from procwatch_runtime import metrics
from procwatch_runtime.health import Check, HealthServer, nats_check, postgres_check
from procwatch_runtime.settings import WorkerSettings

log = logging.getLogger("procwatch.messaging.worker")

START_MAX_BACKOFF_S = 10.0

Hook = Callable[[], Awaitable[object] | object]


@dataclass(frozen=True)
class WorkerPool:
    """The worker's PostgreSQL pool (psycopg_pool): sizes and per-connection setup."""

    min_size: int = 1
    max_size: int = 4
    timeout_s: float = 5.0
    # Check each connection as it leaves the pool (one round trip): a dead one is replaced
    # rather than failing the batch. Off where a round trip per batch shows in the latency.
    check_on_checkout: bool = False
    configure: Callable[[Any], Awaitable[None]] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PullConsumer:
    """A durable JetStream pull consumer: what `js.pull_subscribe` is given."""

    subject: str
    stream: str
    durable: str
    config: ConsumerConfig


class Background:
    """A long-lived task of the worker (e.g. the outbox relay): runs until drained."""

    def __init__(self, name: str, run: Callable[[], Awaitable[object]],
                 flush: Callable[[], Awaitable[object]] | None, flush_timeout_s: float) -> None:
        self.name = name
        self._run, self._flush, self._flush_timeout_s = run, flush, flush_timeout_s
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is None:
            return
        if self._flush is not None:
            try:  # one last pass, so what is pending goes out now rather than at the next start
                await asyncio.wait_for(self._flush(), self._flush_timeout_s)
            except Exception as exc:
                log.warning("final flush failed", extra={"task": self.name, "error": type(exc).__name__})
        self._task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await self._task
        self._task = None


class Worker:
    def __init__(self, name: str, settings: WorkerSettings, *, pool: WorkerPool | None = None,
                 stream_limits: StreamLimits = StreamLimits(), graceful_timeout_s: float = 15.0) -> None:
        self.name = name
        self.settings = settings
        self.stream_limits = limits_for(settings, stream_limits)
        self.broker = NatsBroker(
            settings.nats_servers,
            max_reconnect_attempts=-1,  # wait out broker outages
            reconnect_time_wait=0.5,
            graceful_timeout=graceful_timeout_s,
            # Per-message access lines at DEBUG: at fleet rates INFO would be one line per message.
            logger=logging.getLogger(f"procwatch.{name}.broker"),
            log_level=logging.DEBUG,
        )
        self.pool: AsyncConnectionPool | None = None
        if pool is not None:
            self.pool = AsyncConnectionPool(
                libpq_url(settings.database_url), min_size=pool.min_size,
                max_size=max(pool.min_size, pool.max_size), timeout=pool.timeout_s,
                check=AsyncConnectionPool.check_connection if pool.check_on_checkout else None,
                configure=pool.configure,
                kwargs={"connect_timeout": 5, "application_name": f"procwatch-{name}"[:63], **pool.kwargs},
                open=False, name=name,
            )
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self.pull_loops: list[BatchPullLoop] = []
        # (label, stream, durable) of each JetStream consumer: the lag gauges (refresh_consumer_metrics).
        self._consumers: list[tuple[str, str, str]] = []
        self.jobs: list[PeriodicJob] = []
        self.background_tasks: list[Background] = []
        self._parts: list[tuple[str, Hook, Hook]] = []
        self._on_drain: list[Hook] = []
        self._on_stopped: list[Hook] = []
        self.draining = False
        self.started = False
        self.health: HealthServer | None = None
        if settings.health_port is not None:
            self.health = HealthServer({}, host=settings.health_host, port=settings.health_port,
                                       timeout_s=settings.health_timeout_s)
            self.health.on_scrape.append(self.refresh_consumer_metrics)
        if self.pool is not None:
            self.add_check("postgres", postgres_check(self.pool, settings.health_timeout_s))
        self.add_check("nats", nats_check(lambda: self._nc, settings.health_timeout_s))

    # --- connections -----------------------------------------------------------------

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError(f"{self.name} is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError(f"{self.name} is not connected")
        return self._js

    # --- declarations (before start) ----------------------------------------------------

    def add_check(self, name: str, check: Check) -> None:
        """A readiness check: an async callable that raises while its dependency is unusable."""
        if self.health is not None:
            self.health.checks[name] = check

    def pull_loop(self, consumer: PullConsumer, handle: Handle, *, batch_size: int, batch_timeout_s: float,
                  idle_poll_s: float = 0.5, max_in_flight: int = 1, drain_timeout_s: float = 30.0,
                  name: str | None = None, check: str | None = None) -> BatchPullLoop:
        """A batch consumer (procwatch_messaging.pull.BatchPullLoop); `handle` owns the acks
        (procwatch_messaging.acks). `check` names its readiness check (the loop runs)."""

        async def subscribe():
            return await self.js.pull_subscribe(consumer.subject, durable=consumer.durable,
                                                stream=consumer.stream, config=consumer.config)

        loop = BatchPullLoop(subscribe, handle, batch_size=batch_size, batch_timeout_s=batch_timeout_s,
                             idle_poll_s=idle_poll_s, max_in_flight=max_in_flight,
                             drain_timeout_s=drain_timeout_s, name=name or f"{self.name}-pull-loop")
        self.pull_loops.append(loop)
        self._consumers.append((loop.name, consumer.stream, consumer.durable))
        if check is not None:
            self.add_check(check, _running_check(loop, f"{loop.name} not running"))
        return loop

    def subscriber(self, subject: str, *, stream: Any = None, ack_policy: AckPolicy | None = None, **kwargs):
        """A FastStream subscriber on the worker's broker. A JetStream one must say how it acks:
        FastStream's default (REJECT_ON_ERROR) terminates a message whose handler raises, which
        would lose it; use AckPolicy.MANUAL and procwatch_messaging.acks. Core NATS ones
        (request-reply) have no acks and take no ack_policy."""
        if stream is not None:
            if ack_policy is None:
                raise ValueError(f"JetStream subscriber on {subject!r}: set ack_policy explicitly")
            if kwargs.get("durable"):  # measured like the pull loops, labelled with its durable name
                self._consumers.append((kwargs["durable"], stream.name, kwargs["durable"]))
            return self.broker.subscriber(subject, stream=stream, ack_policy=ack_policy, **kwargs)
        if ack_policy is not None:
            raise ValueError(f"core NATS subscriber on {subject!r} takes no ack_policy")
        return self.broker.subscriber(subject, **kwargs)

    def background(self, name: str, run: Callable[[], Awaitable[object]], *,
                   flush: Callable[[], Awaitable[object]] | None = None, flush_timeout_s: float = 5.0,
                   check: str | None = None) -> Background:
        """A long-lived task (runs until drained; `flush` is awaited once before it is cancelled)."""
        task = Background(name, run, flush, flush_timeout_s)
        self.background_tasks.append(task)
        if check is not None:
            self.add_check(check, _running_check(task, f"{name} not running"))
        return task

    def periodic(self, name: str, fn: Job, *, every_s: float, jitter: float = 0.1, exclusive: bool = True,
                 drain_timeout_s: float = 30.0) -> PeriodicJob:
        """Run `fn` every `every_s` seconds (procwatch_messaging.jobs); `exclusive`: one replica at a
        time across the deployment (PostgreSQL advisory lock)."""
        job = PeriodicJob(name, fn, every_s=every_s, jitter=jitter, drain_timeout_s=drain_timeout_s,
                          database_url=self.settings.database_url if exclusive else None)
        self.jobs.append(job)
        return job

    def part(self, name: str, start: Hook, stop: Hook) -> None:
        """A part with its own task and schedule: `start` after the consumers started, `stop` on
        drain once the consumers stopped (with the periodic jobs)."""
        self._parts.append((name, start, stop))

    def on_drain(self, hook: Hook) -> None:
        """Called first on stop (e.g. handlers stop taking new work)."""
        self._on_drain.append(hook)

    def on_stopped(self, hook: Hook) -> None:
        """Called last on stop, after the connections closed (e.g. a final stats line)."""
        self._on_stopped.append(hook)

    async def refresh_consumer_metrics(self) -> None:
        """Set the consumer gauges from JetStream's consumer info (on scrape)."""
        js = self._js
        if js is None:
            return
        infos = await asyncio.gather(*(js.consumer_info(stream, durable) for _, stream, durable in self._consumers),
                                     return_exceptions=True)
        for (name, _, _), info in zip(self._consumers, infos, strict=True):
            if isinstance(info, BaseException):
                log.debug("consumer info failed", extra={"consumer": name, "error": type(info).__name__})
                continue
            metrics.CONSUMER_PENDING.labels(name).set(info.num_pending or 0)
            metrics.CONSUMER_ACK_PENDING.labels(name).set(info.num_ack_pending or 0)
            metrics.CONSUMER_REDELIVERED.labels(name).set(info.num_redelivered or 0)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self.draining = False
        self._nc = await self.broker.connect()
        self._js = self._nc.jetstream()
        await ensure_streams(self._js, self.stream_limits)
        if self.pool is not None:
            await self.pool.open(wait=False)
        await self.broker.start()
        for loop in self.pull_loops:
            await loop.start()
        for task in self.background_tasks:
            task.start()
        for job in self.jobs:
            job.start()
        for _, start, _ in self._parts:
            await _call(start)
        if self.health is not None:
            await self.health.start()
        self.started = True
        # "<name> started" on the service's own logger (operators and tests look for it).
        logging.getLogger(f"procwatch.{self.name}").info(f"{self.name} started", extra={
            "pull_loops": len(self.pull_loops), "subscribers": len(self.broker.subscribers),
            "jobs": len(self.jobs), "background": len(self.background_tasks),
            "event_loop": type(asyncio.get_running_loop()).__module__})

    async def stop(self) -> None:
        """Drain: stop taking work, finish what is in flight (ack), close. Safe to call twice."""
        if self.draining:
            return
        self.draining = True
        for hook in self._on_drain:
            await _call(hook)
        await asyncio.gather(*(_quietly(loop.stop(), loop.name) for loop in self.pull_loops))
        await asyncio.gather(*(_quietly(sub.stop(), "subscriber") for sub in self.broker.subscribers))
        await asyncio.gather(*(_quietly(job.stop(), job.name) for job in self.jobs),
                             *(_quietly(_call(stop), name) for name, _, stop in self._parts))
        for task in self.background_tasks:
            await _quietly(task.stop(), task.name)
        await _quietly(self.broker.stop(), "broker")
        self._nc = self._js = None
        if self.pool is not None:
            await self.pool.close()
        if self.health is not None:
            await self.health.stop()
        self.started = False
        for hook in self._on_stopped:
            await _call(hook)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start (retrying while the dependencies are not up), serve until SIGTERM / SIGINT (or
        `stop` is set), then drain. A second signal during the drain changes nothing."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        delay = 0.5
        while not stop.is_set():
            try:
                if await self._start_unless(stop):
                    break
            except Exception as exc:
                log.warning("worker start failed; retrying",
                            extra={"worker": self.name, "error": type(exc).__name__, "retry_in_s": delay})
                await self._undo_start()
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(START_MAX_BACKOFF_S, delay * 2)
        if not self.started:  # stopped before it ever started
            await self._undo_start()
            if self.pool is not None:
                await self.pool.close()
            return
        await stop.wait()
        await self.stop()

    async def _start_unless(self, stop: asyncio.Event) -> bool:
        """start(), abandoned if `stop` is set first (the NATS client retries its first connection
        forever while the server is down). Returns whether it started; raises what start() raised."""
        starting = asyncio.create_task(self.start())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not starting.done():
            starting.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await starting
            return False
        starting.result()
        return True

    async def _undo_start(self) -> None:
        """What a failed start began, stopped (the pool stays: psycopg pools do not reopen)."""
        for loop in self.pull_loops:
            await _quietly(loop.stop(), loop.name)
        for job in self.jobs:
            await _quietly(job.stop(), job.name)
        for name, _, stop in self._parts:
            await _quietly(_call(stop), name)
        for task in self.background_tasks:
            await _quietly(task.stop(), task.name)
        if self.health is not None:
            await self.health.stop()
        await _quietly(self.broker.stop(), "broker")
        self._nc = self._js = None


def _running_check(part, message: str) -> Check:
    async def check() -> None:
        if not part.running:
            raise RuntimeError(message)

    return check


async def _call(hook: Hook) -> None:
    result = hook()
    if asyncio.iscoroutine(result):
        await result


async def _quietly(awaitable: Awaitable, what: str) -> None:
    """Shutdown goes on whatever one part does (the broker may be gone already)."""
    try:
        await awaitable
    except Exception as exc:
        log.warning("stopping a part failed", extra={"part": what, "error": type(exc).__name__})


class WorkerService:
    """Base of a worker service's app object: its `__init__` builds `self.worker` and declares the
    parts; this gives the same start / stop (tests, bench), run (main) and health to every service."""

    worker: Worker

    @property
    def health(self) -> HealthServer | None:
        """The health endpoint (None unless the service's health port is set)."""
        return self.worker.health

    async def start(self) -> None:
        """Start in the running loop; `stop()` drains."""
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()

    async def run(self) -> None:
        """Until SIGTERM / SIGINT (retrying the start while dependencies are down), then drain."""
        await self.worker.run()
