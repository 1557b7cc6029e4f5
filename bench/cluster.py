"""The 3-node NATS cluster against the single node, in the same run (issue 20, part 4).

    uv run python -m bench cluster [--quick] [--runs N] [--load-rate 5000]

Each run measures, back to back on the same machine: the ingest bench (bench/ingest.py: committed
samples/s of a real `procwatch ingest`) and the alert-latency bench (bench/alert.py: publish → alert
under a background load), once against one embedded NATS server with R1 streams and once against an
embedded 3-node cluster (procwatch.embedded.EmbeddedNatsCluster) with every stream at R3, the
clients given the three URLs. Same fleet, same settings, one ingest and one alerter process (no
partitions), so the difference is the cluster's: every stored message is replicated to two more
nodes and acked after a quorum. The three nodes share the machine's cores with everything else, so
on a small machine this measures the cluster's overhead, not its scale.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from bench import alert, ingest
from bench.common import Servers

log = logging.getLogger("bench.cluster")
TOPOLOGIES = (("single", 1), ("cluster", 3))


def run_once(servers: Servers, ingest_opts: ingest.IngestOptions, alert_opts: alert.AlertOptions) -> dict:
    """{"single": {"ingest": ..., "alert": ...}, "cluster": {...}}: both topologies, ingest then alert."""
    out: dict = {}
    for name, nodes in TOPOLOGIES:
        log.info("cluster bench: ingest, %s", name)
        out.setdefault(name, {})["ingest"] = ingest.run_once(servers, replace(ingest_opts, nats_nodes=nodes))
    for name, nodes in TOPOLOGIES:
        log.info("cluster bench: alert latency, %s", name)
        out[name]["alert"] = alert.run_once(servers, replace(alert_opts, nats_nodes=nodes))
    return out


def ratio(run: dict, bench: str, figure) -> float:
    """cluster / single of one figure in one run."""
    return figure(run["cluster"][bench]) / figure(run["single"][bench])
