"""A JetStream stream of a test's own, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats


@asynccontextmanager
async def throwaway_stream(nats_url: str, prefix: str, **config) -> AsyncIterator[tuple]:
    """Yields (nc, js, subject, name) for a new stream on one subject of its own."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"{prefix}_{uuid.uuid4().hex[:8].upper()}"
    subject = f"{prefix.lower()}.{name.lower()}"
    await js.add_stream(name=name, subjects=[subject], **config)
    try:
        yield nc, js, subject, name
    finally:
        await js.delete_stream(name)
        await nc.close()
