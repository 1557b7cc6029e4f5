"""Ingest refuses samples outside sane bounds (issue 14, finding 10), to the dead-letter stream
with a reason, and stores nothing of them: a `sampled_at` older than the owner's plan keeps
samples (year 1, 1970, two days ago on a one-day plan), and percentages beyond the documented
bounds of the contracts (`cpu_pct: 1e300`). Real NATS and PostgreSQL; docs/ingest.md,
"Sample bounds"."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from procwatch_contracts import subjects
from tests.integration.ingest.conftest import (  # noqa: F401  (ingest, nc: fixtures)
    eventually, ingest, nc, now_utc, publish, query, reading, sample_body, stream_messages,
)
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration

TWO_DAYS_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
# Beyond the documented bounds (cpu_pct ≤ 1e7, memory_pct ≤ 1e6; the exact edges are unit-tested
# in tests/unit/ingest/test_inbound.py), and a busy but real reading within them.
CPU_BEYOND, MEMORY_BEYOND = 2e7, 2e6
BUSY_CPU, BUSY_MEMORY = 6400.0, 180.0


async def test_out_of_bounds_samples_are_dead_lettered_and_never_stored(ingest, nc, database_url):
    hobby = make_server(database_url, make_user(database_url, plan="hobby"))  # keeps samples 1 day
    pro = make_server(database_url, make_user(database_url, plan="pro"))  # 7 days
    hobby_pid = make_process(database_url, hobby, "nginx", alert_on_cpu=True)
    pro_pid = make_process(database_url, pro, "nginx")
    ok = reading("nginx")
    cases = {
        "year 1": (sample_body(hobby.id, datetime(1, 1, 1, tzinfo=UTC), [ok]), "sampled_at_too_old"),
        "1970": (sample_body(hobby.id, datetime(1970, 1, 1, tzinfo=UTC), [ok]), "sampled_at_too_old"),
        "beyond the plan": (sample_body(hobby.id, TWO_DAYS_AGO, [ok]), "sampled_at_too_old"),
        "cpu 1e300": (sample_body(hobby.id, now_utc(-30), [reading("nginx", cpu=1e300)]), "invalid_message"),
        "cpu beyond": (sample_body(hobby.id, now_utc(-20), [reading("nginx", cpu=CPU_BEYOND)]),
                       "invalid_message"),
        "memory beyond": (sample_body(hobby.id, now_utc(-10), [reading("nginx", mem=MEMORY_BEYOND)]),
                          "invalid_message"),
    }
    ids = {}
    for name, (data, _) in cases.items():
        ids[name] = f"bounds-{uuid.uuid4().hex[:8]}"
        await publish(nc, hobby, data, msg_id=ids[name])
    # Within bounds: stored (two days ago is fine on a seven-day plan).
    await publish(nc, pro, sample_body(pro.id, TWO_DAYS_AGO, [ok]))
    await publish(nc, hobby, sample_body(hobby.id, now_utc(-1), [reading("nginx", cpu=BUSY_CPU, mem=BUSY_MEMORY)]))

    await eventually(lambda: query(database_url, "select samples_total from watched_processes where id = %s",
                                   (pro_pid,)) == [(1,)])
    await eventually(lambda: query(database_url, "select samples_total from watched_processes where id = %s",
                                   (hobby_pid,)) == [(1,)])
    dl = await stream_messages(nc, subjects.DEADLETTER_STREAM, subjects.DEADLETTER_AGENT_SAMPLES, len(cases))
    by_id = {m.headers.get("Procwatch-Original-Msg-Id"): m for m in dl}
    for name, (data, code) in cases.items():
        msg = by_id.get(ids[name])
        assert msg is not None, f"{name} was not dead-lettered"
        reason = msg.headers[subjects.REASON_HEADER]
        assert reason.split(":", 1)[0] == code, (name, reason)
        assert msg.data == data
    assert "1-day retention" in by_id[ids["year 1"]].headers[subjects.REASON_HEADER]
    assert "cpu_pct" in by_id[ids["cpu 1e300"]].headers[subjects.REASON_HEADER]
    assert "memory_pct" in by_id[ids["memory beyond"]].headers[subjects.REASON_HEADER]
    # Only the in-bounds samples are rows; nothing landed in the default partition or at 1e300.
    assert query(database_url, "select cpu_pct, memory_pct from process_samples where watched_process_id = %s",
                 (hobby_pid,)) == [(BUSY_CPU, BUSY_MEMORY)]
    assert query(database_url, "select recorded_at from process_samples where watched_process_id = %s",
                 (pro_pid,)) == [(TWO_DAYS_AGO,)]
