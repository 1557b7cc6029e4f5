"""JetStream publishes with acks, for the hot event stream.

`AckedPublisher.publish_async` keeps the contract of nats-py's
`JetStreamContext.publish_async` that ingest relies on (a future per message that
resolves once the stream stored it, or fails with `NoStreamResponseError` /
`APIError`) but reads the acks itself: one wildcard reply subscription per client,
acks parsed with orjson. nats-py builds a `PubAck` dataclass per ack through
`dataclasses.fields()`, a visible share of ingest's CPU (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import itertools

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

NO_RESPONDERS = "503"


class AckedPublisher:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix: str | None = None
        self._subscribing: asyncio.Lock = asyncio.Lock()
        self._futures: dict[str, asyncio.Future] = {}
        self._tokens = itertools.count()

    @property
    def awaiting_acks(self) -> int:
        """Publishes whose stream ack (or failure) has not come back yet."""
        return len(self._futures)

    async def publish_async(self, subject: str, payload: bytes = b"",
                            headers: dict[str, str] | None = None) -> asyncio.Future:
        """Publish; the returned future resolves to the stream sequence once the stream has stored it."""
        prefix = self._prefix or await self._subscribe()
        token = str(next(self._tokens))
        future = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        # A future given up on (the caller's timeout cancels it) leaves no entry behind.
        future.add_done_callback(lambda _, token=token: self._futures.pop(token, None))
        try:
            await self.nc.publish(subject, payload, reply=prefix + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def _subscribe(self) -> str:
        async with self._subscribing:
            if self._prefix is None:
                prefix = self.nc.new_inbox() + "."
                await self.nc.subscribe(prefix + "*", cb=self._on_ack)
                self._prefix = prefix
        return self._prefix

    async def _on_ack(self, msg: Msg) -> None:
        future = self._futures.get(msg.subject[len(self._prefix or ""):])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        try:
            reply = orjson.loads(msg.data)
        except orjson.JSONDecodeError as exc:
            future.set_exception(exc)
            return
        error = reply.get("error")
        if not error:
            future.set_result(reply.get("seq"))
            return
        try:
            APIError.from_error(error)  # raises the subclass for the error's code, as nats-py does
        except APIError as exc:
            future.set_exception(exc)
