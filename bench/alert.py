"""Alert latency under a background load, for the runner (`uv run python -m bench alert`).

Reuses bench/alert_latency.py (the alerter engineer's bench: fleet, load generator,
probe) and only adds what the runner needs: the shared servers, a fresh database
and NATS per run, the background rate as a parameter, and the same-run reference
(the probe with no background load, measured right before the loaded probe).

Latency = from just before the probe's agent sample is published on
`agent.samples.<id>` to the alert event's arrival on a subscription to
`alerts.<id>.*` (the ALERTS stream's subjects).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

from bench import alert_latency
from bench.common import (
    Servers, create_database, drop_database, latency_summary, loadavg_1m, service, wait_for_consumer,
)
from procwatch_contracts import subjects


@dataclass
class AlertOptions:
    load_rate: float = 10_000.0  # background samples/s
    load_servers: int = 100
    processes_per_server: int = 50
    alerts: int = 200
    idle_alerts: int = 40  # the reference: same probe, no background load
    probe_interval: float = 0.1
    warmup: float = 5.0
    batch_timeout_ms: int = 50  # PROCWATCH_INGEST_BATCH_TIMEOUT_MS
    alerter_fetch_timeout_s: float | None = None
    max_probe_s: float = 90.0  # per probe phase: a saturated pipeline would take alerts x timeout
    # The maintenance scenario (`bench alert-maint`): windows in effect (a few cover the probe) and flap
    # counters on the load processes (where the schema has them).
    windows: int = 0
    nats_nodes: int = 1  # 3: an embedded 3-node NATS cluster, every stream at R3 (bench/cluster.py)


PROBE_TIMEOUT_S = 10.0


def run_once(servers: Servers, opts: AlertOptions) -> dict:
    with servers.nats(opts.nats_nodes) as nats_url:
        url = create_database(servers.database_url, "procwatch_bench_alert")
        try:
            return _measure(servers, url, nats_url, opts)
        finally:
            drop_database(url)


def _measure(servers: Servers, url: str, nats_url: str, opts: AlertOptions) -> dict:
    fleet = alert_latency.create_fleet(url, opts.load_servers, opts.processes_per_server)
    flap = False
    if opts.windows:
        alert_latency.add_maintenance_windows(url, fleet, opts.windows)
        flap = alert_latency.set_flap_counters(url, fleet)
    env = {
        "DATABASE_URL": url, "NATS_URL": nats_url, "LOG_LEVEL": "WARNING",
        "PROCWATCH_INGEST_DELIVER_POLICY": "all", "PROCWATCH_ALERTER_DELIVER_POLICY": "all",
        "PROCWATCH_INGEST_BATCH_TIMEOUT_MS": str(opts.batch_timeout_ms),
        "PROCWATCH_ALERTER_LOG_LEVEL": "WARNING",
        "PROCWATCH_NATS_REPLICAS": str(min(3, opts.nats_nodes)),
    }
    if opts.alerter_fetch_timeout_s is not None:
        env["PROCWATCH_ALERTER_FETCH_TIMEOUT_S"] = str(opts.alerter_fetch_timeout_s)
    tag = f"{time.monotonic_ns()}"
    with service(["ingest"], env, servers.tmp / f"alert-ingest-{tag}.log"), \
            service(["alerter"], env, servers.tmp / f"alert-alerter-{tag}.log"):
        # The services declare the streams and their durables; the probe publishes plain NATS
        # messages, which only a declared stream keeps.
        asyncio.run(wait_for_consumer(nats_url, subjects.AGENT_SAMPLES_STREAM, "procwatch-ingest"))
        asyncio.run(wait_for_consumer(nats_url, subjects.SAMPLE_EVENTS_STREAM, "alerter"))
        idle, _, _ = _probe(nats_url, fleet["probe"], 2, opts, timeout=30.0)
        if len(idle) < 2:
            raise RuntimeError(f"the probe got no alert; logs in {servers.tmp}")
        idle, _, idle_lost = _probe(nats_url, fleet["probe"], opts.idle_alerts, opts, max_seconds=opts.max_probe_s)
        idle = idle + [PROBE_TIMEOUT_S] * idle_lost

        stats_path = str(servers.tmp / f"load-{tag}.json")
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        loadgen = ctx.Process(target=alert_latency.load_generator,
                              args=(nats_url, fleet["load"], opts.load_rate, stop, stats_path), daemon=True)
        loadgen.start()
        try:
            time.sleep(opts.warmup)  # the background load reaches its steady state before probing
            load_avg = loadavg_1m()
            loaded, alerter_share, loaded_lost = _probe(nats_url, fleet["probe"], opts.alerts, opts,
                                                        max_seconds=opts.max_probe_s)
            # A lost alert (none within the probe timeout) counts as a latency of the timeout:
            # a lower bound, so the percentiles never look better for losing alerts.
            loaded = loaded + [PROBE_TIMEOUT_S] * loaded_lost
        finally:
            stop.set()
            loadgen.join(15)
            if loadgen.is_alive():
                loadgen.terminate()
    load = json.loads(Path(stats_path).read_text()) if Path(stats_path).exists() else None
    if not loaded:
        raise RuntimeError("no alert measured under load")
    return {
        "loaded": latency_summary(loaded),
        "idle": latency_summary(idle),
        "alerter_share": latency_summary(alerter_share) if alerter_share else None,
        "lost": idle_lost + loaded_lost,
        "measured": len(loaded),
        "load_target": opts.load_rate,
        "load_achieved": load["samples"] / load["seconds"] if load else None,
        "load_1m": load_avg,
        "windows": opts.windows,
        "flap_counters": flap,
    }


def _probe(nats_url: str, server: dict, alerts: int, opts: AlertOptions, timeout: float = None,
           max_seconds: float | None = None):
    return asyncio.run(alert_latency.probe(nats_url, server, alerts, opts.probe_interval, timeout or PROBE_TIMEOUT_S,
                                           max_seconds))
