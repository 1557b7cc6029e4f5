"""Notification latency, for the runner (`uv run python -m bench notify`).

Alert event published on ALERTS -> `procwatch notifier` (subprocess) -> a signed webhook
received and verified (standardwebhooks) by a real HTTP receiver in another process.
1,000 alerts/s spread evenly over 100 webhook channels (one server each: channel i takes the
alerts of server i), while channel 0's endpoint hangs (accepts, never answers: every attempt
waits out the notifier's 10 s timeout). Latency = from just before the event is published to
its arrival at the receiver (wall clock, same machine), for the 99 healthy channels.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.common import (
    Servers, WebhookReceiver, fresh_database, insert_webhook_channel, latency_summary, loadavg_1m, notifier_env,
    service, wait_for_consumer,
)
from procwatch_contracts import subjects

HANG_PATH = "/hook/0"


@dataclass
class NotifyOptions:
    rate: float = 1000.0  # alerts/s
    channels: int = 100  # one of them hangs
    seconds: float = 20.0
    warmup: float = 3.0
    drain_s: float = 15.0  # after publishing stops: how long late webhooks may still arrive


def _setup(url: str, port: int, channels: int) -> tuple[str, int, list[tuple[int, str]]]:
    """A user, `channels` servers and one webhook channel per server. Returns (secret, user id,
    [(server id, hostname)])."""
    import psycopg

    from procwatch_db import accounts
    from procwatch_db.urls import libpq_url
    from procwatch_domain import crypto
    from procwatch_domain.secrets import hash_secret, new_agent_key

    secret = crypto.new_webhook_secret()
    servers = []
    with psycopg.connect(libpq_url(url)) as conn:
        user_id = accounts.create_user(conn, f"bench-notify-{uuid.uuid4().hex[:6]}@example.test", "scale")
        for i in range(channels):
            hostname = f"notify-{i:03d}"
            (sid,) = conn.execute("insert into servers (user_id, hostname, agent_key_hash) values (%s, %s, %s)"
                                  " returning id", (user_id, hostname, hash_secret(new_agent_key()))).fetchone()
            insert_webhook_channel(conn, user_id, f"bench-{i}", f"http://127.0.0.1:{port}/hook/{i}", secret, [sid])
            servers.append((sid, hostname))
    return secret, user_id, servers


async def _publish(nats_url: str, user_id: int, servers: list[tuple[int, str]], opts: NotifyOptions,
                   seconds: float) -> dict[str, tuple[float, int]]:
    """Publish at `opts.rate` for `seconds`, round-robin over the servers. {id: (sent_at, channel index)}."""
    import nats

    from procwatch_contracts.messages import AlertEvent, AlertProcess, AlertServer

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sent: dict[str, tuple[float, int]] = {}
    tick = 0.01
    per_tick = opts.rate * tick
    n = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            tick_start = time.monotonic()
            due = int((tick_start - started) / tick * per_tick) + 1 - n
            batch = []
            for _ in range(max(0, due)):
                idx = n % len(servers)
                sid, hostname = servers[idx]
                at = datetime.now(UTC)
                event = AlertEvent(id=f"bench-{n}-{uuid.uuid4().hex[:8]}", type="process_down", state="firing",
                                   occurred_at=at, user_id=user_id, server=AlertServer(id=sid, hostname=hostname),
                                   process=AlertProcess(id=n, process_name=f"p{n}"), value=0.0)
                batch.append((event, idx))
                n += 1
            futures = []
            for event, idx in batch:
                sent[event.id] = (time.time(), idx)
                futures.append(js.publish(subjects.alerts(event.server.id, event.process.id),
                                          event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id}))
            if futures:
                await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - tick_start)))
    finally:
        await nc.close()
    return sent


def run_once(servers: Servers, opts: NotifyOptions) -> dict:
    from procwatch.embedded import free_port

    with servers.nats() as nats_url, fresh_database(servers.database_url, "procwatch_bench_notify") as url:
        port = free_port()
        secret, user_id, fleet = _setup(url, port, opts.channels)
        with WebhookReceiver(port, secret, servers.tmp, hang_path=HANG_PATH) as receiver, \
                service(["notifier"], notifier_env(url, nats_url),
                        servers.tmp / f"notify-notifier-{time.monotonic_ns()}.log"):
            asyncio.run(wait_for_consumer(nats_url, subjects.ALERTS_STREAM, "notifier"))
            asyncio.run(_publish(nats_url, user_id, fleet, opts, opts.warmup))
            load_avg = loadavg_1m()
            sent = asyncio.run(_publish(nats_url, user_id, fleet, opts, opts.seconds))
            time.sleep(opts.drain_s)
    got = receiver.result
    arrivals = got.arrivals
    healthy = {i: v for i, v in sent.items() if v[1] != 0}
    latencies = [arrivals[i] - at for i, (at, _) in healthy.items() if i in arrivals]
    lost = sum(1 for i in healthy if i not in arrivals)
    return {
        "healthy": latency_summary(latencies) if latencies else None,
        "sent": len(sent),
        "rate_achieved": len(sent) / opts.seconds,
        "healthy_sent": len(healthy),
        "lost": lost,
        "bad_signatures": got.bad,
        "repeats": got.repeats,
        "load_1m": load_avg,
    }
