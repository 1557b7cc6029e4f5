"""Schemathesis against the API's own OpenAPI document, served by a real uvicorn over real servers.

Every operation of the document is fuzzed (positive and negative data), authenticated with a
real token, with path ids drawn half the time from rows that exist (servers with processes,
samples and alert history). Each response must: not be a 5xx, use a documented status code,
a documented content type and headers, and match the documented body schema. And the document
must say exactly what the server enforces: data the document allows (positive) is never refused
as invalid (400 validation_failed), data it forbids (negative) is never accepted (2xx).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procwatch_api.app import create_app
from procwatch_api.settings import ApiSettings
from procwatch_db.urls import libpq_url
from procwatch_domain import crypto
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 30
# Responses that never end (server-sent events) have no body to validate: GET /events is tested in
# tests/integration/api/test_live_events.py.
STREAMS = {("GET", "/events")}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


def _operations() -> list[tuple[str, str, str]]:
    """(METHOD, path, mode) for every operation of the document; deletes last so the rows live through the
    rest. Negative data only where the operation takes input (parameters or a body)."""
    doc = create_app(ApiSettings(database_url="postgresql://unused/none", redis_url="redis://unused:1/0",
                                 nats_url="nats://unused:1")).openapi()
    ops = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if (method.upper(), path) in STREAMS:
                continue
            modes = ["positive"] + (["negative"] if op.get("parameters") or op.get("requestBody") else [])
            ops += [(method.upper(), path, mode) for mode in modes]
    # Deletes last, deepest first (a process before its server).
    return sorted(ops, key=lambda op: (op[0] == "DELETE", -op[1].count("/") if op[0] == "DELETE" else 0,
                                       op[1], op[0], op[2] != "positive"))


OPERATIONS = _operations()
# Fields whose validity depends on stored rows or DNS, not on the document (see the run below), or
# on another field: `min_count` must not exceed `max_count` (the body's or the stored one), which
# JSON Schema cannot state (docs/api.md, "Input rules").
STATEFUL_FIELDS = {"cursor", "url", "to", "servers", "min_count"}
# A maintenance window's fields with a grammar JSON Schema does not hold (an RRULE, an ISO 8601 time
# with or without offset, an IANA zone name), or rules between fields and stored rows (a one-off
# window's end after its start, the user's processes).
STATEFUL_FIELDS |= {"rrule", "starts_at", "ends_at", "timezone", "processes", "duration_s"}
# Operations whose generated positive bodies need not reach a success: a process create (the name
# may be taken, the plan full); a channel create (a generated URL hardly ever passes the SSRF check);
# a maintenance window's create or update (a generated RRULE or time hardly ever parses).
NO_SUCCESS_EXPECTED = {("POST", "/servers/{server_id}/processes"), ("POST", "/channels"),
                       ("POST", "/maintenance-windows"), ("PUT", "/maintenance-windows/{window_id}")}


@pytest.fixture(scope="module", autouse=True)
def secrets_key():
    """The channels' encryption key, for the API running in this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(crypto.SECRETS_KEY_ENV, crypto.new_key())
        yield


@pytest.fixture(scope="module")
def world(api, database_url):
    """A user with real rows: 3 servers x 3 processes, samples and alert history; webhook channels
    (to a loopback URL: a test send is refused at once, nothing leaves the machine) with deliveries."""
    user = make_user(database_url, "pro")
    servers, processes = [], []
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(libpq_url(database_url)) as conn:
        for _ in range(3):
            server = make_server(database_url, user)
            servers.append(server.id)
            for name in ("nginx", "postgres", "redis-server"):
                pid = make_process(database_url, server, name)
                processes.append((server.id, pid))
                for i in range(3):
                    conn.execute(
                        "insert into process_samples (watched_process_id, count, cpu_pct, memory_pct,"
                        " oldest_start_unix, recorded_at) values (%s, %s, 12.5, 3.25, %s, %s)",
                        (pid, i, 1716566400 + i if i else None, now - timedelta(minutes=3 - i)))
                conn.execute(
                    "update watched_processes set samples_total = 3, last_count = 2, last_cpu_pct = 12.5,"
                    " last_memory_pct = 3.25, last_sample_at = %s, last_oldest_start_unix = %s where id = %s",
                    (now - timedelta(minutes=1), 1716566402, pid))
                conn.execute(
                    "insert into alerts (watched_process_id, server_id, user_id, type, state, value, threshold,"
                    " started_at, event_id) values (%s, %s, %s, 'process_cpu_high', 'firing', 91.5, 80, %s, %s)",
                    (pid, server.id, user.id, now, f"fuzz-{pid}"))
        channels = [
            conn.execute(
                "insert into channels (user_id, type, name, target_encrypted, target_hint, secret_encrypted)"
                " values (%s, 'webhook', 'fuzz', %s, 'http://127.0.0.1:9/…***', %s) returning id",
                (user.id, crypto.encrypt("http://127.0.0.1:9/hook"), crypto.encrypt(crypto.new_webhook_secret())),
            ).fetchone()[0]
            for _ in range(2)
        ]
        for channel_id in channels:
            conn.execute(
                "insert into deliveries (channel_id, alert_id, alert_type, alert_state, payload, status)"
                " values (%s, %s, 'process_down', 'firing', '{}', 'delivered')", (channel_id, f"fuzz-{channel_id}"))
        windows = [
            conn.execute(
                "insert into maintenance_windows (user_id, name, starts_at, ends_at, effective_until)"
                " values (%s, 'fuzz', %s, %s, %s) returning id",
                (user.id, now - timedelta(hours=1), now + timedelta(days=1), now + timedelta(days=1)),
            ).fetchone()[0]
            for _ in range(2)
        ]
        alerts = [r[0] for r in conn.execute("select id from alerts where user_id = %s", (user.id,))]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {user.token}"
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    return {"user": user, "servers": servers, "processes": processes, "channels": channels, "session": session,
            "schema": schema, "counts": {}, "windows": windows, "alerts": alerts}


# Path parameter -> the world's rows of that kind.
_REAL = {"{channel_id}": ("channel_id", "channels"), "{window_id}": ("window_id", "windows"),
         "{alert_id}": ("alert_id", "alerts")}


def _real_ids(world, path: str) -> dict:
    for token, (name, rows) in _REAL.items():
        if token in path:
            return {name: str(random.Random(path).choice(world[rows]))}
    sid, pid = random.Random(path).choice(world["processes"])
    ids = {"server_id": str(sid)}
    if "{process_id}" in path:
        ids["process_id"] = str(pid)
    return ids


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS, ids=lambda v: v)
def test_operation_conforms_and_never_5xx(world, api, method, path, mode):
    mode = GenerationMode(mode)
    operation = world["schema"][path][method]
    strategies = [operation.as_strategy(generation_mode=mode)]
    if ("{server_id}" in path or any(token in path for token in _REAL)) and mode == GenerationMode.POSITIVE:
        # Half the positive cases address rows that exist, so the 200/201/402/409 paths are fuzzed too.
        # (Negative cases keep their generated ids: pinned real ids would leave some valid.)
        strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=_real_ids(world, path)))
    statuses: list[int] = []
    misjudged: list[tuple] = []

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def run(case):
        response = case.call_and_validate(base_url=api.base_url, session=world["session"], checks=CHECKS)
        statuses.append(response.status_code)
        # The documented exceptions: a cursor is opaque, so one not handed out by the server fits the
        # document's plain string but is refused; a channel's url is refused by what its host resolves to
        # (SSRF), `to` on a channel that takes a url, `servers` listing servers the user does not own, and
        # `min_count` above `max_count`.
        refused_as_invalid = response.status_code == 400 and not {
            issue["field"] for issue in response.json()["issues"]} <= STATEFUL_FIELDS
        accepted = 200 <= response.status_code < 300
        # A negative case whose only violation is in the headers (a missing Authorization) is sent with
        # the session's valid token anyway: its data is valid, so it is not judged.
        negative_data = {location for location, component in case.meta.components.items()
                         if component.mode == GenerationMode.NEGATIVE} - {ParameterLocation.HEADER}
        if (mode == GenerationMode.POSITIVE and refused_as_invalid) or (
                mode == GenerationMode.NEGATIVE and negative_data and accepted):
            misjudged.append((response.status_code, case.path_parameters, case.query, case.body, response.text[:300]))

    run()
    assert statuses, "no case was sent"
    assert max(statuses) < 500
    assert not misjudged, f"{mode.value} data the server judged otherwise than the document: {misjudged[:5]}"
    if mode == GenerationMode.POSITIVE and (method, path) not in NO_SUCCESS_EXPECTED:
        # Positive data on real rows reaches the success path at least once.
        assert any(200 <= s < 300 for s in statuses), (method, path, sorted(set(statuses)))
