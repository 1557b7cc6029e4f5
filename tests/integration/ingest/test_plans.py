"""The batch statements reach watched_processes by its primary key, whatever the fleet's size:
a full scan per batch would cost in proportion to the fleet, not to the batch."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from procwatch_db.urls import libpq_url
from procwatch_ingest.repository import UPDATE_PROCESSES_FROM_STAGE_SQL, configure_connection
from tests.support.factories import make_server, make_user

pytestmark = pytest.mark.integration


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def test_the_last_field_update_uses_the_primary_key_not_a_scan(database_url):
    server = make_server(database_url, make_user(database_url, "scale"))
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(  # a fleet-sized table, so the planner's choice means something
            "insert into watched_processes (server_id, user_id, process_name)"
            " select %s, %s, 'plan-' || g from generate_series(1, 20000) g", (server.id, server.user_id))
        conn.execute("analyze watched_processes")
        ids = [r[0] for r in conn.execute(
            "select id from watched_processes where server_id = %s order by id limit 50", (server.id,)).fetchall()]
    conn = await psycopg.AsyncConnection.connect(libpq_url(database_url))
    try:
        await configure_connection(conn)
        async with conn.transaction():
            async with conn.cursor() as cur:
                async with cur.copy("copy ingest_last (id, inserted, cnt, cpu, mem, t, oldest) from stdin") as copy:
                    for pid in ids:
                        await copy.write_row((pid, 1, 1, 1.0, 1.0, datetime.now(UTC), None))
                await cur.execute("explain (format json) " + UPDATE_PROCESSES_FROM_STAGE_SQL)
                (plan,) = (await cur.fetchone())[0]
    finally:
        await conn.close()
    scans = {(n["Node Type"], n.get("Relation Name")) for n in _nodes(plan["Plan"])}
    assert ("Seq Scan", "watched_processes") not in scans, scans
    assert any(rel == "watched_processes" and "Index" in kind for kind, rel in scans), scans
