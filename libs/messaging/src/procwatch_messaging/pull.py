"""A durable JetStream pull consumer's batch loop (nats-py), for services that handle batches.

Why not FastStream's `PullSub(batch=True)`: in faststream 0.7.8 with nats-py 2.16 its
fetch loop dies on the builtin `TimeoutError` nats-py raises from `fetch()` in some
paths, losing the fetched messages until `ack_wait`, and it cancels a batch in flight
on shutdown. This loop:

- fetches up to `batch_size` messages: whatever is waiting now, or the first one to
  arrive (waiting at most `idle_poll_s`). "Natural batching": a batch is handed over
  as soon as the handler can start on it, so an idle handler gets one message with no
  added wait, and a busy one gets everything that piled up meanwhile (up to
  `batch_size`). Only while another batch of this loop is still in flight (so
  `max_in_flight` > 1) is a batch that is not full held back, for at most
  `batch_timeout_s` or until a batch in flight finishes, and then topped up with what
  arrived meanwhile: it could not have been committed before that batch anyway;
- hands the batch to `handle(batch)` in its own task (a cancelled loop never
  interrupts a commit + ack). `handle` owns acking, naking and dead-lettering;
- keeps at most `max_in_flight` batches in flight. With 1 (the default), batches are
  handled strictly one after the other, in stream order: the next fetch waits for the
  previous batch to be finished;
- `stop()` stops fetching, waits for the batch(es) in flight, naks (delay 0) whatever
  still reached the subscription, and unsubscribes. The durable stays.

No I/O of its own besides the subscription; no framework imports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

import nats.errors
import nats.js.api
import orjson
from nats.aio.msg import Msg

from procwatch_runtime import metrics

log = logging.getLogger("procwatch.messaging.pull")

Handle = Callable[[list[Msg]], Awaitable[None]]


class BatchPullLoop:
    # How long stop() keeps handing back late deliveries of the last pull request.
    SHUTDOWN_GRACE_S = 0.3
    # Fetch timeout when only collecting what is already waiting (the server answers at once
    # when there is something; otherwise this is the time lost).
    COLLECT_TIMEOUT_S = 0.002

    def __init__(
        self,
        subscribe: Callable[[], Awaitable],
        handle: Handle,
        *,
        batch_size: int,
        batch_timeout_s: float,
        idle_poll_s: float = 0.5,
        max_in_flight: int = 1,
        drain_timeout_s: float = 30.0,
        name: str = "pull-loop",
    ) -> None:
        if batch_size < 1 or max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be >= 1")
        self._subscribe = subscribe
        self._handle = handle
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.idle_poll_s = idle_poll_s
        self.drain_timeout_s = drain_timeout_s
        self.name = name
        self._running = False
        self._task: asyncio.Task | None = None
        self._sub = None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._batches: set[asyncio.Task] = set()
        # Per batch, labelled with the loop's name (procwatch_runtime.metrics).
        self._messages_metric = metrics.CONSUMER_MESSAGES.labels(name)
        self._batch_size_metric = metrics.CONSUMER_BATCH_SIZE.labels(name)
        self._batch_duration_metric = metrics.CONSUMER_BATCH_DURATION.labels(name)

    @property
    def subscribed(self) -> bool:
        """Holding a subscription to the durable (between start() and the end of stop())."""
        return self._sub is not None

    @property
    def running(self) -> bool:
        return self._running and self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._sub = await self._subscribe()
        self._running = True
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _fetch(self, n: int, timeout: float) -> list[Msg]:
        try:
            return await fetch_waiting(self._sub, n, timeout) or await self._sub.fetch(n, timeout=timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py raises either
            return []

    async def _run(self) -> None:
        while self._running:
            await self._slots.acquire()
            handed_over = False
            try:
                if not self._running:
                    continue
                batch = await self._fetch(self.batch_size, self.idle_poll_s)
                if not batch:
                    continue
                if len(batch) < self.batch_size and self._batches and self.batch_timeout_s > 0:
                    await self._top_up(batch)
                task = asyncio.create_task(self._one(batch), name=f"{self.name}-batch")
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
                handed_over = True
            except asyncio.CancelledError:
                raise
            except Exception:
                # Broker reconnecting, consumer deleted...: unacked messages are redelivered.
                log.warning("pull failed; retrying", extra={"loop": self.name}, exc_info=True)
                await asyncio.sleep(0.5)
            finally:
                if not handed_over:
                    self._slots.release()

    async def _top_up(self, batch: list[Msg]) -> None:
        """Another batch is in flight: wait until one finishes (at most batch_timeout_s), then
        add what arrived meanwhile. Waiting on the batches rather than on a fetch leaves no
        pull request outstanding and costs one short fetch per batch."""
        await asyncio.wait(set(self._batches), timeout=self.batch_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if self._running:
            batch += await self._fetch(self.batch_size - len(batch), self.COLLECT_TIMEOUT_S)

    async def _one(self, batch: list[Msg]) -> None:
        started = time.perf_counter()
        try:
            await self._handle(batch)
        except Exception:
            # The handler owns acks; whatever it left unacked is redelivered after ack_wait.
            log.exception("batch handler failed", extra={"loop": self.name, "batch_size": len(batch)})
        finally:
            self._slots.release()
            self._batch_duration_metric.observe(time.perf_counter() - started)
            self._batch_size_metric.observe(len(batch))
            self._messages_metric.inc(len(batch))

    async def stop(self) -> None:
        """Stop fetching; finish the fetch in progress (<= idle_poll_s + batch_timeout_s, so no
        pull request is left on the server to swallow messages) and the batches in flight."""
        self._running = False
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5 + self.idle_poll_s + self.batch_timeout_s)
            except (TimeoutError, Exception):
                self._task.cancel()
            if self._batches:
                try:
                    await asyncio.wait_for(asyncio.gather(*self._batches, return_exceptions=True),
                                           self.drain_timeout_s)
                except TimeoutError:
                    log.warning("batch in flight did not finish before shutdown; it will be redelivered",
                                extra={"loop": self.name})
        if self._sub is not None:
            # Anything that still reaches this subscription goes straight back. The
            # server may still be sending for the last pull request when the fetch
            # returns, so keep handing back for a short grace period before
            # unsubscribing; a message dropped here would wait ack_wait.
            queue = getattr(getattr(self._sub, "_sub", None), "_pending_queue", None)
            grace_until = time.monotonic() + self.SHUTDOWN_GRACE_S
            while queue is not None:
                while not queue.empty():
                    msg = queue.get_nowait()
                    if getattr(msg, "reply", None):
                        with suppress(Exception):
                            await msg.nak(delay=0)
                if time.monotonic() >= grace_until:
                    break
                await asyncio.sleep(0.02)
            with suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


async def fetch_waiting(psub, n: int, timeout: float) -> list[Msg]:
    """Up to `n` messages that are waiting now: what already reached the subscription, then what
    one `no_wait` pull request brings. [] when nothing is waiting (the caller then makes nats-py's
    lingering `fetch`, which waits for the first message).

    Why not nats-py's `fetch` for this part too: it awaits each message of a batch through
    `next_msg`, one new task (and a uuid4) per message, so a 500-message batch takes ~500 turns
    of the event loop, interleaved with the batches in flight, which delays the next batch's start
    after a slot frees (bench ingest; figures in docs/decisions.md). Here the messages the server sent together
    are taken from the subscription's queue in one go. Same protocol as nats-py's first request
    (`no_wait` without `expires`: the server sends what it has, then 404 if that was fewer than
    asked). It reads nats-py's private subscription internals (`_sub._pending_queue`,
    `_sub._pending_size`, `_nms`, `_deliver`, `_nc`), so nats-py is pinned to one minor version in
    libs/messaging/pyproject.toml, and tests/integration/test_pull_loop.py::
    test_nats_py_internals_used_by_fetch_waiting__if_this_fails_re_check_pull_py_against_the_new_nats_py
    checks them.
    """
    sub = psub._sub
    queue: asyncio.Queue = sub._pending_queue
    msgs: list[Msg] = []

    def take(msg: Msg) -> str | None:
        sub._pending_size -= len(msg.data)
        status = msg.headers.get(nats.js.api.Header.STATUS) if msg.headers else None
        if status is None:
            msgs.append(msg)
        return status

    while len(msgs) < n and not queue.empty():  # leftovers; their statuses answered older requests
        take(queue.get_nowait())
    if len(msgs) == n:
        return msgs
    await psub._nc.publish(psub._nms, orjson.dumps({"batch": n - len(msgs), "no_wait": True}), psub._deliver)
    deadline = time.monotonic() + timeout
    while len(msgs) < n:
        if queue.empty():
            try:
                msg = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
            except (TimeoutError, asyncio.TimeoutError):
                break
        else:
            msg = queue.get_nowait()
        status = take(msg)
        if status is not None and status != nats.js.api.StatusCode.CONTROL_MESSAGE:
            break  # 404 no (more) messages, 408, 409...: this request is answered
    return msgs
