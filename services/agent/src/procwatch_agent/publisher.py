"""Publish samples to JetStream, buffering them through broker outages.

Every sample goes to the back of a bounded buffer; `flush()` then publishes
from the front (oldest first) until the buffer is empty or a publish fails. A
failed publish stays at the front and is retried on the next flush, so samples
reach the stream in tick order. When the buffer is full the oldest sample is
dropped and counted: after a long outage the newest `buffer_ticks` ticks
survive.

Re-sending is safe: each sample carries `Nats-Msg-Id: <server_id>-<sampled_at
unix ms>`, and JetStream drops a second copy inside its duplicate window (a
publish whose ack was lost on the way back is stored once).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from procwatch_contracts import subjects
from procwatch_contracts.messages import AgentSample

log = logging.getLogger("procwatch.agent.publisher")

T = TypeVar("T")


class BoundedBuffer(Generic[T]):
    """FIFO of at most `capacity` items; adding to a full buffer drops the oldest (counted)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: deque[T] = deque()
        self.capacity = capacity
        self.dropped = 0

    def add(self, item: T) -> T | None:
        """Append `item`; returns the item dropped to make room, if any."""
        dropped = None
        if len(self._items) >= self.capacity:
            dropped = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        return dropped

    def peek(self) -> T | None:
        return self._items[0] if self._items else None

    def pop(self) -> T:
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items))


@dataclass(frozen=True)
class Outgoing:
    subject: str
    msg_id: str
    payload: bytes
    sampled_at_ms: int


def message_id(server_id: int, sampled_at_ms: int) -> str:
    return f"{server_id}-{sampled_at_ms}"


def encode(sample: AgentSample) -> Outgoing:
    ms = int(sample.sampled_at.timestamp() * 1000)
    return Outgoing(
        subject=subjects.agent_samples(sample.server_id),
        msg_id=message_id(sample.server_id, ms),
        payload=sample.model_dump_json().encode(),
        sampled_at_ms=ms,
    )


# The broker answered and will answer the same way again: retrying cannot help.
_PERMANENT = (nats.errors.MaxPayloadError, nats.errors.BadSubjectError, nats.errors.BadHeaderError,
              nats.js.errors.BadRequestError)


class Publisher:
    def __init__(self, nc: NatsClient | None, agent_key: str, buffer_ticks: int, timeout_s: float = 2.0) -> None:
        self.nc = nc
        self._agent_key = agent_key
        self._timeout = timeout_s
        self.buffer: BoundedBuffer[Outgoing] = BoundedBuffer(buffer_ticks)
        self.published = 0
        self.rejected = 0

    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    async def publish(self, sample: AgentSample) -> int:
        """Queue `sample` and flush; returns how many samples were published now."""
        dropped = self.buffer.add(encode(sample))
        # Log the first drop of an outage, then every 60th: one line per tick would flood.
        if dropped is not None and self.buffer.dropped % 60 == 1:
            log.warning("sample buffer full, oldest sample dropped",
                        extra={"msg_id": dropped.msg_id, "dropped_total": self.buffer.dropped,
                               "buffered": len(self.buffer)})
        return await self.flush()

    async def flush(self) -> int:
        sent = 0
        while (item := self.buffer.peek()) is not None:
            nc = self.nc
            if nc is None or not nc.is_connected:
                break  # not connected (yet): keep everything for later
            try:
                await nc.jetstream().publish(
                    item.subject,
                    item.payload,
                    timeout=self._timeout,
                    headers={"Authorization": f"Bearer {self._agent_key}", "Nats-Msg-Id": item.msg_id},
                )
            except _PERMANENT as exc:
                self.buffer.pop()
                self.rejected += 1
                log.error("sample rejected by the broker, dropped",
                          extra={"msg_id": item.msg_id, "error": type(exc).__name__, "detail": str(exc)})
                continue
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("sample publish failed, kept for retry",
                            extra={"msg_id": item.msg_id, "error": type(exc).__name__,
                                   "buffered": len(self.buffer)})
                break
            self.buffer.pop()
            self.published += 1
            sent += 1
        if sent and len(self.buffer):
            log.info("buffered samples partly flushed", extra={"sent": sent, "buffered": len(self.buffer)})
        return sent
