"""Finding 4 (issue 14): agent keys rested in the broker for a day.

Every agent message carries `Authorization: Bearer <agent key>` (broker contract v1). AGENT_SAMPLES
now keeps a message only until its consumers (ingest) ack it, so after ingest has stored a sample
nothing readable through the JetStream API still holds the key (and only the services user may
use that API at all: tests/security/test_embedded_servers.py)."""

from __future__ import annotations

import nats
import psycopg
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from procwatch.embedded import EmbeddedNats
from procwatch_contracts import subjects
from procwatch_db.urls import libpq_url
from procwatch_ingest.app import IngestApp
from tests.integration.ingest.conftest import eventually, ingest_settings, now_utc, publish, reading, sample_body
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


def last_count(database_url: str, process_id: int) -> int | None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute("select last_count from watched_processes where id = %s", (process_id,)).fetchone()
    return row[0] if row else None


@pytest.fixture
def own_nats(tmp_path):
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


async def _everything_stored(js, stream: str) -> list:
    """Every message the stream still holds, read back as an attacker with API access would."""
    psub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    try:
        return await psub.fetch(1000, timeout=1)
    except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when nothing is left
        return []
    finally:
        await psub.unsubscribe()


async def test_no_agent_key_is_readable_in_the_broker_after_ingest(own_nats, database_url):
    user = make_user(database_url)
    server = make_server(database_url, user)
    pid = make_process(database_url, server, "nginx")
    app = IngestApp(ingest_settings(database_url, own_nats.url, deliver_policy="all"))
    await app.start()
    nc = await nats.connect(own_nats.url)
    try:
        js = nc.jetstream()
        await publish(nc, server, sample_body(server.id, now_utc(-5), [reading("nginx")]))
        await publish(nc, server, b"not json")  # dead-lettered: its copy must not carry the key either
        assert await eventually(lambda: last_count(database_url, pid) == 1, timeout=20)
        assert await eventually(lambda: sum(app.stats.deadlettered.values()) >= 1, timeout=20)

        async def drained():
            return (await js.stream_info(subjects.AGENT_SAMPLES_STREAM)).state.messages == 0

        assert await eventually(drained, timeout=20)
        for stream in (subjects.AGENT_SAMPLES_STREAM, subjects.DEADLETTER_STREAM, subjects.SAMPLE_EVENTS_STREAM):
            for msg in await _everything_stored(js, stream):
                assert server.agent_key.encode() not in msg.data, stream
                assert server.agent_key not in str(msg.headers or {}), stream
    finally:
        await nc.close()
        await app.stop()
