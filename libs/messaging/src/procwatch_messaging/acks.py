"""The ack / nak / dead-letter policy of every JetStream consumer, in one place.

- Handled (committed): ack.
- Poison (a message no retry can fix: invalid, unauthenticated, an error that persists
  for `max_attempts` deliveries): publish it to a dead-letter subject with a
  `Procwatch-Reason` header (and `Procwatch-Original-Subject`), await the stream's ack,
  then ack the original. A publish that fails acks nothing: the caller naks.
- Transient (database or broker unreachable): nak with a delay growing with the
  delivery count (`retry_delay`), so the message comes back once the outage may be over.

`FailurePolicy.on_error` maps an exception to what to do (pure, unit-tested);
`nak` and `dead_letter` do it. A consumer that must keep stream order (the alerter) retries
a transient failure in place instead of naking, and uses the same helpers for the rest.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass

from nats.aio.msg import Msg

from procwatch_contracts import subjects
from procwatch_runtime import metrics

log = logging.getLogger("procwatch.messaging.acks")

MSG_ID_HEADER = "Nats-Msg-Id"
MAX_REASON_CHARS = 200

# publish(subject, payload, headers): resolves once the stream stored the message, raises otherwise.
Publish = Callable[[str, bytes, dict[str, str]], Awaitable[object]]


class Action(enum.Enum):
    ACK = "ack"
    NAK = "nak"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Disposition:
    """What to do with a message: ack, nak after `delay_s`, or dead-letter with `reason`."""

    action: Action
    delay_s: float = 0.0
    reason: str | None = None


ACK = Disposition(Action.ACK)


def retry_delay(num_delivered: int, base_s: float, max_s: float) -> float:
    """Redelivery delay after a transient failure: base * 2^(attempt-1), capped."""
    return min(max_s, base_s * (2 ** max(0, min(num_delivered, 30) - 1)))


def poison(reason: str) -> Disposition:
    return Disposition(Action.DEAD_LETTER, reason=reason[:MAX_REASON_CHARS])


class Poison(Exception):
    """Raised by a handler for a message no retry can fix: it is dead-lettered with `reason` at once."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FailurePolicy:
    """How a consumer answers a handler that raised.

    `transient` errors are naked with `retry_delay` forever (outages are waited out:
    consumers run with `max_deliver=-1`). Any other error is a bug or a message the code
    cannot handle: naked the same way until it was delivered `max_attempts` times, then
    dead-lettered (`processing_failed: <ExceptionType>`) so it never blocks the consumer.
    """

    transient: tuple[type[BaseException], ...]
    retry_base_s: float = 0.5
    retry_max_s: float = 10.0
    max_attempts: int = 3

    def on_error(self, exc: BaseException, num_delivered: int) -> Disposition:
        if isinstance(exc, Poison):
            return poison(exc.reason)
        delay = retry_delay(num_delivered, self.retry_base_s, self.retry_max_s)
        if isinstance(exc, self.transient) or num_delivered < self.max_attempts:
            return Disposition(Action.NAK, delay_s=delay)
        return poison(f"processing_failed: {type(exc).__name__}")


def num_delivered(msg: Msg) -> int:
    try:
        return msg.metadata.num_delivered or 1
    except Exception:  # not a JetStream message (no metadata): the first delivery
        return 1


def dead_letter_headers(msg: Msg, reason: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """`Procwatch-Reason`, the original subject, and a `Nats-Msg-Id` from the stored message's
    sequence, so a poison message redelivered before its ack landed is parked once."""
    headers = {subjects.REASON_HEADER: reason[:MAX_REASON_CHARS], subjects.ORIGINAL_SUBJECT_HEADER: msg.subject}
    with suppress(Exception):
        headers[MSG_ID_HEADER] = f"dl-{msg.metadata.stream}-{msg.metadata.sequence.stream}"
    if extra:
        headers.update(extra)
    return headers


async def dead_letter(publish: Publish, subject: str, items: Sequence[tuple[Msg, str]],
                      extra: Callable[[Msg], Mapping[str, str]] | None = None) -> None:
    """Publish each (message, reason) to `subject` (stored by the stream), then ack the originals.

    Raises if a publish fails; then no original is acked (the caller naks or retries)."""
    if not items:
        return
    await asyncio.gather(*(
        publish(subject, msg.data, dead_letter_headers(msg, reason, extra(msg) if extra else None))
        for msg, reason in items
    ))
    for msg, reason in items:
        metrics.DEADLETTERS.labels(subject, metrics.deadletter_reason(reason)).inc()
        log.warning("message dead-lettered",
                    extra={"subject": msg.subject, "deadletter": subject, "reason": reason[:MAX_REASON_CHARS]})
        await msg.ack()


async def nak(msgs: Sequence[Msg], delay_s: float | Callable[[Msg], float] = 0.0) -> None:
    """Hand messages back, redelivered after `delay_s` (a number, or per message). Never raises:
    with the connection gone the server redelivers after ack_wait anyway."""
    for msg in msgs:
        try:
            delay = delay_s(msg) if callable(delay_s) else delay_s
            await msg.nak(delay=delay or None)
        except Exception:
            log.debug("nak failed", exc_info=True)


async def settle(msg: Msg, disposition: Disposition, *, publish: Publish, deadletter_subject: str) -> None:
    """Carry out `disposition` for one message. A dead-letter publish that fails naks instead."""
    if disposition.action is Action.ACK:
        await msg.ack()
    elif disposition.action is Action.NAK:
        await nak([msg], disposition.delay_s)
    else:
        try:
            await dead_letter(publish, deadletter_subject, [(msg, disposition.reason or "poison")])
        except Exception as exc:
            log.warning("dead-letter publish failed; redelivering", extra={"error": type(exc).__name__})
            await nak([msg], 1.0)


async def handle_one(msg: Msg, work: Callable[[Msg], Awaitable[object]], policy: FailurePolicy, *,
                     publish: Publish, deadletter_subject: str) -> None:
    """Run `work(msg)` and settle the message: ack when it returns, else what `policy` says
    (`Poison` -> dead-letter now). For one-message handlers (FastStream subscribers with
    `AckPolicy.MANUAL`); batch handlers settle each message themselves with the same helpers."""
    try:
        await work(msg)
        disposition = ACK
    except Exception as exc:
        disposition = policy.on_error(exc, num_delivered(msg))
        if not isinstance(exc, Poison):
            log.warning("message handling failed", exc_info=not isinstance(exc, policy.transient),
                        extra={"subject": msg.subject, "error": type(exc).__name__,
                               "action": disposition.action.value, "retry_in_s": disposition.delay_s})
    await settle(msg, disposition, publish=publish, deadletter_subject=deadletter_subject)


def js_publisher(js, timeout_s: float = 5.0) -> Publish:
    """`Publish` through a nats-py JetStreamContext (awaits the stream's ack)."""

    async def publish(subject: str, payload: bytes, headers: dict[str, str]) -> object:
        return await js.publish(subject, payload, headers=headers, timeout=timeout_s)

    return publish
