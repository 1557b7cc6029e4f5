"""`procwatch up --nats-cluster 3 --with-agent`: the demo agent's samples cross a 3-node NATS cluster
(streams at R3, two ingest and two alerter partitions) and reach the API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time

import httpx
import nats
import pytest

from procwatch.embedded import free_port
from procwatch_contracts import subjects
from tests.e2e.test_up import _read_until, _stop

pytestmark = pytest.mark.e2e


def test_up_with_a_nats_cluster_runs_partitions_on_r3_streams(server_tmp_path):
    data_dir, port = server_tmp_path / "pw", free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "NATS_URL")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "procwatch.cli", "up", "--data-dir", str(data_dir), "--api-port", str(port),
         "--nats-cluster", "3", "--with-agent"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        out = _read_until(proc, r"Ctrl-C stops everything")
        stack = json.loads((data_dir / "stack.json").read_text())
        nats_urls = stack["nats_url"].split(",")
        assert len(nats_urls) == 3 and all(u.startswith("nats://services:") for u in nats_urls)
        assert {"nats-1-cluster", "nats-2-cluster", "nats-3-cluster"} <= set(stack["ports"])
        for name in ("ingest-0", "ingest-1", "alerter-0", "alerter-1", "nats-1", "nats-2", "nats-3"):
            assert (data_dir / f"{name}.log").exists() or (data_dir / "nats-cluster" / f"{name}.log").exists(), name
        token, url = re.search(r"curl -H 'Authorization: Bearer (\S+)' (\S+)", out).groups()

        deadline, statuses = time.monotonic() + 90, set()
        while time.monotonic() < deadline:  # the demo agent reports through the cluster (auth callout on any node)
            body = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
            statuses = {p["status"] for p in body["processes"]}
            if "pending" not in statuses:
                break
            time.sleep(0.5)
        assert "pending" not in statuses, statuses
        server_id = body["server"]["id"]

        async def streams():
            nc = await nats.connect(nats_urls)
            try:
                js = nc.jetstream()
                samples = await js.stream_info(subjects.AGENT_SAMPLES_STREAM)
                durables = {c.name for c in await js.consumers_info(subjects.AGENT_SAMPLES_STREAM)}
                events = await js.stream_info(subjects.SAMPLE_EVENTS_STREAM, subjects_filter=">")
                return samples, durables, events
            finally:
                await nc.close()

        samples, durables, events = asyncio.run(streams())
        assert samples.config.num_replicas == 3 and events.config.num_replicas == 3
        assert {"procwatch-ingest-0", "procwatch-ingest-1"} <= durables
        k = subjects.partition_of(server_id, 2)
        assert set(events.state.subjects or {}) == {f"samples.recorded.{k}.{server_id}"}
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
