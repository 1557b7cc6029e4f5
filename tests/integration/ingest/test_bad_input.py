"""Bad agent messages go to the dead-letter subject with a reason, are acked, and never block good ones."""

from __future__ import annotations

import uuid

import pytest

from procwatch_contracts import subjects
from tests.integration.ingest.conftest import (
    eventually, now_utc, publish, query, reading, sample_body, stream_messages,
)
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


def _raw(server_id: int, processes_json: str, sampled_at: str | None = None) -> bytes:
    at = sampled_at or now_utc(-5).isoformat().replace("+00:00", "Z")
    return (f'{{"v": 1, "server_id": {server_id}, "agent_version": "1", "sampled_at": "{at}",'
            f' "processes": {processes_json}}}').encode()


async def test_each_bad_message_is_dead_lettered_with_its_reason_and_good_ones_still_land(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    other = make_server(database_url, make_user(database_url))
    pid = make_process(database_url, server, "nginx")
    sid = server.id
    ok = reading("nginx")
    unknown_id = 2_000_000_000 + int(uuid.uuid4().int % 1_000_000)
    cases = {
        "malformed_json": dict(data=b'{"v": 1, "server_id": ', ),
        "wrong_type": dict(data=_raw(sid, '[{"process_name": "nginx", "count": "4", "cpu_pct": 1, "memory_pct": 1,'
                                          ' "oldest_start_unix": null}]'), code="invalid_message"),
        "negative_count": dict(data=sample_body(sid, now_utc(-5), [reading("nginx", count=-1)]), code="invalid_message"),
        "nan_cpu": dict(data=_raw(sid, '[{"process_name": "nginx", "count": 1, "cpu_pct": NaN, "memory_pct": 1,'
                                       ' "oldest_start_unix": null}]')),
        "infinite_memory": dict(data=_raw(sid, '[{"process_name": "nginx", "count": 1, "cpu_pct": 1,'
                                               ' "memory_pct": Infinity, "oldest_start_unix": null}]')),
        "negative_pct": dict(data=sample_body(sid, now_utc(-5), [reading("nginx", cpu=-0.5)]), code="invalid_message"),
        "too_many": dict(data=sample_body(sid, now_utc(-5), [reading(f"p{i}") for i in range(1001)]),
                         code="too_many_processes"),
        "mismatch": dict(data=sample_body(other.id, now_utc(-5), [ok]), code="server_mismatch"),
        "future": dict(data=sample_body(sid, now_utc(+600), [ok]), code="sampled_at_in_future"),
        "no_key": dict(data=sample_body(sid, now_utc(-5), [ok]), key=None, code="missing_credentials"),
        "wrong_key": dict(data=sample_body(sid, now_utc(-5), [ok]), key=other.agent_key, code="unauthorized"),
        "unknown_server": dict(data=sample_body(unknown_id, now_utc(-5), [ok]),
                               subject=subjects.agent_samples(unknown_id), code="unknown_server"),
        "bad_subject": dict(data=sample_body(sid, now_utc(-5), [ok]), subject="agent.samples.x1",
                            code="bad_subject"),
    }
    ids = {}
    before = sum(ingest.stats.deadlettered.values())
    for name, case in cases.items():
        ids[name] = f"bad-{name}-{uuid.uuid4().hex[:8]}"
        await publish(nc, server, case["data"], key=case.get("key", "__server__"), msg_id=ids[name],
                      subject=case.get("subject"))
    good_at = now_utc(-1)
    await publish(nc, server, sample_body(sid, good_at, [ok]))

    await eventually(lambda: query(database_url, "select samples_total from watched_processes where id=%s",
                                   (pid,)) == [(1,)])
    dl = await stream_messages(nc, subjects.DEADLETTER_STREAM, subjects.DEADLETTER_AGENT_SAMPLES, len(cases))
    by_id = {m.headers.get("Procwatch-Original-Msg-Id"): m for m in dl}
    for name, case in cases.items():
        msg = by_id.get(ids[name])
        assert msg is not None, f"{name} was not dead-lettered"
        reason = msg.headers[subjects.REASON_HEADER]
        code = reason.split(":", 1)[0]
        if "code" in case:
            assert code == case["code"], (name, reason)
        else:
            assert code in ("malformed_json", "invalid_message"), (name, reason)
        assert msg.data == case["data"]
        assert msg.headers["Procwatch-Original-Subject"] == case.get("subject", subjects.agent_samples(sid))
        assert "Authorization" not in msg.headers
        assert server.agent_key not in str(msg.headers)
    assert sum(ingest.stats.deadlettered.values()) - before >= len(cases)
    # Only the good message produced a row; the mismatched/unauthorized bodies wrote nothing anywhere.
    assert query(database_url, "select count(*) from process_samples where watched_process_id=%s", (pid,)) == [(1,)]


async def test_dead_lettered_messages_are_acked_not_redelivered(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    before = ingest.stats.messages
    await publish(nc, server, b"garbage")
    await eventually(lambda: ingest.stats.deadlettered["malformed_json"] >= 1 and ingest.stats.messages > before)
    js = nc.jetstream()
    info = await eventually(lambda: _pending_zero(js, ingest.settings.durable))
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def _pending_zero(js, durable):
    info = await js.consumer_info(subjects.AGENT_SAMPLES_STREAM, durable)
    return info if info.num_ack_pending == 0 and info.num_pending == 0 else None
