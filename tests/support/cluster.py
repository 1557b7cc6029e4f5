"""An embedded 3-node NATS cluster (procwatch.embedded.EmbeddedNatsCluster) for the cluster tests:
its own temporary directory, JetStream ready (a meta leader elected) before it is handed over."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import nats
from nats.js.api import StreamConfig

from procwatch.embedded import EmbeddedNatsCluster
from tests.support.servers import server_tmp_dir


async def wait_jetstream_ready(url: str, replicas: int, timeout: float = 60.0) -> None:
    """Until a stream of `replicas` replicas can be created (the cluster elected its meta leader and
    enough peers are known), then delete it."""
    nc = await nats.connect(url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    name = f"READY_{uuid.uuid4().hex[:8].upper()}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                await js.add_stream(StreamConfig(name=name, subjects=[name.lower()], num_replicas=replicas))
                await js.delete_stream(name)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
    finally:
        await nc.close()


@contextmanager
def running_nats_cluster(size: int = 3) -> Iterator[EmbeddedNatsCluster]:
    with server_tmp_dir() as path:
        cluster = EmbeddedNatsCluster(path, size)
        try:
            cluster.start()
            asyncio.run(wait_jetstream_ready(cluster.url, min(3, size)))
            yield cluster
        finally:
            cluster.stop()
