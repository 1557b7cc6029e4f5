"""An embedded 3-node NATS cluster (procwatch.embedded.EmbeddedNatsCluster) for the cluster tests, in
its own temporary directory; `start()` returns once JetStream takes R3 streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from procwatch.embedded import EmbeddedNatsCluster
from tests.support.servers import server_tmp_dir


@contextmanager
def running_nats_cluster(size: int = 3) -> Iterator[EmbeddedNatsCluster]:
    with server_tmp_dir() as path:
        cluster = EmbeddedNatsCluster(path, size)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
