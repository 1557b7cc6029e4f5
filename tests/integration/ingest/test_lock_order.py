"""Batches handled at once take their row locks in the order they were pulled: a later batch that
gets ahead (its COPY finished first) must not lock and commit first, or the earlier batch's samples
of the same process would land behind `last_sample_at` and never be evaluated for alerts."""

from __future__ import annotations

import asyncio

import orjson
import psycopg
import pytest

from procwatch_contracts import subjects
from procwatch_db.urls import libpq_url
from procwatch_ingest.repository import IngestRepository, configure_connection
from procwatch_ingest.service import Incoming, IngestService, LockOrder
from tests.integration.ingest.conftest import eventually, now_utc, reading, sample_body
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


class GatedRepository(IngestRepository):
    """Holds the batch's COPY until `gate` opens; records when it locks rows."""

    def __init__(self, conn, gate: asyncio.Event | None, events: list[str], name: str) -> None:
        super().__init__(conn)
        self.gate, self.events, self.name = gate, events, name

    async def insert_samples(self, rows, ids, *, may_be_replay=True):
        if self.gate is not None:
            await self.gate.wait()
        result = await super().insert_samples(rows, ids, may_be_replay=may_be_replay)
        self.events.append(f"{self.name} inserted")
        return result

    async def lock_processes(self, process_ids):
        self.events.append(f"{self.name} locking")
        return await super().lock_processes(process_ids)


async def test_a_later_batch_that_gets_ahead_waits_to_lock_until_the_earlier_one_has(database_url):
    server = make_server(database_url, make_user(database_url))
    make_process(database_url, server, "nginx")
    earlier, later = now_utc(-20), now_utc(-10)
    service = IngestService()
    order = LockOrder()
    gate, events = asyncio.Event(), []
    conns = [await psycopg.AsyncConnection.connect(libpq_url(database_url)) for _ in range(2)]
    for conn in conns:
        await configure_connection(conn)

    async def batch(conn, at, gate, name, turn):
        incoming = Incoming(subjects.agent_samples(server.id), {"Authorization": f"Bearer {server.agent_key}"},
                            sample_body(server.id, at, [reading("nginx", 1, oldest=int(at.timestamp()))]))
        async with conn.transaction():
            repo = GatedRepository(conn, gate, events, name)
            plan = await service.prepare(repo, service.screen([incoming]))
            result = await service.store(repo, plan, may_be_replay=False, lock_turn=turn)
        return result

    try:
        first_turn, second_turn = order.turn(), order.turn()  # pulled in this order
        first = asyncio.create_task(batch(conns[0], earlier, gate, "first", first_turn))
        second = asyncio.create_task(batch(conns[1], later, None, "second", second_turn))
        # Once its COPY is done, a batch goes on to lock in the same step unless it waits for its
        # turn: so right when "second inserted" shows, "second locking" must not.
        await eventually(lambda: "second inserted" in events)
        assert events == ["second inserted"]
        gate.set()
        first_result, second_result = await asyncio.wait_for(asyncio.gather(first, second), 10)
    finally:
        for conn in conns:
            await conn.close()

    assert events.index("first locking") < events.index("second locking")
    (a,) = [s for e in first_result.events for s in _samples(e.payload)]
    (b,) = [s for e in second_result.events for s in _samples(e.payload)]
    assert a["is_latest"] and a["recorded_at"].startswith(earlier.strftime("%Y-%m-%dT%H:%M:%S"))
    assert b["is_latest"] and b["previous_recorded_at"] == a["recorded_at"]


def _samples(payload: bytes) -> list[dict]:
    return orjson.loads(payload)["samples"]
