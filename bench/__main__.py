"""procwatch benchmarks: one command, every figure as the median of several runs.

    uv run python -m bench                 # all benches, 3 runs each, rewrites bench/RESULTS.md
    uv run python -m bench --quick         # shorter windows, 2 runs each
    uv run python -m bench ingest          # one bench alone (also: alert, alert-maint, api, agent, detect, notify,
                                           # offline, sse, cluster: 3-node R3 NATS vs one node, same run)
    uv run python -m bench api --workers 1,2 --runs 3
    uv run python -m bench ingest --runs 1 --py-spy /tmp/ingest.txt --no-write

Servers: embedded PostgreSQL / NATS / Redis (procwatch.embedded) in a temporary
directory unless DATABASE_URL / NATS_URL / REDIS_URL are set. Each run gets a fresh
database (and a fresh embedded NATS); the API bench seeds its 5-million-sample
database once and reuses it for every run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from dataclasses import asdict, replace

from bench import common
from bench.report import Figure, Section, render

BENCHES = ("ingest", "alert", "alert-maint", "api", "agent", "detect", "notify", "offline", "sse", "cluster")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
log = logging.getLogger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benches", nargs="*", default=[], help=f"which benches to run: {', '.join(BENCHES)} (default: all)")
    ap.add_argument("--runs", type=int, default=None, help="runs per bench (default 3; 2 with --quick)")
    ap.add_argument("--quick", action="store_true", help="shorter measurement windows")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print the report instead of writing it")
    ap.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from results.json, run nothing")
    # ingest
    ap.add_argument("--ingest-servers", type=int, default=100)
    ap.add_argument("--ingest-processes", type=int, default=20)
    ap.add_argument("--ingest-replicas", type=int, default=1,
                    help="ingest bench: `procwatch ingest` processes sharing the durable consumer")
    ap.add_argument("--py-spy", metavar="OUT", help="profile the ingest service under py-spy (raw stacks)")
    # alert
    ap.add_argument("--load-rate", type=float, default=10_000.0, help="alert bench: background samples/s")
    ap.add_argument("--batch-timeout-ms", type=int, default=None,
                    help="PROCWATCH_INGEST_BATCH_TIMEOUT_MS for the alert bench (default: the service's)")
    # api
    ap.add_argument("--workers", default="1,2", help="API bench: uvicorn worker counts to measure")
    ap.add_argument("--seed-scale", type=float, default=1.0,
                    help="API bench: fraction of the 5-million-sample seed (for trying things out)")
    # agent
    ap.add_argument("--window", type=float, default=None,
                    help="agent bench: seconds per measurement window (default 60; 10 with --quick)")
    # notify
    ap.add_argument("--notify-rate", type=float, default=1000.0, help="notify bench: alerts/s")
    ap.add_argument("--notify-channels", type=int, default=100, help="notify bench: webhook channels (one hangs)")
    # offline
    ap.add_argument("--offline-servers", type=int, default=100_000, help="offline bench: servers in the fleet")
    # sse
    ap.add_argument("--sse-clients", type=int, default=1000, help="sse bench: connected SSE clients")
    ap.add_argument("--sse-users", type=int, default=10, help="sse bench: users the clients are spread over")
    args = ap.parse_args(argv)
    unknown = set(args.benches) - set(BENCHES)
    if unknown:
        ap.error(f"unknown bench(es): {', '.join(sorted(unknown))}; choose from {', '.join(BENCHES)}")
    args.benches = list(dict.fromkeys(args.benches or BENCHES))
    if args.runs is None:
        args.runs = 2 if args.quick else 3
    return args


def _ingest_options(args):
    from bench import ingest

    return ingest.IngestOptions(servers=args.ingest_servers, processes=args.ingest_processes,
                                seconds=8 if args.quick else 20, warmup=3 if args.quick else 5)


def _alert_options(args, **extra):
    from bench import alert

    opts = alert.AlertOptions(load_rate=args.load_rate, alerts=100 if args.quick else 200,
                              idle_alerts=20 if args.quick else 40, warmup=3 if args.quick else 5, **extra)
    if args.batch_timeout_ms is not None:
        opts.batch_timeout_ms = args.batch_timeout_ms
    return opts


def run_ingest(servers: common.Servers, args) -> Section:
    from bench import ingest

    opts = replace(_ingest_options(args), py_spy=args.py_spy, replicas=args.ingest_replicas)
    section = Section(
        "Ingest",
        f"uv run python -m bench ingest --ingest-replicas {opts.replicas}  # {opts.servers} servers x "
        f"{opts.processes} processes, {opts.replicas} ingest process(es), "
        f"{opts.seconds:g} s window after {opts.warmup:g} s warm-up, batch {opts.batch_size}/{opts.batch_timeout_ms} ms",
    )
    runs = _repeat("ingest", args, lambda: ingest.run_once(servers, opts))
    ceiling = common.median([r["ceiling_rate"] for r in runs])
    ratio = [100 * r["ratio"] for r in runs]
    section.figures = [
        Figure("service: committed samples/s", [r["service_rate"] for r in runs], "samples/s",
               reference=f"raw ceiling {ceiling:,.0f} samples/s (median; runs "
                         + ", ".join(f"{r['ceiling_rate']:,.0f}" for r in runs) + ")"),
        Figure("service / raw ceiling", ratio, "%", reference="ratio computed per run, then the median",
               target="≥ 60 %", met=common.median(ratio) >= 60),
    ]
    section.notes = [
        "Committed samples/s = growth of `sum(watched_processes.samples_total)` (same transaction as the rows; "
        "checked equal to `count(*)` of `process_samples` after every run) over the window, while the bench "
        "publishes AgentSample messages through the real broker with a bounded backlog to a real "
        "`procwatch ingest` subprocess. Raw ceiling = the same number of rows by binary COPY into "
        "`process_samples` in transactions of the service's batch size, each followed by the batched "
        "`last_*`/`samples_total` update, done the way the service does its database work (ids in blocks of "
        "1,000, per-process values by COPY into a temp table + one UPDATE): no service, no broker, same "
        "database, run after the service phase.",
        "Load average (1 min) at the start of each run's window: "
        + ", ".join(f"{r['load_1m']:.2f}" for r in runs)
        + ". The service shares the 2 cores with PostgreSQL, NATS and the load generator; the ceiling runs "
          "alone, so the ratio is pessimistic by construction.",
    ]
    return section


def _repeat(name: str, args, run_once: Callable[[], dict],
            summary: Callable[[dict], object] | None = None) -> list[dict]:
    """`args.runs` results of `run_once()`, each logged (through `summary`, default `_short`)."""
    runs = []
    for i in range(args.runs):
        log.info("%s run %d/%d", name, i + 1, args.runs)
        runs.append(run_once())
        log.info("%s run %d: %s", name, i + 1, (summary or _short)(runs[-1]))
    return runs


def run_alert(servers: common.Servers, args) -> Section:
    from bench import alert

    opts = _alert_options(args)
    section = Section(
        "Alert latency",
        f"uv run python -m bench alert --load-rate {opts.load_rate:g}  # {opts.alerts} probe alerts per run, "
        f"ingest batch timeout {opts.batch_timeout_ms} ms",
    )
    runs = _repeat("alert", args, lambda: alert.run_once(servers, opts))
    idle_p50 = common.median([r["idle"]["p50_ms"] for r in runs])
    idle_p99 = common.median([r["idle"]["p99_ms"] for r in runs])
    achieved = [r["load_achieved"] or 0 for r in runs]
    p99 = [r["loaded"]["p99_ms"] for r in runs]
    section.figures = [
        Figure("p50 publish → alert, under load", [r["loaded"]["p50_ms"] for r in runs], "ms",
               reference=f"no background load: p50 {idle_p50:.1f} ms", fmt="{:.1f}"),
        Figure("p99 publish → alert, under load", p99, "ms",
               reference=f"no background load: p99 {idle_p99:.1f} ms", target="≤ 100 ms",
               met=common.median(p99) <= 100, fmt="{:.1f}"),
        Figure("background load achieved", achieved, "samples/s",
               reference=f"asked for {opts.load_rate:,.0f} samples/s",
               target=f"≥ {0.95 * opts.load_rate:,.0f} samples/s", met=common.median(achieved) >= 0.95 * opts.load_rate),
    ]
    if any(r["alerter_share"] for r in runs):
        section.figures.append(Figure(
            "alerter share p99 (SampleRecorded → alert)",
            [r["alerter_share"]["p99_ms"] for r in runs if r["alerter_share"]], "ms", fmt="{:.1f}",
            reference="the rest is the agent → ingest → commit → SampleRecorded leg"))
    lost = sum(r["lost"] for r in runs)
    section.notes = [
        "Latency = from just before the probe's agent sample is published on `agent.samples.<id>` to the alert "
        "event's arrival on a subscription to `alerts.<id>.*`; the probe's CPU crosses its threshold and back, "
        f"one alert (firing / resolved) per sample. Alerts lost (no event within {alert.PROBE_TIMEOUT_S:g} s; "
        f"counted as {alert.PROBE_TIMEOUT_S:g} s in the percentiles): {lost} of "
        f"{sum(r['measured'] for r in runs)} probes under load (each probe phase stops after "
        f"{opts.max_probe_s:g} s).",
        "Real `procwatch ingest` and `procwatch alerter` subprocesses; the background load comes from a separate "
        "process (`bench/alert_latency.py`'s load generator), 50 readings per message, none alerting. "
        "Load average (1 min) when probing started: " + ", ".join(f"{r['load_1m']:.2f}" for r in runs) + ".",
    ]
    return section


MAINTENANCE_WINDOWS = 1000


def run_alert_maint(servers: common.Servers, args) -> Section:
    """The Alert latency bench with 1,000 maintenance windows in effect and flap counters on the load
    processes (issue 18): its p99 must stay within 10 % of the Alert latency section's."""
    from bench import alert

    opts = _alert_options(args, windows=MAINTENANCE_WINDOWS)
    section = Section(
        "Alert latency with maintenance windows and flap counters",
        f"uv run python -m bench alert-maint --load-rate {opts.load_rate:g}  # {opts.windows:,} windows in effect,"
        f" {opts.alerts} probe alerts per run",
    )
    runs = _repeat("alert-maint", args, lambda: alert.run_once(servers, opts))
    baseline = _stored_figure(args, "alert", "p99 publish → alert, under load")
    p99 = [r["loaded"]["p99_ms"] for r in runs]
    section.figures = [
        Figure("p50 publish → alert, under load", [r["loaded"]["p50_ms"] for r in runs], "ms", fmt="{:.1f}"),
        Figure("p99 publish → alert, under load", p99, "ms", fmt="{:.1f}",
               reference=f"Alert latency section: p99 {baseline:.1f} ms" if baseline else "",
               target="≤ 110 % of the Alert latency section's p99",
               met=common.median(p99) <= 1.1 * baseline if baseline else None),
        Figure("background load achieved", [r["load_achieved"] or 0 for r in runs], "samples/s",
               reference=f"asked for {opts.load_rate:,.0f} samples/s"),
    ]
    flap = "on" if all(r["flap_counters"] for r in runs) else "not in this schema (no alert_after_samples column)"
    section.notes = [
        f"The Alert latency bench (same probe, same load) with {opts.windows:,} maintenance windows in effect for "
        "the fleet's user, half one-off and half recurring (daily, Europe/Berlin), scoped to load servers or "
        "processes, 10 of them covering the probe (so its alerts are suppressed: still published and measured); "
        f"flap counters on the load processes (CPU rule on, alert_after_samples 3): {flap}. "
        f"Alerts lost: {sum(r['lost'] for r in runs)} of {sum(r['measured'] for r in runs)}. Load average (1 min) "
        "when probing started: " + ", ".join(f"{r['load_1m']:.2f}" for r in runs) + ".",
    ]
    return section


def run_cluster(servers: common.Servers, args) -> Section:
    from bench import cluster

    ingest_opts, alert_opts = _ingest_options(args), _alert_options(args)
    section = Section(
        "NATS cluster: 3 nodes at R3 vs one node",
        f"uv run python -m bench cluster --load-rate {alert_opts.load_rate:g}  # per run and topology: the ingest "
        f"bench ({ingest_opts.servers} servers x {ingest_opts.processes} processes, {ingest_opts.seconds:g} s window) "
        f"and the alert bench ({alert_opts.alerts} probe alerts under {alert_opts.load_rate:,.0f} samples/s)",
    )
    runs = _repeat("cluster", args, lambda: cluster.run_once(servers, ingest_opts, alert_opts),
                   lambda r: {t: {b: _short(v) for b, v in by_bench.items()} for t, by_bench in r.items()})

    def rate(r):
        return r["service_rate"]

    def p50(r):
        return r["loaded"]["p50_ms"]

    def p99(r):
        return r["loaded"]["p99_ms"]

    section.figures = [
        Figure("ingest, 3-node R3: committed samples/s", [r["cluster"]["ingest"]["service_rate"] for r in runs],
               "samples/s", reference="single node: " + ", ".join(
                   f"{r['single']['ingest']['service_rate']:,.0f}" for r in runs) + " samples/s"),
        Figure("ingest: cluster / single node", [cluster.ratio(r, "ingest", rate) for r in runs], "×", fmt="{:.2f}",
               reference="ratio per run, then the median"),
        Figure("alert p50 under load, 3-node R3", [p50(r["cluster"]["alert"]) for r in runs], "ms", fmt="{:.1f}",
               reference="single node: " + ", ".join(f"{p50(r['single']['alert']):.1f}" for r in runs) + " ms"),
        Figure("alert p99 under load, 3-node R3", [p99(r["cluster"]["alert"]) for r in runs], "ms", fmt="{:.1f}",
               reference="single node: " + ", ".join(f"{p99(r['single']['alert']):.1f}" for r in runs) + " ms"),
        Figure("alert p50: cluster / single node", [cluster.ratio(r, "alert", p50) for r in runs], "×",
               fmt="{:.2f}"),
        Figure("alert p50 without background load, 3-node R3", [r["cluster"]["alert"]["idle"]["p50_ms"] for r in runs],
               "ms", fmt="{:.1f}", reference="single node: " + ", ".join(
                   f"{r['single']['alert']['idle']['p50_ms']:.1f}" for r in runs) + " ms"),
        Figure("alert p99: cluster / single node", [cluster.ratio(r, "alert", p99) for r in runs], "×",
               fmt="{:.2f}"),
    ]
    lost = sum(r[t]["alert"]["lost"] for r in runs for t in ("single", "cluster"))
    section.notes = [
        "Same run, same machine, back to back: the ingest bench on one embedded NATS server (R1 streams), then "
        "on an embedded 3-node cluster (every stream R3, the clients given the three URLs), then the alert bench "
        "the same way. One ingest and one alerter process in both (no partitions): the difference is "
        "replication (each stored message written on three nodes, acked after two) and the routes.",
        "**The three NATS nodes share the machine's 2 cores with PostgreSQL, the services and the load "
        "generators: this measures the cluster's overhead, not its scale.** On separate machines each node "
        "has its own cores and disk; the leader's extra work is sending each message to two followers.",
        f"Alerts lost under load (both topologies, all runs): {lost}. Background load achieved: single "
        + ", ".join(f"{r['single']['alert']['load_achieved'] or 0:,.0f}" for r in runs) + ", cluster "
        + ", ".join(f"{r['cluster']['alert']['load_achieved'] or 0:,.0f}" for r in runs) + " samples/s.",
    ]
    return section


def _stored_figure(args, section: str, figure: str) -> float | None:
    """A figure's median in another section (for a comparison): as this command just measured it
    when it ran that bench too, else as results.json holds it."""
    stored = args.sections.get(section)
    for f in (stored or {}).get("figures", ()):
        if f["name"] == figure and f["runs"]:
            return common.median(f["runs"])
    return None


def run_api(servers: common.Servers, args) -> Section:
    from bench import api_load

    workers = [int(w) for w in str(args.workers).split(",") if w]
    seconds, warmup = (5, 1.5) if args.quick else (10, 2)
    section = Section(
        "API under load",
        f"uv run python -m bench api --workers {args.workers}  # 32 connections, {seconds} s per scenario "
        f"after {warmup} s warm-up",
    )
    t0 = time.monotonic()
    scale = args.seed_scale
    seeded = api_load.seed(servers.database_url, big=int(api_load.BIG_SAMPLES * scale),
                           other=max(1, int(api_load.OTHER_SAMPLES * scale)))
    log.info("api seed: %s samples in %.0f s", f"{seeded.samples:,}", time.monotonic() - t0)
    runs: dict[int, list[dict]] = {w: [] for w in workers}
    with servers.nats() as nats_url:
        for i in range(args.runs):
            for w in workers:
                log.info("api run %d/%d, %d worker(s)", i + 1, args.runs, w)
                runs[w].append(api_load.run_api(servers, seeded, nats_url, workers=w, seconds=seconds, warmup=warmup))
                log.info("api run %d: %s", i + 1, _short(runs[w][-1]))
    plans = api_load.explain(seeded.url, seeded.big[1])
    for w in workers:
        rs = runs[w]
        healthz = common.median([r["healthz"]["rate"] for r in rs])
        for name, label in (("list", "list (GET /servers/:id/processes)"),
                            ("get_1k", "get, 1,000-sample process"),
                            ("get_2m", "get, 2,000,000-sample process")):
            rate = [r[name]["rate"] for r in rs]
            p99 = [r[name]["p99_ms"] for r in rs]
            section.figures += [
                Figure(f"{w}w {label}: req/s", rate, "req/s", reference=f"GET /healthz {healthz:,.0f} req/s",
                       target="≥ 1,000 req/s", met=common.median(rate) >= 1000),
                Figure(f"{w}w {label}: p50", [r[name]["p50_ms"] for r in rs], "ms", fmt="{:.1f}"),
                Figure(f"{w}w {label}: p99", p99, "ms", target="≤ 25 ms", met=common.median(p99) <= 25, fmt="{:.1f}"),
            ]
        ratio = [r["get_2m"]["p99_ms"] / r["get_1k"]["p99_ms"] for r in rs]
        section.figures.append(Figure(f"{w}w get p99: 2,000,000-sample / 1,000-sample process", ratio, "×",
                                      target="≤ 1.5×", met=common.median(ratio) <= 1.5, fmt="{:.2f}"))
    section.notes = [
        f"Database: {api_load.SERVERS:,} servers × {api_load.PROCESSES_PER_SERVER} processes, "
        f"{seeded.samples:,} samples (one process with {seeded.big_samples:,}, one with {seeded.small_samples:,}, "
        f"the others {max(1, int(api_load.OTHER_SAMPLES * scale))} each; one every {api_load.INTERVAL_S} s, a restart every hour), "
        f"generated by `generate_series` in {seeded.seconds:.0f} s.",
        "`procwatch api` subprocess (uvicorn, uvloop, httptools; rate limiting on, limit raised so it never "
        "answers 429); load from another process: `wrk` (C, one thread, `bench/api_wrk.lua`) when it is on PATH "
        "(`apt-get install wrk`), else `bench/loadgen.py`; generator(s) used in these runs: "
        + ", ".join(sorted({r[n].get("generator", "loadgen") for w in workers for r in runs[w]
                            for n in ("list", "get_1k", "get_2m")})) + "; "
        "32 keep-alive connections, closed loop. **The load generator, the API, PostgreSQL and Redis "
        "share the same 2 cores**, so req/s is bounded by the machine, not by the API alone; GET /healthz "
        "(no database) is the same-run reference for what the HTTP stack + load generator reach.",
        "Query plans of the get route on the 2,000,000-sample process (EXPLAIN ANALYZE, BUFFERS, after the runs):",
        *["```\n-- " + k + "\n" + v + "\n```" for k, v in plans.items()],
    ]
    return section


def run_agent(servers: common.Servers, args) -> Section:
    from bench import agent_cost

    return agent_cost.section(servers, args)


def run_detect(servers: common.Servers, args) -> Section:
    from bench import detect

    return detect.section(servers, args)


def run_notify(servers: common.Servers, args) -> Section:
    from bench import notify

    opts = notify.NotifyOptions(rate=args.notify_rate, channels=args.notify_channels,
                                seconds=8 if args.quick else 20, warmup=2 if args.quick else 3)
    section = Section(
        "Notification latency",
        f"uv run python -m bench notify --notify-rate {opts.rate:g} --notify-channels {opts.channels}  "
        f"# {opts.seconds:g} s window after {opts.warmup:g} s warm-up, channel 0 hangs",
    )
    runs = _repeat("notify", args, lambda: notify.run_once(servers, opts))
    p99 = [r["healthy"]["p99_ms"] for r in runs]
    achieved = [r["rate_achieved"] for r in runs]
    section.figures = [
        Figure("p50 alert event → webhook verified, healthy channels", [r["healthy"]["p50_ms"] for r in runs], "ms",
               fmt="{:.1f}"),
        Figure("p99 alert event → webhook verified, healthy channels", p99, "ms", target="≤ 50 ms",
               met=common.median(p99) <= 50, fmt="{:.1f}"),
        Figure("alerts published", achieved, "alerts/s", reference=f"asked for {opts.rate:,.0f} alerts/s",
               target=f"≥ {0.95 * opts.rate:,.0f} alerts/s", met=common.median(achieved) >= 0.95 * opts.rate),
        Figure("healthy-channel webhooks lost", [r["lost"] for r in runs], "", target="0",
               met=all(r["lost"] == 0 for r in runs)),
    ]
    section.notes = [
        f"{opts.channels} webhook channels, channel i taking the alerts of server i; the bench publishes "
        "AlertEvents on ALERTS round-robin over the servers (JetStream publish, acked) to a real `procwatch "
        "notifier` subprocess; a receiver in another process (uvicorn) verifies every signature with "
        "`standardwebhooks` and notes the arrival time. Channel 0's endpoint accepts and never answers, so "
        "its every attempt waits out the 10 s timeout while the others are measured. Latency = from just "
        "before the publish to the arrival at the receiver (wall clock, same machine), for the healthy "
        f"channels' {sum(r['healthy_sent'] for r in runs):,} alerts; lost = not arrived "
        f"{opts.drain_s:g} s after publishing stopped. Bad signatures: {sum(r['bad_signatures'] for r in runs)}; "
        f"repeats (same webhook-id twice): {sum(r['repeats'] for r in runs)}.",
        "Load average (1 min) when measuring started: " + ", ".join(f"{r['load_1m']:.2f}" for r in runs)
        + ". Publisher, receiver, notifier, PostgreSQL and NATS share the 2 cores.",
    ]
    return section


def run_offline(servers: common.Servers, args) -> Section:
    from bench import offline

    opts = offline.OfflineOptions(servers=args.offline_servers)
    section = Section(
        "Offline detection",
        f"uv run python -m bench offline  # {opts.servers:,} servers, offline_after_s {opts.offline_after_s}, "
        f"1 in {opts.silenced_every} falls silent, each seen every {opts.heartbeat_slices} s before that",
    )
    runs = _repeat("offline", args, lambda: offline.run_once(servers, opts),
                   lambda r: _short({k: v for k, v in r.items() if k != "plans"}))
    p99 = [r["latency"]["p99_ms"] / 1000 for r in runs]
    missed = sum(r["silenced"] - r["fired"] for r in runs)
    extra = sum(r["extra"] for r in runs)
    section.figures = [
        Figure("p50 fire time − deadline", [r["latency"]["p50_ms"] / 1000 for r in runs], "s", fmt="{:.2f}",
               reference=f"{runs[0]['silenced']:,} silenced servers per run"),
        Figure("p99 fire time − deadline", p99, "s", fmt="{:.2f}", target="≤ 2 s",
               met=common.median(p99) <= 2.0),
        Figure("silenced servers that fired (once)", [100 * r["fired"] / r["silenced"] for r in runs], "%",
               reference=f"missed {missed}, extra or repeated events {extra} over all runs",
               target="100 %, none extra", met=missed == 0 and extra == 0, fmt="{:.1f}"),
        Figure("job's due-servers read: execution time", [r["due_ms"] for r in runs], "ms", fmt="{:.2f}",
               reference="buffers " + ", ".join(str(r["due_buffers"]) for r in runs)),
        Figure("job's open-alerts read: execution time", [r["over_ms"] for r in runs], "ms", fmt="{:.2f}",
               reference="buffers " + ", ".join(str(r["over_buffers"]) for r in runs)),
    ]
    section.notes = [
        "Fire time = arrival of the `server_offline` event on a core NATS subscription to `alerts.*.server` "
        "(the bench's callback stamps it); deadline = "
        "the event's occurred_at (last_seen_at + offline_after_s). The job runs every 1 s (± 20 % jitter) in a "
        "real `procwatch alerter`; the heartbeats are SQL updates of a tenth of the fleet per second "
        f"(what ingest writes), stopped for every {opts.silenced_every}th server after the job's first offline_after_s "
        "(its liveness gate). Load average (1 min) when the servers fell silent: "
        + ", ".join(f"{r['load_1m']:.2f}" for r in runs) + ".",
        "Database cost per run of the job at rest (every server seen, nobody due yet): EXPLAIN (ANALYZE, "
        "BUFFERS) of the job's two reads, the statements of procwatch_alerter.repository with the alerter's "
        "parameters; the partial indexes keep both to the due / open rows, never the fleet:",
        *["```\n-- " + k + "\n" + v + "\n```" for k, v in runs[-1]["plans"].items()],
    ]
    return section


def run_sse(servers: common.Servers, args) -> Section:
    from bench import live

    opts = live.LiveOptions(clients=args.sse_clients, users=args.sse_users, rounds=20 if args.quick else 40)
    section = Section(
        "Live updates (SSE)",
        f"uv run python -m bench sse --sse-clients {opts.clients} --sse-users {opts.users}  # {opts.rounds} rounds "
        f"every {opts.interval:g} s, one sample per user per round, 1 API worker",
    )
    runs = _repeat("sse", args, lambda: live.run_once(servers, opts))
    p99 = [r["commit_to_client"]["p99_ms"] for r in runs]
    section.figures = [
        Figure("p50 commit → client", [r["commit_to_client"]["p50_ms"] for r in runs], "ms", fmt="{:.1f}",
               reference="publish → client p50 " + ", ".join(f"{r['publish_to_client']['p50_ms']:.1f}" for r in runs)
                         + " ms"),
        Figure(f"p99 commit → client, {opts.clients:,} clients", p99, "ms", fmt="{:.1f}",
               reference="publish → client p99 " + ", ".join(f"{r['publish_to_client']['p99_ms']:.1f}" for r in runs)
                         + " ms", target="≤ 250 ms", met=common.median(p99) <= 250),
    ]
    section.notes = [
        f"Commit → client = from the SampleRecorded event's arrival on the bench's own subscription to "
        f"`samples.recorded.*` (ingest publishes it right after its commit) to the `sample` event's arrival at "
        f"each of {opts.clients:,} raw-socket SSE clients of GET /events, spread over {opts.users} users (one "
        f"server, one process each), in the bench process (uvloop; time taken in the socket's data callback). "
        f"Publish → client adds ingest (agent sample published → batch → commit). Real `procwatch ingest` and "
        f"`procwatch api` subprocesses, one API worker. Deliveries lost (none within "
        f"{live.ROUND_TIMEOUT_S:g} s, counted as that in the percentiles): "
        + ", ".join(str(r["lost"]) for r in runs) + f" of {opts.clients * opts.rounds:,} per run; streams closed "
        "by the server: " + ", ".join(str(r["closed_streams"]) for r in runs) + "; opening the clients took "
        + ", ".join(f"{r['connect_s']:.1f}" for r in runs) + " s.",
        "Load average (1 min) when the measured rounds began: " + ", ".join(f"{r['load_1m']:.2f}" for r in runs)
        + ". The API, ingest, PostgreSQL, NATS and the 1,000 clients share the 2 cores.",
    ]
    return section


def _short(result: dict) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.1f}"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}={fmt(x)}" for k, x in v.items() if k in ("rate", "p50_ms", "p99_ms")) + "}"
        return str(v)
    return ", ".join(f"{k}={fmt(v)}" for k, v in result.items())


RUNNERS = {"ingest": run_ingest, "alert": run_alert, "alert-maint": run_alert_maint, "api": run_api,
           "agent": run_agent, "detect": run_detect, "notify": run_notify, "offline": run_offline, "sse": run_sse,
           "cluster": run_cluster}

# Reading the figures (rendered under each section at every regeneration; not measurements).
ANALYSIS = {
    "ingest": [
        "Where the time goes now (`uv run python -m bench ingest --runs 1 --py-spy OUT --no-write`, 2026-11-28 "
        "15:47, 69,505 vs 106,140 samples/s ceiling under py-spy; per-process CPU read from /proc every 2 s): "
        "PostgreSQL ≈ 0.75–0.88 of a core, the ingest process ≈ 0.5, nats-server ≈ 0.2. Of ingest's busy time "
        "(startup excluded): building rows, chaining previous values and event structs ≈ 43 %, the NATS client "
        "(reading, header parsing, writing) ≈ 15 %, binary COPY ≈ 10 %, encoding events ≈ 8 %, decoding agent "
        "messages ≈ 7.5 %.",
        "What moved it from 38 % to the figure above (each step measured with this bench): agent messages "
        "decoded and SampleRecorded events encoded with msgspec mirrors of the pydantic contracts "
        "(`procwatch_contracts.fast`, property-tested against the models); the per-process `last_*` values "
        "sent by binary COPY into a temp table instead of seven bound arrays (psycopg's array dumper cost "
        "≈ 20 ms per 2,000 processes); lock ids bound as one array literal; sample ids allocated in blocks "
        "of 1,000 (migration 0004) and handed out across batches; tuples instead of dataclasses for the "
        "thousands of per-batch rows; no replay savepoint for batches of first deliveries; batches taking "
        "their row locks in pull order; event acks read with orjson (`AckedPublisher`).",
        "Round 4, the largest step: a temporary per-batch timeline (every phase of every batch, and "
        "`gc.callbacks`) showed neither ingest (0.65 of a core) nor PostgreSQL (0.6) saturated, yet a batch "
        "started only every 177 ms. CPython's collector ran 47 full collections in a 20 s run, 2.9 s in all, "
        "up to 96 ms each, stalling every batch in flight: the thousands of rows and messages a batch holds "
        "across awaits survived young collections and kept promoting. The services now freeze their startup "
        "objects and collect the young generation after 50,000 net allocations instead of 700 "
        "(`procwatch_runtime.gc_tuning`): 2 full collections per run, a batch every 144 ms, service 56–59k → "
        "71–80k samples/s. Then the pull loop takes what is waiting from the subscription in one go "
        "(`procwatch_messaging.pull.fetch_waiting`) instead of nats-py's task per message: 29 → 15 ms from a "
        "free slot to the next batch, a batch every 127 ms, 75–81k.",
        "The ratio depends on the host and swings from run to run. The raw ceiling runs right after the "
        "service phase on the database it filled, and ranged 87–125k rows/s on this AMD EPYC host today "
        "(checkpoints and autovacuum of the updated rows land in it or not); on an Intel Xeon host it was "
        "≈ 60k. Before round 4, full runs here gave medians of 52, 64, 57, 70 and 58 %; since, 73 % (15:21) "
        "and the run shown. Tried without gain: 2 ingest replicas (44–47k before round 4: the cores are shared "
        "with PostgreSQL), 3 batches in flight, batches of 1,000 messages (faster service, but the ceiling's "
        "transactions grow with it: same ratio). The load generator publishes with core NATS (one flush per "
        "tick), as agents on their own machines would cost this one nothing (docs/decisions.md).",
    ],
    "alert": [
        "What brought p99 down (was 292–411 ms at 10,000 samples/s): natural batching in the shared pull loop "
        "(a batch is whatever waited, handed over at once; before, every message waited up to the batch "
        "timeout: 50 ms in ingest, 20 ms in the alerter), alerts published right after the alerter's commit "
        "(the outbox relay stays the safety net), no transaction for alerter batches that change nothing, "
        "SampleRecorded decoded with msgspec, and ingest's `last_*` update reaching watched_processes by "
        "primary key (the unanalysed temp table had made the planner scan all of watched_processes per "
        "batch). The rest of the tail is the 2 shared cores: ingest, the alerter, PostgreSQL, NATS and the "
        "load generator all run here. Round 4 (CPython's collector tuned in ingest and the alerter, waiting "
        "messages fetched in one go) left this figure where it was: p99 28.6 ms before (runs 28.6 / 28.4 / "
        "32.7), 26.1 and 27.3 ms in the two full runs since.",
    ],
    "offline": [
        "Reading the figures: a server is declared at the first run of the job after its deadline; the job "
        "sleeps 1 s ± 20 % after each run, so the delay is that wait plus the run itself (probe of ingest's "
        "consumer, one transaction, publish), on 2 cores shared with PostgreSQL absorbing the heartbeat "
        "updates. `PROCWATCH_ALERTER_OFFLINE_CHECK_EVERY_S` trades database reads for latency.",
        "The due-servers read touches no server that is not due, but every heartbeat moves "
        "`offline_deadline_at`, leaving an index entry with a past deadline behind until vacuum removes "
        "it: the index scan steps over those (the buffers figure), which is why its cost varies with "
        "autovacuum's timing (run 1 vs run 2), not with the fleet size. Ingest's throttle (one stamp per "
        "server per `PROCWATCH_INGEST_LAST_SEEN_STEP_S`) bounds how many there are.",
    ],
    "api": [
        "With 32 connections in a closed loop, mean latency = 32 / throughput (Little's law): p99 ≤ 25 ms "
        "needs well over 1,280 req/s. The API, PostgreSQL, Redis and wrk share the 2 cores.",
        "What changed this round (each step measured with this bench; docs/decisions.md \"API read path under "
        "load\"): the list and get routes are one SQL statement each (token → user, ownership and rows "
        "together) on a psycopg pool in autocommit with generic plans, instead of ≈ 7 SQLAlchemy round trips; "
        "`recent_restarts` comes from per-process cached runs brought up to date from the newest 100 samples "
        "the statement returns anyway (so the 2,000,000-sample process costs what the 1,000-sample one does); "
        "the rate limit is counted locally and flushed to Redis every 0.25 s; the two routes are answered "
        "before FastAPI's per-request machinery (same functions, same bytes: a test compares both paths); "
        "samples and timestamps are rendered in one pass with orjson.",
        "Round 3: the get statement returns one row, the newest samples as one array per column (a row per "
        "sample had carried the process's columns as NULL), and looks for them in the restart window's "
        "partitions first (pruned when the executor starts), reading every partition only when the window "
        "holds fewer samples than the process has; the seed now creates the 90 daily partitions the longest "
        "plan retention keeps, as production has them (with ~100 partitions and no bound the get statement "
        "cost PostgreSQL ~6x the CPU); the hot path sends its response without the send-tracking wrapper; "
        "the embedded PostgreSQL is reached over its Unix socket (~10 % less CPU per query on both sides "
        "than loopback TCP); with 2 workers each listens on its own SO_REUSEPORT socket (even split of "
        "connections; docs/decisions.md \"API worker processes\").",
        "The read pool holds 4 connections for one worker and 1 per worker for more "
        "(`PROCWATCH_API_READ_POOL_SIZE` sets a total instead): with 10 per worker, more statements ran at "
        "once on PostgreSQL's cores and contended, and 2 workers had twice the 1-worker p99 (29–52 ms); with "
        "2 each, 2 workers' get p99 ranged 17–39 ms over 3-run series, with 1 each 16–21 ms. Since this "
        "round the services also tune CPython's garbage collector (`procwatch_runtime.gc_tuning`; the API "
        "already froze its startup objects); for the API, same-hour series with and without the raised "
        "threshold were within noise (2 workers, get p99 16.8–24.1 vs 19.4–24.8 ms). Left: the 2 cores bound both configurations (2 workers add "
        "≈ 10–15 % req/s); asyncpg for the read pool was measured and rejected (no CPU saved).",
    ],
    "agent": [
        "Where the cost went (this bench, 15 s windows, 2026-12-01, on the code before issue 17): 3.3–3.5 % "
        "CPU and 53.7 MB as the issue measured, with every module compiled at each start "
        "(PYTHONDONTWRITEBYTECODE is set on this machine; the bench now runs the agent with bytecode cached, "
        "as an installed agent has it); with bytecode cached and `procwatch agent` no longer importing the "
        "other commands' dependencies (psycopg) into the agent, the old psutil scan still took 3.7–3.8 % and "
        "39.1 MB. Reading /proc directly (`comm` of every process, `stat` only of the matches; procfs.py) "
        "took CPU to the figure above, and dropping psutil ≈ 1 MB. A cProfile of the agent now (400 "
        "processes, 1 s ticks): opening and reading one `comm` file per process is most of its CPU; the "
        "watch-list request, the publish and pydantic's encoding of one small message are the rest. The RSS "
        "left is Python with asyncio and OpenSSL (≈ 19 MB), nats-py (≈ 6 MB) and pydantic with "
        "pydantic-settings (≈ 11 MB).",
    ],
    "sse": [
        "Where the time goes (cProfile of the hub and the stream path alone, 1,000 streams, 2026-12-01): one "
        "socket write per client per update, uvicorn's `send`, is about half of the API's CPU for a round; the "
        "rest is waking each stream's task and Starlette's send wrappers. Streams wait on an event with no timer "
        "of their own (one heartbeat task for all of them: a timeout per wait had cost ≈ 20 % more CPU per round under the profiler). With "
        "100 clients at load 3.7 the same bench gave p50 2.5 ms, p99 8.6 ms (`--sse-clients 100 --quick --runs "
        "1 --no-write`): the figure grows with the fan-out and with the other processes on the 2 cores (the "
        "1,000 clients run on the same machine).",
    ],
    "detect": [
        "Where the time goes: the agent's share (pidfd wake-up, 5 ms coalescing, a scan of /proc for the "
        "name, the publish) and ingest + alerter (commit, SampleRecorded, alerter commit, ALERTS) are "
        "measured per kill in the same runs (the rows above). On a quiet host both stay near their p50; the "
        "tail comes from CPU contention: the same bench on this host while other test suites ran (load 2-9) "
        "gave runs with p99 70-236 ms, nearly all of it in the ingest + alerter share, never in the agent's "
        "(p99 at most 13 ms).",
    ],
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    machine = common.machine_facts()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = ("quick" if args.quick else "full") + f", {args.runs} run(s)"
    if args.render_only:
        mode = "re-rendered from results.json"
    failed = False
    store = _load_store(args.output)
    args.sections = store["sections"]  # what the benches of this command measured, then the stored rest
    if not args.render_only:
        with common.servers() as servers:
            with servers.nats() as nats_url:
                versions = common.versions(servers.database_url, nats_url)
            for name in args.benches:
                t0 = time.monotonic()
                try:
                    section = RUNNERS[name](servers, args)
                except Exception as exc:
                    failed = True
                    traceback.print_exc()
                    section = Section(name, f"uv run python -m bench {name}", error=f"{type(exc).__name__}: {exc}")
                section.notes.append(f"Run {started}, {mode}; load average at the start of the command "
                                     f"{machine['load_average']}; bench wall time {time.monotonic() - t0:.0f} s.")
                store["sections"][name] = asdict(section)
        machine["load_average"] += " (1/5/15 min, at the start of the last command)"
        store.update(machine=machine, versions=versions, generated=started)
        if not args.no_write:
            _store_path(args.output).write_text(json.dumps(store, indent=1, ensure_ascii=False))
    sections = [Section(**{**d, "figures": [Figure(**f) for f in d["figures"]],
                           "notes": [*d["notes"], *ANALYSIS.get(name, [])]})
                for name in BENCHES if (d := store["sections"].get(name))]
    text = render(
        title="Benchmark results", generated=store.get("generated", started), mode=mode, machine=store["machine"], versions=store["versions"],
        sections=sections,
        preamble=["Every figure is the median of the runs listed next to it; references are measured in the same "
                  "runs. Each section says when and in which mode it was last run (`python -m bench <name>` "
                  "re-runs one section; the others are kept from `results.json`). The machine is shared with "
                  "other engineers' test runs: see the load averages. Earlier hand-run figures are in this "
                  "file's git history."],
    )
    if not args.no_write:
        args.output.write_text(text)
    print(text)
    return 1 if failed else 0


def _store_path(output: Path) -> Path:
    return output.with_name("results.json")


def _load_store(output: Path) -> dict:
    path = _store_path(output)
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    return {"sections": {}}


if __name__ == "__main__":
    sys.exit(main())
