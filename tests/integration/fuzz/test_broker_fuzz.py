"""Hypothesis-generated agent messages through the real broker into a running ingest.

Valid samples, contract-breaking mutations of valid samples (wrong types, huge or negative values,
missing/extra fields, NaN), random JSON, unicode text and raw binary are published to
`agent.samples.<id>` with unique `Nats-Msg-Id`s. The oracle is the contract itself
(`AgentSample.model_validate_json`) plus the credentials sent. Afterwards: every invalid message
is in the dead-letter stream exactly once with a known `Procwatch-Reason`, every valid reading of
a watched name is stored exactly once with its values, nothing invalid is stored, and the
consumer has nothing pending or unacked.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from procwatch_contracts import subjects
from procwatch_contracts.messages import AgentSample
from procwatch_ingest.app import IngestApp
from procwatch_ingest.inbound import REASON_CODES
from pydantic import ValidationError

from tests.integration.ingest.conftest import eventually, ingest_settings, query, stream_messages
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration

N_MESSAGES = 200
NAMES = ["nginx", "postgres", "ünïcødé-名前", "a" * 100]
UNKNOWN = st.text(min_size=1, max_size=100).filter(lambda s: s not in NAMES)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)

reading = st.fixed_dictionaries({
    "process_name": st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), st.sampled_from(NAMES), UNKNOWN),
    "count": st.integers(min_value=0, max_value=2**31 - 1),
    "cpu_pct": st.floats(min_value=0, max_value=1e6, allow_nan=False),
    "memory_pct": st.floats(min_value=0, max_value=1e6, allow_nan=False),
    "oldest_start_unix": st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
})
valid_body = st.fixed_dictionaries({
    "v": st.just(1),
    "agent_version": st.text(min_size=1, max_size=64),
    "processes": st.lists(reading, max_size=6, unique_by=lambda r: r["process_name"]),
})
TOP_FIELDS = ["v", "server_id", "agent_version", "sampled_at", "processes"]
READING_FIELDS = ["process_name", "count", "cpu_pct", "memory_pct", "oldest_start_unix"]
mutation = st.one_of(
    st.tuples(st.just("replace"), st.sampled_from(TOP_FIELDS), json_values),
    st.tuples(st.just("replace_reading"), st.sampled_from(READING_FIELDS), json_values),
    st.tuples(st.just("drop"), st.sampled_from(TOP_FIELDS), st.none()),
    st.tuples(st.just("drop_reading"), st.sampled_from(READING_FIELDS), st.none()),
    st.tuples(st.just("extra"), st.text(min_size=1, max_size=10).filter(lambda k: k not in TOP_FIELDS), json_values),
    st.tuples(st.just("replace_reading"), st.sampled_from(["count", "cpu_pct", "memory_pct", "oldest_start_unix"]),
              st.sampled_from([-1, 2**31, 2**63, 10**30, -0.001, math.nan, math.inf, "4", True])),
)
# Kinds, weighted by repetition (st.one_of would collapse identical branches).
KINDS = ["valid"] * 8 + ["mutated"] * 6 + ["json", "text", "binary", "no_key", "wrong_key"] * 2
BY_KIND = {
    "valid": st.tuples(st.just("valid"), valid_body, st.none()),
    "mutated": st.tuples(st.just("mutated"), valid_body, mutation),
    "json": st.tuples(st.just("json"), json_values, st.none()),
    "text": st.tuples(st.just("text"), st.text(max_size=200), st.none()),
    "binary": st.tuples(st.just("binary"), st.binary(max_size=300), st.none()),
    "no_key": st.tuples(st.just("no_key"), valid_body, st.none()),
    "wrong_key": st.tuples(st.just("wrong_key"), valid_body, st.none()),
}
message = st.sampled_from(KINDS).flatmap(BY_KIND.__getitem__)


def generate_messages(n: int) -> list[tuple]:
    out: list[tuple] = []

    @settings(max_examples=n, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(message)
    def collect(m):
        out.append(m)

    collect()
    return out


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def build(kind: str, payload, mut, server_id: int, at: datetime) -> bytes:
    if kind in ("text", "binary", "json"):
        if kind == "binary":
            return payload
        return payload.encode("utf-8", "surrogatepass") if kind == "text" else json.dumps(payload).encode()
    body = {"v": payload["v"], "server_id": server_id, "agent_version": payload["agent_version"],
            "sampled_at": iso(at), "processes": [dict(r) for r in payload["processes"]]}
    if mut is not None:
        op, field, value = mut
        if op == "replace":
            body[field] = value
        elif op == "drop":
            body.pop(field)
        elif op == "extra":
            body[field] = value
        else:
            if not body["processes"]:
                body["processes"].append({"process_name": "nginx", "count": 1, "cpu_pct": 1.0, "memory_pct": 1.0,
                                          "oldest_start_unix": None})
            target = body["processes"][-1]
            if op == "replace_reading":
                target[field] = value
            else:
                target.pop(field)
    return json.dumps(body).encode()


def contract_valid(data: bytes) -> AgentSample | None:
    try:
        return AgentSample.model_validate_json(data)
    except ValidationError:
        return None


@pytest.fixture(scope="module")
async def ingest(database_url, nats_url):
    app = IngestApp(ingest_settings(database_url, nats_url))
    await app.start()
    yield app
    await app.stop()


async def test_fuzzed_agent_messages_are_stored_or_dead_lettered_never_crash(ingest, database_url, nats_url):
    import nats

    user = make_user(database_url)
    server = make_server(database_url, user)
    other = make_server(database_url, user)
    pids = {name: make_process(database_url, server, name) for name in NAMES}
    messages = generate_messages(N_MESSAGES)
    kinds = {k for k, _, _ in messages}
    assert {"valid", "mutated", "binary", "json"} <= kinds, kinds

    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    expected_dead: dict[str, bytes] = {}
    expected_rows: dict[tuple[int, datetime], tuple] = {}
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for i, (kind, payload, mut) in enumerate(messages):
            at = base + timedelta(seconds=i)
            data = build(kind, payload, mut, server.id, at)
            msg_id = f"fuzz-{i}-{uuid.uuid4().hex[:8]}"
            key = {"no_key": None, "wrong_key": other.agent_key}.get(kind, server.agent_key)
            headers = {"Nats-Msg-Id": msg_id}
            if key is not None:
                headers["Authorization"] = f"Bearer {key}"
            await js.publish(subjects.agent_samples(server.id), data, headers=headers)
            sample = contract_valid(data)
            if sample is None or key != server.agent_key:
                expected_dead[msg_id] = data
            else:
                for r in sample.processes:
                    if r.process_name in pids:
                        expected_rows[(pids[r.process_name], sample.sampled_at)] = (
                            r.count, r.cpu_pct, r.memory_pct, r.oldest_start_unix)
        counts = (len(expected_dead), len(expected_rows))
        assert min(counts) >= N_MESSAGES // 10, counts  # the mix really has both kinds (a healthy share of each)

        ids = tuple(pids.values())
        stored_sql = ("select watched_process_id, recorded_at, count, cpu_pct, memory_pct, oldest_start_unix"
                      " from process_samples where watched_process_id = any(%s)")
        await eventually(lambda: len(query(database_url, stored_sql, (list(ids),))) >= len(expected_rows), 30)
        dead = await stream_messages(nc, subjects.DEADLETTER_STREAM, subjects.DEADLETTER_AGENT_SAMPLES,
                                     len(expected_dead), timeout=30)
        ours = [m for m in dead if (m.headers or {}).get("Procwatch-Original-Msg-Id") in expected_dead]
        by_id = {m.headers["Procwatch-Original-Msg-Id"]: m for m in ours}
        assert len(ours) == len(by_id) == len(expected_dead), "missing or duplicated dead letters"
        for msg_id, m in by_id.items():
            code = m.headers[subjects.REASON_HEADER].split(":", 1)[0]
            assert code in REASON_CODES, m.headers
            assert m.data == expected_dead[msg_id]
            assert "Authorization" not in m.headers
        codes = {m.headers[subjects.REASON_HEADER].split(":", 1)[0] for m in ours}
        assert {"malformed_json", "invalid_message", "missing_credentials", "unauthorized"} <= codes, codes

        rows = query(database_url, stored_sql, (list(ids),))
        got = {(pid, at): (c, cpu, mem, start) for pid, at, c, cpu, mem, start in rows}
        assert len(rows) == len(got) == len(expected_rows)
        assert got == expected_rows
        totals = dict(query(database_url, "select id, samples_total from watched_processes where id = any(%s)",
                            (list(ids),)))
        for pid in ids:
            assert totals[pid] == sum(1 for (p, _) in expected_rows if p == pid)

        async def settled():
            info = await js.consumer_info(subjects.AGENT_SAMPLES_STREAM, ingest.settings.durable)
            return info.num_pending == 0 and info.num_ack_pending == 0
        await eventually(settled, 10)
    finally:
        await nc.close()
