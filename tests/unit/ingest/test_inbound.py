"""Pure checks on one agent message: every dead-letter reason that needs no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from procwatch_contracts.messages import MAX_CPU_PCT, MAX_MEMORY_PCT
from procwatch_ingest import inbound
from procwatch_ingest.inbound import Accepted, Rejected, check_message

pytestmark = pytest.mark.unit

NOW = datetime(2026, 5, 24, 18, 41, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)
KEY = {"Authorization": "Bearer pwa_secret"}


def body(server_id=12, sampled_at="2026-05-24T18:41:00Z", processes=None, **extra) -> bytes:
    doc = {"v": 1, "server_id": server_id, "agent_version": "2.4.1", "sampled_at": sampled_at,
           "processes": processes if processes is not None else [
               {"process_name": "nginx", "count": 4, "cpu_pct": 12.4, "memory_pct": 8.1,
                "oldest_start_unix": 1716566400}]}
    doc.update(extra)
    return orjson.dumps(doc)


def reading(**over):
    r = {"process_name": "nginx", "count": 1, "cpu_pct": 1.0, "memory_pct": 1.0, "oldest_start_unix": None}
    r.update(over)
    return r


def check(data, subject="agent.samples.12", headers=KEY):
    return check_message(subject, headers, data, NOW, FIVE_MIN)


def code(result) -> str:
    assert isinstance(result, Rejected), result
    return result.code


def test_a_good_message_is_accepted_with_its_key():
    result = check(body())
    assert isinstance(result, Accepted)
    assert result.agent_key == "pwa_secret" and result.sample.processes[0].count == 4


def test_count_zero_with_null_start_is_valid():
    assert isinstance(check(body(processes=[reading(count=0, cpu_pct=0, memory_pct=0)])), Accepted)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", inbound.MALFORMED_JSON),
        (b"", inbound.MALFORMED_JSON),
        (body(server_id="12"), inbound.INVALID_MESSAGE),  # strict: no coercion
        (body(processes=[reading(count="4")]), inbound.INVALID_MESSAGE),
        (body(processes=[reading(count=-1)]), inbound.INVALID_MESSAGE),
        (body(processes=[reading(cpu_pct=-0.1)]), inbound.INVALID_MESSAGE),
        (body(processes=[reading(memory_pct=-5)]), inbound.INVALID_MESSAGE),
        (body(processes=[reading(process_name="")]), inbound.INVALID_MESSAGE),
        (body(v=2), inbound.INVALID_MESSAGE),
        (body(extra_field=1), inbound.INVALID_MESSAGE),
        (body(sampled_at="2026-05-24T18:41:00"), inbound.INVALID_MESSAGE),  # naive time
        (body(processes=[reading(process_name=f"p{i}") for i in range(1001)]), inbound.TOO_MANY_PROCESSES),
    ],
)
def test_bad_bodies(data, expected):
    assert code(check(data)) == expected


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinite_percentages_are_rejected(literal):
    data = body().replace(b'"cpu_pct":12.4', f'"cpu_pct":{literal}'.encode())
    assert literal.encode() in data
    assert code(check(data)) in (inbound.INVALID_MESSAGE, inbound.MALFORMED_JSON)


def test_exactly_1000_processes_is_fine():
    assert isinstance(check(body(processes=[reading(process_name=f"p{i}") for i in range(1000)])), Accepted)


def test_oversized_message_is_rejected_before_parsing():
    data = b" " * (1024 * 1024) + body()
    assert code(check(data)) == inbound.TOO_LARGE


def test_subject_body_mismatch():
    assert code(check(body(server_id=13))) == inbound.SERVER_MISMATCH


def test_subject_without_server_id():
    assert code(check(body(), subject="agent.samples.abc")) == inbound.BAD_SUBJECT


def test_more_than_five_minutes_ahead_is_rejected_but_five_is_fine():
    assert code(check(body(sampled_at="2026-05-24T18:46:01Z"))) == inbound.SAMPLED_IN_FUTURE
    assert isinstance(check(body(sampled_at="2026-05-24T18:46:00Z")), Accepted)
    assert isinstance(check(body(sampled_at="2026-05-23T18:41:00Z")), Accepted)  # old is fine


@pytest.mark.parametrize("headers", [None, {}, {"Authorization": "pwa_secret"}, {"Authorization": "Bearer "},
                                     {"Authorization": "Basic abc"}])
def test_missing_or_malformed_credentials(headers):
    assert code(check(body(), headers=headers)) == inbound.MISSING_CREDENTIALS


def test_reason_header_is_code_then_text_and_bounded():
    r = Rejected(inbound.INVALID_MESSAGE, "x" * 1000)
    assert r.header.startswith("invalid_message: ") and len(r.header) <= 400


def test_reasons_never_echo_the_key():
    result = check(body(server_id=13), headers={"Authorization": "Bearer pwa_topsecret"})
    assert "pwa_topsecret" not in result.header


# --- sample bounds (docs/ingest.md, "Sample bounds") ------------------------------------


@pytest.mark.parametrize(("field", "value", "accepted"), [
    ("cpu_pct", MAX_CPU_PCT, True),
    ("cpu_pct", 6400.0, True),  # a busy 64-core host
    ("cpu_pct", MAX_CPU_PCT * 1.001, False),
    ("cpu_pct", 1e300, False),
    ("memory_pct", MAX_MEMORY_PCT, True),
    ("memory_pct", MAX_MEMORY_PCT + 0.5, False),
    ("memory_pct", 1e300, False),
])
def test_percentages_beyond_their_bounds_are_invalid_with_the_field_named(field, value, accepted):
    result = check(body(processes=[reading(**{field: value})]))
    if accepted:
        assert isinstance(result, Accepted)
    else:
        assert code(result) == inbound.INVALID_MESSAGE
        assert f"processes.0.{field}" in result.text and "less than or equal to" in result.text


@pytest.mark.parametrize(("sampled_at", "expected"), [
    (NOW, None),
    (NOW + FIVE_MIN, None),
    (NOW + FIVE_MIN + timedelta(seconds=1), inbound.SAMPLED_IN_FUTURE),
    (NOW - timedelta(days=7), None),  # exactly the retention: kept
    (NOW - timedelta(days=7, seconds=1), inbound.SAMPLED_TOO_OLD),
    (datetime(1970, 1, 1, tzinfo=UTC), inbound.SAMPLED_TOO_OLD),
    (datetime(1, 1, 1, tzinfo=UTC), inbound.SAMPLED_TOO_OLD),
])
def test_sampled_at_window_with_a_seven_day_retention(sampled_at, expected):
    result = inbound.check_sampled_at(sampled_at, NOW, FIVE_MIN, retention_days=7)
    assert (result.code if result else None) == expected
    if expected == inbound.SAMPLED_TOO_OLD:
        assert "7-day retention" in result.text


def test_without_a_retention_only_the_future_is_checked():
    assert inbound.check_sampled_at(datetime(1, 1, 1, tzinfo=UTC), NOW, FIVE_MIN) is None
    # check_message runs before the server (and its plan) is known: a year-1 sample passes it.
    assert isinstance(check(body(sampled_at="0001-01-01T00:00:00Z")), Accepted)
