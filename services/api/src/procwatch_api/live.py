"""Live updates (issue 19): one NATS subscription per subject family per API process, fanned out
in memory to each user's connected browsers (live_routes.py serves them as server-sent events).

- The hub subscribes (core NATS, no consumer state on the broker) to `samples.recorded.*` and
  `alerts.*.*`: what ingest and the alerter publish right after their commits. Both messages carry
  `user_id`, so no database read is needed to route them.
- Every event gets an id `<boot>-<seq>`: `boot` is random per hub (per API worker process and
  start), `seq` increases across the whole hub. Each user with a connected (or recently
  connected) client has a channel: a bounded ring of their recent events, so a browser that
  reconnects with `Last-Event-ID` gets what it missed. When that cannot be complete (an id of
  another boot or worker, older than the ring, or the channel was expired), the client gets one
  `reset` event instead: the page reloads its data. Never a silent gap.
- Each client has a bounded queue. Fan-out only appends to it and never waits: a client whose queue
  is full is dropped (its stream ends after what it already had; EventSource reconnects and resumes
  from the ring), so a slow browser never delays the others.
- Users without a channel cost one dictionary lookup per message, and nothing at all while no one
  is connected (messages are not even decoded).

Everything except `start` / `stop` is plain synchronous code on the event loop (tests/unit/api/
test_live.py drives it directly).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from procwatch_api.responses import JSON_OPTIONS
from procwatch_api.service import json_time
from procwatch_contracts import subjects
from procwatch_contracts.fast import SampleRecordedView, parse_sample_recorded
from procwatch_contracts.messages import AlertEvent
from procwatch_domain.liveness import SERVER_OFFLINE
from procwatch_domain.status import process_status

log = logging.getLogger("procwatch.api.live")

# Event kinds (docs/dashboard.md, "Live updates").
SAMPLE, ALERT, SERVER, RESET = "sample", "alert", "server", "reset"
# The resolve reason of server_offline when the agent spoke again (procwatch_domain.liveness).
RECOVERED = "recovered"
# A comment line: keeps proxies and load balancers from closing an idle stream.
HEARTBEAT = b": keep-alive\n\n"


def sse_frame(event_id: str, kind: str, data: bytes) -> bytes:
    """One event in the text/event-stream format; `data` is one line of JSON."""
    return b"id: " + event_id.encode() + b"\nevent: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def retry_frame(retry_ms: int) -> bytes:
    return f"retry: {retry_ms}\n\n".encode()


def _json(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, option=JSON_OPTIONS)


# --- messages -> (kind, data) updates: pure ------------------------------------------------


Update = tuple[str, bytes]


def sample_updates(event: SampleRecordedView) -> list[Update]:
    """A `server` update (its agent spoke: online) and one `sample` update per process whose last_*
    fields this message moved (a late sample is stored but changes nothing on the page)."""
    updates: list[Update] = [(SERVER, _json({
        "server_id": event.server_id, "online": True, "last_seen_at": json_time(event.server_seen_at),
    }))]
    for s in event.samples:
        if not s.is_latest:
            continue
        # Samples are recorded only for enabled processes; alerted_state is the one committed with
        # the sample (a transition it causes follows as an `alert` event).
        status = process_status(enabled=True, last_sample_at=s.recorded_at, last_count=s.count,
                                alerted_state=s.alerted_state)
        updates.append((SAMPLE, _json({
            "server_id": event.server_id, "process_id": s.watched_process_id, "status": status,
            "last_count": s.count, "last_cpu_pct": s.cpu_pct, "last_memory_pct": s.memory_pct,
            "last_sample_at": json_time(s.recorded_at),
        })))
    return updates


def alert_updates(alert: AlertEvent) -> list[Update]:
    """The `alert` update (the AlertEvent as published), and for server_offline a `server` one:
    offline when it fires, online when it resolves because the agent spoke again."""
    updates: list[Update] = [(ALERT, alert.model_dump_json().encode())]
    if alert.type == SERVER_OFFLINE and (alert.state == "firing" or alert.reason == RECOVERED):
        updates.append((SERVER, _json({"server_id": alert.server.id, "online": alert.state != "firing",
                                       "last_seen_at": None})))
    return updates


# --- clients, channels, resume: pure ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveEvent:
    seq: int
    frame: bytes  # encoded once, written as is to every client of the user


class LiveClient:
    """One connected browser: a bounded queue of frames and a wake-up for its stream."""

    __slots__ = ("capacity", "dropped", "active", "_pending", "_wakeup")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.dropped = False
        self.active = False  # something was queued since the hub's last heartbeat tick
        self._pending: deque[bytes] = deque()
        self._wakeup = asyncio.Event()

    def offer(self, frame: bytes) -> bool:
        """Queue a frame; False (and the client is dropped) when its queue is full. Never waits."""
        if self.dropped:
            return False
        if len(self._pending) >= self.capacity:
            self.dropped = True
            self._wakeup.set()
            return False
        self._pending.append(frame)
        self.active = True
        self._wakeup.set()
        return True

    def close(self) -> None:
        self.dropped = True
        self._wakeup.set()

    def take(self) -> bytes | None:
        """Everything queued, as one write; b"" when nothing is; None once dropped and drained."""
        if self._pending:
            chunk = b"".join(self._pending)
            self._pending.clear()
            return chunk
        return None if self.dropped else b""

    async def next_chunk(self) -> bytes | None:
        """The next write (queued frames), or None once the client was dropped and has had
        everything queued before. No timer per wait: the hub queues the heartbeats."""
        while not self._pending and not self.dropped:
            self._wakeup.clear()
            await self._wakeup.wait()
        return self.take()


@dataclass(slots=True)
class UserChannel:
    """One user's recent events and connected clients.

    `complete_after`: the ring holds every event of this user with a greater seq (the seq that
    marked the channel's creation, then the seq of the newest event evicted from the ring)."""

    complete_after: int
    ring: deque[LiveEvent]
    clients: set[LiveClient] = field(default_factory=set)
    idle_since: float | None = None

    def append(self, event: LiveEvent) -> None:
        if len(self.ring) == self.ring.maxlen:
            self.complete_after = self.ring[0].seq
        self.ring.append(event)

    def missed_since(self, seq: int) -> list[LiveEvent] | None:
        """The events after `seq`, or None when the ring cannot say (some may be lost)."""
        if seq < self.complete_after:
            return None
        return [e for e in self.ring if e.seq > seq]


def parse_event_id(value: str) -> tuple[str, int] | None:
    boot, sep, seq = value.strip().rpartition("-")
    if not sep or not boot or not seq.isdigit() or len(seq) > 18:
        return None
    return boot, int(seq)


class LiveHub:
    """The fan-out of one API process (see the module docstring)."""

    def __init__(self, *, ring_size: int = 500, client_queue: int = 1000, max_clients_per_user: int = 100,
                 resume_window_s: float = 300.0, heartbeat_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic, boot: str | None = None) -> None:
        self.boot = boot or secrets.token_hex(4)
        self.ring_size = ring_size
        self.client_queue = client_queue
        self.max_clients_per_user = max_clients_per_user
        self.resume_window_s = resume_window_s
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        self._seq = 0
        self._channels: dict[int, UserChannel] = {}
        self._last_sweep = clock()
        self._subscriptions: list[Any] = []
        self._heartbeats: asyncio.Task | None = None
        self.dropped_clients = 0

    @property
    def subscribed(self) -> bool:
        return bool(self._subscriptions)

    @property
    def head(self) -> str:
        return f"{self.boot}-{self._seq}"

    def clients_of(self, user_id: int) -> int:
        channel = self._channels.get(user_id)
        return len(channel.clients) if channel else 0

    # --- clients ---

    def connect(self, user_id: int, last_event_id: str | None) -> LiveClient | None:
        """A new client of the user, already holding what it missed since `last_event_id` (or a
        `reset`); None when the user has max_clients_per_user connected already."""
        self.sweep()
        channel = self._channels.get(user_id)
        if channel is None:
            # A number no event carries marks the channel's start: the user's events before it were
            # not kept, so every id issued before it gets a reset, and the reset's id resumes.
            self._seq += 1
            channel = self._channels[user_id] = UserChannel(self._seq, deque(maxlen=self.ring_size))
        if len(channel.clients) >= self.max_clients_per_user:
            return None
        client = LiveClient(self.client_queue)
        if last_event_id:
            for frame in self._resume(channel, last_event_id, client.capacity):
                client.offer(frame)
        channel.clients.add(client)
        channel.idle_since = None
        return client

    def _resume(self, channel: UserChannel, last_event_id: str, capacity: int) -> list[bytes]:
        parsed = parse_event_id(last_event_id)
        missed = None
        if parsed is not None and parsed[0] == self.boot and parsed[1] <= self._seq:
            missed = channel.missed_since(parsed[1])
        if missed is None or len(missed) > capacity:
            # The page's copy may lack events: it reloads. The id lets the next reconnect resume from here.
            return [sse_frame(self.head, RESET, b"{}")]
        return [e.frame for e in missed]

    def disconnect(self, user_id: int, client: LiveClient) -> None:
        channel = self._channels.get(user_id)
        if channel is None:
            return
        channel.clients.discard(client)
        if not channel.clients:
            channel.idle_since = self._clock()  # kept resume_window_s for the browser to come back

    def sweep(self) -> None:
        """Forget the channels of users with no client for longer than resume_window_s."""
        now = self._clock()
        if now - self._last_sweep < self.resume_window_s / 4:
            return
        self._last_sweep = now
        expired = [uid for uid, c in self._channels.items()
                   if c.idle_since is not None and now - c.idle_since > self.resume_window_s]
        for uid in expired:
            del self._channels[uid]

    # --- events ---

    def publish(self, user_id: int, updates: list[Update]) -> None:
        """Number the updates, keep them in the user's ring and queue them to every client of the user."""
        channel = self._channels.get(user_id)
        if channel is None:
            return
        for kind, data in updates:
            self._seq += 1
            event = LiveEvent(self._seq, sse_frame(f"{self.boot}-{self._seq}", kind, data))
            channel.append(event)
            for client in channel.clients:
                if not client.dropped and not client.offer(event.frame):
                    self.dropped_clients += 1
                    log.info("live: slow client dropped", extra={"user_id": user_id, "queue": client.capacity})
        # Dropped clients leave when their stream ends (live_routes calls disconnect).

    def heartbeat(self) -> None:
        """A keep-alive comment to every client that was sent nothing since the previous tick."""
        for channel in self._channels.values():
            for client in channel.clients:
                if not client.active:
                    client.offer(HEARTBEAT)
                client.active = False

    def reset_all(self) -> None:
        """Messages may have been missed (NATS reconnected): every stream gets a `reset`, and no
        ring vouches for anything before it."""
        for channel in self._channels.values():
            self._seq += 1
            channel.ring.clear()
            channel.complete_after = self._seq
            frame = sse_frame(self.head, RESET, b"{}")
            for client in channel.clients:
                client.offer(frame)

    def on_sample_recorded(self, data: bytes) -> None:
        if not self._channels:
            return
        try:
            event = parse_sample_recorded(data)
        except ValidationError:
            log.warning("live: undecodable SampleRecorded skipped")
            return
        if event.user_id in self._channels:
            self.publish(event.user_id, sample_updates(event))

    def on_alert(self, data: bytes) -> None:
        if not self._channels:
            return
        try:
            alert = AlertEvent.model_validate_json(data)
        except ValidationError:
            log.warning("live: undecodable AlertEvent skipped")
            return
        if alert.user_id in self._channels:
            self.publish(alert.user_id, alert_updates(alert))

    # --- tasks and NATS ---

    def open(self) -> None:
        """Start the heartbeats (one timer for all streams); from the running event loop."""

        async def beat() -> None:
            # Ticks at half the interval: an idle stream hears something every heartbeat_s at most.
            while True:
                await asyncio.sleep(self.heartbeat_s / 2)
                self.heartbeat()
                self.sweep()

        self._heartbeats = asyncio.create_task(beat(), name="live-heartbeats")

    async def start(self, nc) -> None:
        """Subscribe on `nc` (core NATS; the client re-subscribes by itself after a reconnect)."""

        # nats-py hands a burst of waiting messages to the callback without returning to the event
        # loop in between: yield after each, so the streams write one message's events before the
        # next is queued (a client queue then needs to hold one message's events, not a burst's).
        async def on_sample(msg) -> None:
            self.on_sample_recorded(msg.data)
            await asyncio.sleep(0)

        async def on_alert(msg) -> None:
            self.on_alert(msg.data)
            await asyncio.sleep(0)

        self._subscriptions = [
            await nc.subscribe(subjects.SAMPLE_EVENTS_SUBJECTS, cb=on_sample),
            await nc.subscribe(subjects.ALERTS_SUBJECTS, cb=on_alert),
        ]
        log.info("live updates subscribed", extra={"boot": self.boot})

    async def stop(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        for sub in self._subscriptions:
            with suppress(Exception):
                await sub.unsubscribe()
        self._subscriptions = []
        for channel in self._channels.values():
            for client in channel.clients:
                client.close()

